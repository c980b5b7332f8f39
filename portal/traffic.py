"""Traffic at a glance: frames per minute (in, out, errors), counted by the database."""

import datetime

from django.db.models import Count, Q
from django.db.models.functions import TruncMinute

from stations.models import MessageLog

WINDOW_MIN = 60
TOP_STATIONS = 10
# a frame counts as an error when it is one (CALLERROR, CALLRESULTERROR) or was not delivered
_ERRORS = Q(message_type__in=(4, 5)) | Q(outcome__in=("rejected", "dropped"))


def _window(now: datetime.datetime) -> tuple[datetime.datetime, datetime.datetime]:
    end = now.replace(second=0, microsecond=0) + datetime.timedelta(minutes=1)
    return end - datetime.timedelta(minutes=WINDOW_MIN), end


def per_minute(cid: str = "", now: datetime.datetime | None = None) -> dict:
    """The last hour as aligned series: {"t": [unix s], "in": [...], "out": [...], "errors": [...]}.

    One GROUP BY query; minutes without traffic are filled with zeros here, not in SQL.
    """
    start, end = _window(now or datetime.datetime.now(datetime.UTC))
    qs = MessageLog.objects.filter(created__gte=start, created__lt=end)
    if cid:
        qs = qs.filter(cid=cid)
    counted = (
        qs.annotate(minute=TruncMinute("created"))
        .values("minute")
        .annotate(
            n_in=Count("id", filter=Q(direction=MessageLog.IN)),
            n_out=Count("id", filter=Q(direction=MessageLog.OUT)),
            n_err=Count("id", filter=_ERRORS),
        )
        .order_by()
    )
    by_minute = {int(c["minute"].timestamp()): c for c in counted}
    series = {"t": [], "in": [], "out": [], "errors": []}
    for i in range(WINDOW_MIN):
        t = int((start + datetime.timedelta(minutes=i)).timestamp())
        c = by_minute.get(t, {})
        series["t"].append(t)
        series["in"].append(c.get("n_in", 0))
        series["out"].append(c.get("n_out", 0))
        series["errors"].append(c.get("n_err", 0))
    return series


def busiest(now: datetime.datetime | None = None) -> list[dict]:
    """The stations with the most frames in the last hour (one query)."""
    start, _ = _window(now or datetime.datetime.now(datetime.UTC))
    return list(
        MessageLog.objects.filter(created__gte=start, direction__in=(MessageLog.IN, MessageLog.OUT))
        .values("cid")
        .annotate(frames=Count("id"), errors=Count("id", filter=_ERRORS))
        .order_by("-frames", "cid")[:TOP_STATIONS]
    )
