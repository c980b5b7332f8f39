"""Database outage: bridging goes on, the log buffers to its bound and counts drops, verified
stations still connect (stale-if-error), and everything recovers without a restart."""

import asyncio
import datetime
import json
import time

import pytest

from tests.conftest import until
from tests.reliability.clients import Station, basic, close_all, open_all, refused_status
from tests.reliability.conftest import make_stations, manage, metric

pytestmark = pytest.mark.e2e

LOG_QUEUE = 300
PASSWORD = "correct-horse-battery-01"


def responder(prefix: str):
    def respond(topic: str, payload: bytes):
        parts = topic.split("/")
        if len(parts) != 4 or not parts[2].startswith(prefix) or parts[3] != "Heartbeat":
            return None
        uid = json.loads(payload)["UniqueId"]
        body = {
            "MessageTypeId": 3,
            "UniqueId": uid,
            "Payload": {"currentTime": "2025-01-01T00:00:00Z"},
        }
        return f"ocpp/cs/{parts[2]}/Reply/Heartbeat", json.dumps(body)

    return respond


async def _sender(station: Station, sent: list, stop_at: float) -> None:
    k = 0
    while time.monotonic() < stop_at:
        uid = f"{station.cid}-{k}"
        if not await station.send([2, uid, "Heartbeat", {}]):
            return
        sent.append(uid)
        k += 1
        await asyncio.sleep(0.1)


def _utc() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


async def test_database_outage_keeps_bridging_buffers_log_and_recovers(
    private_postgres, gateway_factory, recorder_factory
):
    db = {"DATABASE_URL": private_postgres.url}
    manage(db, "migrate", "--noinput", "-v0")
    prefix = f"db{int(time.time()) % 100000}x"
    cids = [f"{prefix}{i}" for i in range(10)]
    late_cid = f"{prefix}late"  # exists, right password, never verified before the outage
    make_stations(db, [(c, PASSWORD, 1) for c in [*cids, late_cid]])
    gw = gateway_factory(
        {
            **db,
            "OCPPGW_LOG_QUEUE": str(LOG_QUEUE),
            "OCPPGW_LOG_FLUSH_S": "0.2",
            "OCPPGW_AUTH_CACHE_TTL_S": "1",  # expired during the outage: stale-if-error is used
            "OCPPGW_RATE_PER_S": "0",
            "OCPPGW_CALL_TIMEOUT_S": "5",
        }
    )
    pid = gw.proc.pid
    recorder = recorder_factory(1883, ("ocpp/cp/+/Heartbeat",), respond=responder(prefix))
    stations = [Station(gw.url(c), c, headers=basic(c, PASSWORD)) for c in cids]
    await open_all(stations)
    sent = {c: [] for c in cids}
    stop_at = time.monotonic() + 14
    senders = [asyncio.create_task(_sender(s, sent[s.cid], stop_at)) for s in stations[1:]]

    await asyncio.sleep(2)
    await asyncio.to_thread(private_postgres.stop, "fast")
    down_at = _utc()
    await asyncio.sleep(1.5)
    status, body = await asyncio.to_thread(gw.readyz)
    assert status == 503 and body["database"].startswith("unavailable"), body
    # a verified station reconnects while its cache entry is expired: stale-if-error lets it in
    await stations[0].close()
    stations[0] = await Station(gw.url(cids[0]), cids[0], headers=basic(cids[0], PASSWORD)).open()
    # a station never verified cannot be checked now: refused, not let in blindly
    assert await refused_status(gw.url(late_cid), basic(late_cid, PASSWORD)) == 403
    await asyncio.sleep(5)
    up_at = _utc()
    await asyncio.to_thread(private_postgres.start)
    deadline = time.monotonic() + 20
    while (await asyncio.to_thread(gw.readyz))[0] != 200:
        assert time.monotonic() < deadline, "readyz never recovered"
        await asyncio.sleep(0.2)
    await asyncio.gather(*senders)
    assert await refused_status(gw.url(late_cid), basic(late_cid, PASSWORD)) is None
    all_sent = [uid for c in cids for uid in sent[c]]

    def answered():
        return {uid for s in stations[1:] for uid, a in s.answers().items() if a[0][1][0] == 3}

    await until(lambda: answered() >= set(all_sent), 15, "every CALL answered")
    # the last log flush after the last answer: nothing queued, and no batch mid-write (the
    # written count stands still across two scrapes)
    written = []

    def flushed():
        written.append(metric(gw, "ocppgw_log_rows_written_total"))
        return metric(gw, "ocppgw_log_queued") == 0 and written[-2:] == [written[-1]] * 2

    await until(flushed, 10, "the message log flushed", step_s=0.5)

    # bridging never stopped: every CALL was published once and answered with its CALLRESULT
    published = [
        json.loads(p)["UniqueId"]
        for _, t, p, _ in recorder.snapshot()
        if t.split("/")[2].startswith(prefix)  # the shared broker carries others' traffic too
    ]
    assert sorted(published) == sorted(all_sent)
    assert answered() == set(all_sent)

    # the log: rows of the outage kept up to the bound, the rest dropped and counted
    code = (
        "from stations.models import MessageLog as M; import datetime, json\n"
        f"q = M.objects.filter(cid__startswith={prefix!r}, direction='in', outcome='published')\n"
        f"d = datetime.datetime.fromisoformat({down_at.isoformat()!r})\n"
        f"u = datetime.datetime.fromisoformat({up_at.isoformat()!r})\n"
        "print(json.dumps([q.count(), q.filter(created__gt=d, created__lt=u).count(),"
        " M.objects.filter(cid__startswith=%r).count(),"
        " list(q.order_by('-created').values_list('unique_id', flat=True)[:1])]))" % prefix
    )
    in_rows, outage_rows, all_rows, newest = json.loads(
        manage(db, "shell", "-c", code).split("\n")[-2]
    )
    dropped = metric(gw, "ocppgw_log_rows_dropped_total")
    figures = {
        "calls_sent": len(all_sent),
        "published": len(published),
        "answered": len(answered()),
        "log_rows_in": in_rows,
        "log_rows_in_during_outage": outage_rows,
        "log_rows_all": all_rows,
        "log_rows_dropped_metric": dropped,
    }
    print("database outage figures:", figures)
    assert 0 < outage_rows <= LOG_QUEUE  # buffered up to the bound, then written on recovery
    assert in_rows < len(all_sent)  # some were dropped: the bound held
    assert newest and newest[0] in {sent[c][-1] for c in cids if sent[c]}  # logging resumed
    log_text = gw.log()
    assert "message log write failed, will retry" in log_text
    if dropped is not None:  # /metrics exists: the drops are counted there
        assert dropped > 0 and all_rows + dropped >= 2 * len(all_sent)
    assert gw.proc.pid == pid and gw.proc.poll() is None  # recovered without a restart
    assert "Traceback" not in log_text, log_text[-3000:]
    await close_all(stations)
