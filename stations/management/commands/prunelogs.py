"""Delete message-log rows older than the retention (also runs hourly inside the gateway)."""

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from stations import retention


class Command(BaseCommand):
    help = "Prune the message log to OCPPGW_LOG_RETENTION_DAYS (prints what goes before it goes)."

    def add_arguments(self, parser):
        parser.add_argument(
            "--days",
            type=int,
            default=settings.OCPPGW_LOG_RETENTION_DAYS,
            help="keep this many days (at least 1; default OCPPGW_LOG_RETENTION_DAYS)",
        )
        parser.add_argument(
            "--dry-run", action="store_true", help="print the count, delete nothing"
        )

    def handle(self, *args, days, dry_run, **options):
        # 0 or a negative number puts the cutoff at or after now: the whole log would go
        if days < 1:
            raise CommandError(f"--days must be at least 1, got {days}")
        before = retention.cutoff(days)
        count = retention.count(before)
        what = (
            f"{count} message-log rows created before {retention.iso(before)} "
            f"(older than {days} days)"
        )
        if dry_run:
            self.stdout.write(f"would delete {what}; dry run, nothing deleted")
            return
        self.stdout.write(f"deleting {what}")
        self.stdout.flush()
        deleted = retention.prune(before)
        self.stdout.write(f"deleted {deleted} message-log rows")
