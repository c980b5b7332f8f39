"""Compile every OCPP schema into the schema cache, so a gateway starts with all of them ready."""

import time

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from stations import validation


class Command(BaseCommand):
    help = (
        "Compile every OCPP schema into OCPPGW_SCHEMA_CACHE (the image build runs it, so no "
        "container spends ~2.6 CPU-s doing it at start-up)."
    )

    def handle(self, *args, **options):
        if not settings.OCPPGW_SCHEMA_CACHE:
            raise CommandError("OCPPGW_SCHEMA_CACHE is empty: there is no cache to fill")
        started = time.monotonic()
        count = sum(validation.warm(version) for version in validation.VERSIONS)
        self.stdout.write(
            f"{count} OCPP schemas compiled into {settings.OCPPGW_SCHEMA_CACHE} "
            f"in {time.monotonic() - started:.1f} s"
        )
