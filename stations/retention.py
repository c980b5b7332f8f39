"""Message-log retention: delete old rows in bounded batches (never one huge DELETE)."""

import datetime

from stations.models import MessageLog

BATCH = 10000


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def cutoff(days: int) -> datetime.datetime:
    # whole seconds: the cutoff prunelogs prints is exactly the one it applies
    return _now().replace(microsecond=0) - datetime.timedelta(days=days)


def iso(moment: datetime.datetime) -> str:
    """ISO 8601 in UTC with a Z, as operators compare it with log timestamps."""
    utc = moment.astimezone(datetime.UTC).isoformat(timespec="seconds")
    return utc.replace("+00:00", "Z")


def count(before: datetime.datetime) -> int:
    """How many rows `prune(before)` would delete."""
    return MessageLog.objects.filter(created__lt=before).count()


def prune(before: datetime.datetime) -> int:
    """Delete rows created before `before`; returns how many were deleted."""
    old = MessageLog.objects.filter(created__lt=before)
    deleted = 0
    while True:
        ids = list(old.order_by("created").values_list("id", flat=True)[:BATCH])
        if not ids:
            return deleted
        deleted += MessageLog.objects.filter(id__in=ids).delete()[0]
