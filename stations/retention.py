"""Message-log retention: delete old rows in bounded batches (never one huge DELETE)."""

import datetime

from stations.models import MessageLog

BATCH = 10000


def cutoff(days: int) -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=days)


def prune(before: datetime.datetime, dry_run: bool = False) -> int:
    """Delete rows created before `before`; returns how many were (or would be) deleted."""
    old = MessageLog.objects.filter(created__lt=before)
    if dry_run:
        return old.count()
    deleted = 0
    while True:
        ids = list(old.order_by("created").values_list("id", flat=True)[:BATCH])
        if not ids:
            return deleted
        deleted += MessageLog.objects.filter(id__in=ids).delete()[0]
