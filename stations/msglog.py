"""The batched database writer: message-log rows, station presence, facts and traffic counters.

The frame path only appends to bounded in-memory queues; one task flushes them with one
`executemany` per batch (per-frame `create()` caps a gateway at ~170 frames/s, docs/performance.md).
Rows are tuples and go in as plain SQL: building a model instance per row and compiling
`bulk_create`, and one ORM `update()` per station for the counters, cost more CPU than the rest of
the frame path (1,000 stations = 1,000 UPDATEs a second). If the database is away, rows wait up
to the bound; past it they are dropped and counted.
"""

import asyncio
import collections
import datetime
import itertools
import logging
import time

from channels.db import database_sync_to_async
from django.db import connection, transaction

from stations import facts

log = logging.getLogger("ocppgw.msglog")

BATCH_ROWS = 500
# portal counters and last-frame times lag by up to this; each write touches every active station
COUNTERS_EVERY_S = 5.0
# a queued row: MessageLog's fields in this order (see _insert_sql)
COLUMNS = (
    "created", "cid", "station_id", "direction", "message_type", "unique_id", "action", "size",
    "payload", "outcome", "reason", "topic",
)  # fmt: skip


def now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _no_nul(text: str) -> str:
    # PostgreSQL text cannot hold NUL: one such row would fail its batch on every retry
    return text.replace("\x00", "\ufffd") if "\x00" in text else text


class Writer:
    def __init__(
        self, *, max_rows: int, flush_s: float, payload_bytes: int, enabled: bool = True, run=None
    ):
        # `run(fn, *args)` awaits fn on a database thread: the gateway's DbThread, which keeps
        # its connection; by default a connection per write
        self._db_run = run or _run_closing
        self.max_rows = max_rows
        self.flush_s = flush_s
        self.payload_bytes = payload_bytes
        self.enabled = enabled
        self.rows: collections.deque[tuple] = collections.deque()  # in COLUMNS order
        self.presence: collections.deque[tuple] = collections.deque()
        self.counters: dict[int, list] = {}  # station id -> [frames in, frames out, last frame]
        self.lenient_counts: collections.Counter[int] = collections.Counter()
        # station facts (stations/facts.py), the newest per station until the next flush
        self.boots: dict[int, tuple[dict, datetime.datetime]] = {}
        self.heartbeats: dict[int, datetime.datetime] = {}
        self.connector_states: dict[int, dict[str, dict]] = {}
        self.dropped = 0
        self.written = 0
        self.failures = 0
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._stopping = False
        self._counters_at = 0.0
        self.on_flushed = None  # (rows, presence) after each committed batch (stations/live.py)

    # --- called on the frame path (never waits) ------------------------------------------------
    def add(
        self,
        *,
        cid,
        station_id,
        direction,
        message_type=None,
        unique_id="",
        action="",
        raw: str | bytes = "",
        outcome,
        reason="",
        topic="",
    ) -> None:
        """Queue one log row; payload is truncated here, not in the database."""
        if not self.enabled:
            return
        if len(self.rows) >= self.max_rows:
            self.dropped += 1
            return
        if isinstance(raw, bytes):
            size, text = len(raw), raw[: self.payload_bytes].decode("utf-8", "replace")
        else:
            size, text = len(raw), raw[: self.payload_bytes]
        self.rows.append(
            (
                now(),
                cid,
                station_id,
                direction,
                message_type,
                _no_nul((unique_id or "")[:36]),
                _no_nul((action or "")[:64]),
                size,
                _no_nul(text),
                outcome,
                _no_nul(reason[:255]),
                topic[:255],
            )
        )
        if len(self.rows) >= BATCH_ROWS:
            self._wake.set()

    def count(self, station_id: int | None, inbound: bool) -> None:
        """Count a frame for the station's portal counters and last-frame time."""
        if station_id is None:
            return
        entry = self.counters.get(station_id)
        if entry is None:
            entry = self.counters[station_id] = [0, 0, None]
        entry[0 if inbound else 1] += 1
        entry[2] = now()

    def lenient(self, station_id: int | None) -> None:
        """Count a frame accepted only because the station's validation policy is lenient."""
        if station_id is not None:
            self.lenient_counts[station_id] += 1

    def facts(self, station_id: int | None, version: str, action: str, payload) -> None:
        """Note what an accepted Boot/Status/Heartbeat CALL says of its station."""
        if station_id is None or not isinstance(payload, dict):
            return
        at = now()
        if action == "Heartbeat":
            self.heartbeats[station_id] = at
        elif action == "BootNotification":
            self.boots[station_id] = (facts.boot(version, payload), at)
        elif action == "StatusNotification":
            state = facts.connector(version, payload)
            if state is not None:
                key, fields = state
                states = self.connector_states.setdefault(station_id, {})
                states[key] = {**fields, "at": at.strftime("%Y-%m-%dT%H:%M:%SZ")}

    def _fact_ops(self, heartbeats: bool) -> list[tuple]:
        ops = [("boot", sid, fields, at) for sid, (fields, at) in self.boots.items()]
        ops += [("connectors", sid, states) for sid, states in self.connector_states.items()]
        self.boots, self.connector_states = {}, {}
        if heartbeats:
            ops += [("heartbeat", sid, at) for sid, at in self.heartbeats.items()]
            self.heartbeats = {}
        return ops

    def connected(self, station_id, connection, node, version) -> None:
        self.presence.append(("connected", station_id, connection, node, version, now()))
        self._wake.set()

    def disconnected(self, station_id, connection) -> None:
        self.presence.append(("disconnected", station_id, connection, now()))
        self._wake.set()

    def refused(self, cid_key, reason) -> None:
        self.presence.append(("refused", cid_key, reason[:200], now()))

    # --- the flushing task ---------------------------------------------------------------------
    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while not self._stopping:
            try:
                await asyncio.wait_for(self._wake.wait(), self.flush_s)
            except TimeoutError:
                pass
            self._wake.clear()
            await self.flush(all_counters=False)

    async def flush(self, all_counters: bool = True) -> None:
        """Write everything queued so far; counters too, or with `all_counters=False` if due.

        On a database error everything is kept for the next try."""
        if all_counters:
            self._counters_at = 0.0
        while self.rows or self.presence or self._facts_waiting() or self._counters_due():
            rows = [self.rows.popleft() for _ in range(min(BATCH_ROWS, len(self.rows)))]
            presence = list(self.presence)
            self.presence.clear()
            presence.extend(("lenient", sid, n) for sid, n in self.lenient_counts.items())
            self.lenient_counts.clear()
            counters = {}
            due = self._counters_due()
            if due:
                counters, self.counters = self.counters, {}
                self._counters_at = time.monotonic()
            # last Heartbeat times go with the counters (every COUNTERS_EVERY_S): a fleet's
            # Heartbeats written each flush were an UPDATE per frame, the writer's largest cost
            # at T2's load (docs/performance.md)
            presence.extend(self._fact_ops(heartbeats=due))
            try:
                await self._db_run(_write, rows, presence, counters)
                self.written += len(rows)
                if self.on_flushed is not None:
                    self.on_flushed(rows, presence)
            except Exception as exc:
                self.failures += 1
                log.warning("message log write failed, will retry: %s", exc)
                self.rows.extendleft(reversed(rows))
                self.presence.extendleft(reversed(presence))
                for sid, (n_in, n_out, last) in counters.items():
                    entry = self.counters.setdefault(sid, [0, 0, last])
                    entry[0] += n_in
                    entry[1] += n_out
                while len(self.rows) > self.max_rows:
                    self.rows.pop()
                    self.dropped += 1
                return
            if not self.rows:
                return

    def _facts_waiting(self) -> bool:
        return bool(self.lenient_counts or self.boots or self.connector_states)

    def _counters_due(self) -> bool:
        return (
            bool(self.counters or self.heartbeats)
            and time.monotonic() - self._counters_at >= COUNTERS_EVERY_S
        )

    async def stop(self) -> None:
        """Let a write in progress finish, then write what is left.

        Cancelling the task mid-write lost its batch: the thread's transaction was cut by the
        process exit, and the cancelled await never put the rows back."""
        task, self._task = self._task, None
        if task:
            self._stopping = True
            self._wake.set()
            await task
        await self.flush()


async def _run_closing(fn, *args):
    return await database_sync_to_async(fn)(*args)


def _write(rows: list[tuple], presence: list[tuple], counters: dict) -> None:
    with transaction.atomic(), connection.cursor() as cursor:
        if presence:
            _presence(cursor, presence)
        if counters:
            _add_counters(cursor, counters)
        if rows:
            _insert(cursor, rows)


def _presence(cursor, ops: list[tuple]) -> None:
    """Apply presence changes in order, each run of one kind as one executemany.

    An ORM update() per station cost ~0.3 ms of CPU: 5,000 stations connecting kept the writer
    busy for seconds after the storm."""
    from stations.models import Station

    q, meta = connection.ops.quote_name, Station._meta
    table = q(meta.db_table)
    col = {f.name: q(f.column) for f in meta.concrete_fields}
    stamp = connection.ops.adapt_datetimefield_value
    sql = {
        "connected": f"UPDATE {table} SET {col['connection_id']} = %s, {col['node']} = %s, "
        f"{col['ocpp_version']} = %s, {col['connected_at']} = %s WHERE {col['id']} = %s",
        # only the current connection may mark the station offline (its node is then none)
        "disconnected": f"UPDATE {table} SET {col['connection_id']} = '', {col['node']} = '', "
        f"{col['disconnected_at']} = %s WHERE {col['id']} = %s AND {col['connection_id']} = %s",
        "refused": f"UPDATE {table} SET {col['last_refused_at']} = %s, "
        f"{col['last_refused_reason']} = %s WHERE {col['cid_key']} = %s",
        "lenient": f"UPDATE {table} SET {col['frames_lenient']} = {col['frames_lenient']} + %s "
        f"WHERE {col['id']} = %s",
        "boot": f"UPDATE {table} SET {col['vendor']} = %s, {col['model']} = %s, "
        f"{col['serial_number']} = %s, {col['firmware_version']} = %s, {col['last_boot_at']} = %s "
        f"WHERE {col['id']} = %s",
        "heartbeat": f"UPDATE {table} SET {col['last_heartbeat_at']} = %s WHERE {col['id']} = %s",
    }
    params = {
        "connected": lambda _, sid, conn, node, version, at: (conn, node, version, stamp(at), sid),
        "disconnected": lambda _, sid, conn, at: (stamp(at), sid, conn),
        "refused": lambda _, cid_key, reason, at: (stamp(at), reason, cid_key),
        "lenient": lambda _, sid, n: (n, sid),
        "boot": lambda _, sid, f, at: (
            f["vendor"],
            f["model"],
            f["serial_number"],
            f["firmware_version"],
            stamp(at),
            sid,
        ),
        "heartbeat": lambda _, sid, at: (stamp(at), sid),
    }
    for kind, run in itertools.groupby(ops, key=lambda op: op[0]):
        if kind == "connectors":
            _merge_connectors([op[1:] for op in run])
        elif kind == "heartbeat" and connection.vendor == "postgresql":
            # one statement for the fleet, as _add_counters: executemany is a round of Python
            # and psycopg work per station
            sids, ats = zip(*((op[1], op[2].timestamp()) for op in run), strict=True)
            cursor.execute(
                f"UPDATE {table} AS s SET {col['last_heartbeat_at']} = to_timestamp(v.t) "
                "FROM unnest(%s::bigint[], %s::float8[]) AS v(id, t) "
                f"WHERE s.{col['id']} = v.id",
                [_array(sids), _array(ats)],
            )
        else:
            cursor.executemany(sql[kind], [params[kind](*op) for op in run])


def _merge_connectors(updates: list[tuple[int, dict]]) -> None:
    """Apply connector states to the stored ones (read, merge, write: rare next to frames)."""
    from stations.models import Station

    by_id = dict(updates)
    stored = dict(Station.objects.filter(id__in=by_id).values_list("id", "connectors"))
    for sid, states in by_id.items():
        if sid in stored:
            merged = facts.merge(stored[sid], states)
            Station.objects.filter(id=sid).update(connectors=merged)


def _add_counters(cursor, counters: dict) -> None:
    from stations.models import Station

    q, meta = connection.ops.quote_name, Station._meta
    fin, fout, last = (
        q(meta.get_field(f).column) for f in ("frames_in", "frames_out", "last_frame_at")
    )
    table, pk = q(meta.db_table), q(meta.pk.column)
    if connection.vendor == "postgresql":
        # one statement for every station, its arrays sent as text: an UPDATE per station, or
        # psycopg adapting list elements one by one, cost ~10 ms of CPU per 1,000 stations
        ids, ins, outs, lasts = zip(
            *((sid, *entry) for sid, entry in counters.items()), strict=True
        )
        cursor.execute(
            f"UPDATE {table} AS s SET {fin} = s.{fin} + v.i, {fout} = s.{fout} + v.o, "
            f"{last} = to_timestamp(v.t) "
            "FROM unnest(%s::bigint[], %s::int[], %s::int[], %s::float8[]) AS v(id, i, o, t) "
            f"WHERE s.{pk} = v.id",
            [_array(ids), _array(ins), _array(outs), _array(t.timestamp() for t in lasts)],
        )
    else:
        stamp = connection.ops.adapt_datetimefield_value
        cursor.executemany(
            f"UPDATE {table} SET {fin} = {fin} + %s, {fout} = {fout} + %s, {last} = %s "
            f"WHERE {pk} = %s",
            [(i, o, stamp(t), sid) for sid, (i, o, t) in counters.items()],
        )


def _array(numbers) -> str:
    return "{" + ",".join(map(repr, numbers)) + "}"


def _insert(cursor, rows: list[tuple]) -> None:
    from stations.models import MessageLog

    q, meta = connection.ops.quote_name, MessageLog._meta
    table = q(meta.db_table)
    names = ", ".join(q(meta.get_field(c).column) for c in COLUMNS)
    if connection.vendor == "postgresql":
        # COPY: psycopg encodes rows in C; an INSERT per row costs several times more CPU
        with cursor.cursor.copy(f"COPY {table} ({names}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
    else:
        stamp = connection.ops.adapt_datetimefield_value
        marks = ", ".join(["%s"] * len(COLUMNS))
        cursor.executemany(
            f"INSERT INTO {table} ({names}) VALUES ({marks})", [(stamp(r[0]), *r[1:]) for r in rows]
        )
