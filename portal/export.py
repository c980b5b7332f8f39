"""Message-log export: the current filter as CSV or NDJSON, streamed in keyset chunks.

An async iterator: Django's ASGI handler would first read a sync iterator into a list (a million
rows in memory); here each chunk is one indexed query on a database thread, written as it comes.
"""

import csv
import io

import orjson
from channels.db import database_sync_to_async
from django.db.models import Q

from portal import msgsearch

FIELDS = (
    "id", "created", "cid", "direction", "message_type", "unique_id", "action", "size",
    "outcome", "reason", "topic", "payload",
)  # fmt: skip
CHUNK_ROWS = 2000
FORMATS = {"csv": "text/csv; charset=utf-8", "ndjson": "application/x-ndjson"}


def _chunk(filters, station, after):
    qs = msgsearch.queryset(filters, station)
    if after:
        created, row_id = after
        qs = qs.filter(created__lte=created).filter(
            Q(created__lt=created) | Q(created=created, id__lt=row_id)
        )
    return list(qs.values_list(*FIELDS)[:CHUNK_ROWS])


async def rows(filters):
    """Every matching row as a tuple in FIELDS order, newest first, CHUNK_ROWS per query."""
    station = await database_sync_to_async(msgsearch.resolve_station)(filters.station)
    after = None
    while True:
        chunk = await database_sync_to_async(_chunk)(filters, station, after)
        for row in chunk:
            yield row
        if len(chunk) < CHUNK_ROWS:
            return
        after = (chunk[-1][1], chunk[-1][0])


def _iso(value) -> str:
    return value.isoformat().replace("+00:00", "Z")


async def as_csv(filters):
    """The header line, then one CSV line per row (times ISO 8601 UTC)."""
    buffer = io.StringIO()
    out = csv.writer(buffer)
    out.writerow(FIELDS)
    async for row in rows(filters):
        out.writerow((row[0], _iso(row[1]), *row[2:]))
        if buffer.tell() > 64 * 1024:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()


async def as_ndjson(filters):
    """One JSON object per line; `payload` is the frame text as the station or backend sent it."""
    lines = []
    async for row in rows(filters):
        record = dict(zip(FIELDS, row, strict=True))
        record["created"] = _iso(record["created"])
        lines.append(orjson.dumps(record))
        if len(lines) >= 500:
            yield b"\n".join(lines) + b"\n"
            lines = []
    if lines:
        yield b"\n".join(lines) + b"\n"
