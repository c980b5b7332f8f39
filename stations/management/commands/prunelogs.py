"""Delete message-log rows older than the retention (also runs hourly inside the gateway)."""

from django.conf import settings
from django.core.management.base import BaseCommand

from stations import retention


class Command(BaseCommand):
    help = "Prune the message log to OCPPGW_LOG_RETENTION_DAYS."

    def add_arguments(self, parser):
        parser.add_argument("--days", type=int, default=settings.OCPPGW_LOG_RETENTION_DAYS)
        parser.add_argument("--dry-run", action="store_true", help="count, delete nothing")

    def handle(self, *args, days, dry_run, **options):
        count = retention.prune(retention.cutoff(days), dry_run=dry_run)
        verb = "would delete" if dry_run else "deleted"
        self.stdout.write(f"{verb} {count} message-log rows older than {days} days")
