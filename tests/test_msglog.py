"""The batched writer: bounded queue, truncation, one bulk write per batch, presence, counters."""

import datetime

import pytest
from channels.db import database_sync_to_async

from stations.models import MessageLog, Station
from stations.msglog import BATCH_ROWS, COLUMNS, Writer
from tests.conftest import new_station


def writer(**overrides) -> Writer:
    options = dict(max_rows=1000, flush_s=60, payload_bytes=16, enabled=True)
    options.update(overrides)
    return Writer(**options)


def row(w: Writer, **fields):
    values = dict(cid="CP1", station_id=None, direction="in", outcome="published")
    values.update(fields)
    w.add(**values)
    return dict(zip(COLUMNS, w.rows[-1], strict=True))


def test_payload_is_truncated_and_size_is_the_full_length():
    w = writer(payload_bytes=8)
    assert row(w, raw="0123456789abcdef")["payload"] == "01234567"
    assert row(w, raw="0123456789abcdef")["size"] == 16
    assert row(w, raw=b"\xffbytes-and-more")["payload"] == "\ufffdbytes-a"


def test_fields_are_cut_to_their_columns():
    w = writer()
    added = row(w, unique_id="u" * 50, action="A" * 80, reason="r" * 300, topic="t" * 300)
    assert (len(added["unique_id"]), len(added["action"])) == (36, 64)
    assert (len(added["reason"]), len(added["topic"])) == (255, 255)
    assert row(w, unique_id=None, action=None)["unique_id"] == ""


def test_queue_is_bounded_and_drops_are_counted():
    w = writer(max_rows=3)
    for _ in range(5):
        row(w)
    assert len(w.rows) == 3 and w.dropped == 2


def test_disabled_log_keeps_nothing():
    w = writer(enabled=False)
    row_count = len(w.rows)
    w.add(cid="CP1", station_id=None, direction="in", outcome="published")
    assert len(w.rows) == row_count == 0


def test_counters_add_up_per_station():
    w = writer()
    for inbound in (True, True, False):
        w.count(7, inbound=inbound)
    w.count(None, inbound=True)  # a refused socket has no station: not counted
    assert w.counters[7][:2] == [2, 1] and w.counters[7][2] is not None
    assert list(w.counters) == [7]


@pytest.mark.django_db(transaction=True)
async def test_flush_writes_rows_presence_and_counters():
    station = await database_sync_to_async(new_station)()
    w = writer(payload_bytes=4096)
    for n in range(BATCH_ROWS + 3):  # more than one batch
        row(w, cid=station.cid, station_id=station.id, unique_id=str(n), raw=f'[2,"{n}"]')
    w.count(station.id, inbound=True)
    w.count(station.id, inbound=False)
    w.connected(station.id, "conn-1", "node-a", "2.0.1")
    w.refused(station.cid_key, "wrong password")
    w.lenient(station.id)
    w.lenient(station.id)
    await w.flush()
    assert not w.rows and w.written == BATCH_ROWS + 3

    def read():
        return (
            MessageLog.objects.filter(cid=station.cid).count(),
            Station.objects.values(
                "connection_id", "node", "ocpp_version", "frames_in", "frames_out",
                "last_refused_reason", "connected_at", "frames_lenient",
            ).get(id=station.id),
        )  # fmt: skip

    count, fields = await database_sync_to_async(read)()
    assert count == BATCH_ROWS + 3
    assert (fields["connection_id"], fields["node"], fields["ocpp_version"]) == ("conn-1", "node-a", "2.0.1")  # fmt: skip
    assert (fields["frames_in"], fields["frames_out"]) == (1, 1)
    assert fields["last_refused_reason"] == "wrong password"
    assert fields["connected_at"] is not None
    assert fields["frames_lenient"] == 2 and not w.lenient_counts


@pytest.mark.django_db(transaction=True)
async def test_only_the_current_connection_marks_a_station_disconnected():
    station = await database_sync_to_async(new_station)()
    w = writer()
    w.connected(station.id, "old", "n", "1.6")
    w.connected(station.id, "new", "n", "1.6")  # the station reconnected
    w.disconnected(station.id, "old")  # the replaced socket goes away late
    await w.flush()
    current = await database_sync_to_async(
        lambda: Station.objects.values_list("connection_id", flat=True).get(id=station.id)
    )()
    assert current == "new"
    w.disconnected(station.id, "new")
    await w.flush()
    fields = await database_sync_to_async(
        lambda: Station.objects.values("connection_id", "disconnected_at").get(id=station.id)
    )()
    assert fields["connection_id"] == ""
    assert isinstance(fields["disconnected_at"], datetime.datetime)


@pytest.mark.django_db(transaction=True)
async def test_a_failed_write_keeps_the_rows_for_the_next_flush():
    w = writer()
    row(w, message_type=object())  # the database refuses this row, and the batch
    row(w, unique_id="ok")
    await w.flush()
    assert w.failures == 1
    assert len(w.rows) == 2  # kept, in order, for the next try
    assert dict(zip(COLUMNS, w.rows[1], strict=True))["unique_id"] == "ok"
