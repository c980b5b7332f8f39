"""Message-log search shared by the portal and the API: filters, keyset pages, request/answer pairs.

Pages are keyset-paginated on (created, id), newest first: a page costs the same at row 50 and at
row 900,000, where OFFSET would read and discard everything before it.
"""

import datetime
from dataclasses import dataclass, field

from django.db.models import Q

from stations import identity
from stations.models import MessageLog, Station

PAGE_ROWS = 50
_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
# the type of the frame that answers a CALL, and the other way round
ANSWER_TYPES = (3, 4, 5)


@dataclass
class Filters:
    station: str = ""  # a cid, matched case-insensitively through its Station
    direction: str = ""
    message_type: int | None = None
    action: str = ""
    unique_id: str = ""
    since: datetime.datetime | None = None
    until: datetime.datetime | None = None
    outcomes: list[str] = field(default_factory=list)


@dataclass
class Page:
    rows: list
    next_cursor: str  # "" on the last page
    station: Station | None  # the station the filter resolved to, if any


def encode_cursor(row) -> str:
    """The position after `row`: "<microseconds since epoch>.<id>" (URL-safe, no state)."""
    delta = row.created - _EPOCH
    micros = (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds
    return f"{micros}.{row.id}"


def decode_cursor(text: str) -> tuple[datetime.datetime, int] | None:
    """(created, id) from encode_cursor's text; None when it is not one."""
    micros, _, row_id = (text or "").partition(".")
    if not (micros.isdigit() and row_id.isdigit()):
        return None
    return _EPOCH + datetime.timedelta(microseconds=int(micros)), int(row_id)


def resolve_station(cid: str) -> Station | None:
    """The station a typed cid means (identities are case-insensitive)."""
    if not cid:
        return None
    return Station.objects.filter(cid_key=identity.key(cid)).first()


def queryset(filters: Filters, station: Station | None = None):
    """Rows matching the filters, newest first; `station` is resolve_station(filters.station)."""
    qs = MessageLog.objects.all()
    if filters.station:
        # log rows carry the cid as created; a refused attempt may carry another case
        qs = qs.filter(cid=station.cid if station else filters.station)
    if filters.direction:
        qs = qs.filter(direction=filters.direction)
    if filters.message_type is not None:
        qs = qs.filter(message_type=filters.message_type)
    if filters.action:
        qs = qs.filter(action=filters.action)
    if filters.unique_id:
        qs = qs.filter(unique_id=filters.unique_id)
    if filters.since:
        qs = qs.filter(created__gte=filters.since)
    if filters.until:
        qs = qs.filter(created__lt=filters.until)
    if filters.outcomes:
        qs = qs.filter(outcome__in=filters.outcomes)
    return qs.order_by("-created", "-id")


def page(filters: Filters, cursor: str = "", rows: int = PAGE_ROWS) -> Page:
    """One page of matching rows, newest first, starting after `cursor` (two queries at most)."""
    station = resolve_station(filters.station)
    qs = queryset(filters, station)
    position = decode_cursor(cursor)
    if position:
        created, row_id = position
        # created__lte bounds the index range scan; the OR only breaks ties within one timestamp
        qs = qs.filter(created__lte=created).filter(
            Q(created__lt=created) | Q(created=created, id__lt=row_id)
        )
    found = list(qs[: rows + 1])
    more = len(found) > rows
    found = found[:rows]
    return Page(found, encode_cursor(found[-1]) if more else "", station)


def partners(rows) -> dict[int, MessageLog]:
    """For each row, the row on the other side of its request/answer pair (one query).

    A CALL (2) is paired with the CALLRESULT/CALLERROR (3/4/5) of the same station and UniqueId,
    and the answer with its CALL. A gateway error carrying a backend CALL's id counts as an answer.
    """
    wanted = {(r.cid, r.unique_id) for r in rows if r.unique_id and r.message_type}
    if not wanted:
        return {}
    candidates = MessageLog.objects.filter(
        unique_id__in={uid for _, uid in wanted}, cid__in={cid for cid, _ in wanted}
    ).order_by("created", "id")[:500]
    calls, answers = {}, {}
    for c in candidates:
        key = (c.cid, c.unique_id)
        if c.message_type == 2:
            calls.setdefault(key, c)
        elif c.message_type in ANSWER_TYPES:
            answers.setdefault(key, c)
    found = {}
    for r in rows:
        key = (r.cid, r.unique_id)
        other = answers.get(key) if r.message_type == 2 else calls.get(key)
        if other is not None and other.id != r.id:
            found[r.id] = other
    return found
