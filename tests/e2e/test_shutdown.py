"""SIGTERM: every held station is marked disconnected, the log is flushed, the process exits 0."""

import asyncio
import re
import signal
import time

import pytest
import websockets

from tests.conftest import MqttProbe, clear_retained, unique_cid
from tests.e2e.gateway import SUBPROTOCOL, GatewayProcess, Topics, boot_frame, migrated_sqlite

pytestmark = pytest.mark.e2e
STATIONS = 5


@pytest.fixture
def gateway(tmp_path):
    topics = Topics()
    node = f"e2e-shutdown-{topics.prefix}"
    gw = GatewayProcess(tmp_path, migrated_sqlite(tmp_path), topics, env={"OCPPGW_NODE": node})
    gw.node = node
    yield gw.start()
    gw.stop()
    clear_retained([f"ocpp/gw/nodes/{node}"])


async def test_sigterm_marks_stations_disconnected_flushes_the_log_and_exits_0(gateway):
    topics = gateway.topics
    cids = [unique_cid("SD") for _ in range(STATIONS)]
    probe = MqttProbe(
        [f"{topics.prefix}/#", f"ocpp/gw/nodes/{gateway.node}"],
    )
    sockets = []
    try:
        for cid in cids:
            ws = await websockets.connect(gateway.url(cid), subprotocols=[SUBPROTOCOL])
            await ws.send(boot_frame(f"boot-{cid}"))
            sockets.append(ws)
        # each station's last frame before the signal: a Heartbeat, published on MQTT
        for cid, ws in zip(cids, sockets, strict=True):
            await ws.send(f'[2,"last-{cid}","Heartbeat",{{}}]')
        for cid in cids:
            await asyncio.to_thread(probe.wait_for, f"{topics.prefix}/cp/{cid}/Heartbeat")

        signalled_at = time.time()
        gateway.proc.send_signal(signal.SIGTERM)
        codes = await asyncio.gather(*(_close_code(ws) for ws in sockets))
        code = await asyncio.to_thread(gateway.proc.wait, 10)
        assert code == 0, gateway.log()
        assert time.time() - signalled_at < 10
        assert codes == [1001] * STATIONS  # going away, sent by the gateway
        # a clean goodbye is no broker outage: said at INFO, nothing buffered
        log_text = gateway.log()
        assert re.search(r"INFO ocppgw\.bridge .*disconnected from broker .*\(stopping\)", log_text)
        assert "lost the broker" not in log_text

        # "offline" from the clean goodbye, written at shutdown (the Will's was written at start)
        node_topic = f"ocpp/gw/nodes/{gateway.node}"
        status = probe.wait_for(node_topic, lambda body: body["status"] == "offline")
        assert _epoch(status["at"]) >= signalled_at - 1

        # the retained presence of every station, as a backend subscribing now would see it; the
        # node's own status is cleared, so past processes do not pile up on the broker
        late = MqttProbe([topics.presence(cid) for cid in cids] + [node_topic])
        try:
            for cid in cids:
                event = late.wait_for(topics.presence(cid))
                assert event["status"] == "disconnected", event
                assert event["node"] == gateway.node
            await asyncio.sleep(0.3)
            assert late.snapshot(node_topic) == []
        finally:
            late.close()

        rows = gateway.rows(
            "SELECT cid, outcome FROM stations_messagelog WHERE unique_id LIKE 'last-%'"
        )
        assert sorted(rows) == sorted((cid, "published") for cid in cids)
        gone = gateway.rows(
            "SELECT cid FROM stations_messagelog WHERE direction = 'gw' AND outcome = 'disconnected'"
        )
        assert sorted(c for (c,) in gone) == sorted(cids)
        connected = gateway.rows("SELECT count(*) FROM stations_station WHERE connection_id != ''")
        assert connected == [(0,)]
    finally:
        probe.close()
        for ws in sockets:
            await ws.close()
        clear_retained([topics.presence(cid) for cid in cids])


async def _close_code(ws) -> int | None:
    try:
        async with asyncio.timeout(10):
            async for _ in ws:
                pass
    except websockets.ConnectionClosed:
        pass
    return ws.close_code


def _epoch(iso: str) -> float:
    import datetime

    return datetime.datetime.fromisoformat(iso).timestamp()


async def test_a_drain_spreads_the_closes_over_its_seconds(tmp_path):
    topics = Topics()
    gw = GatewayProcess(tmp_path, migrated_sqlite(tmp_path), topics, env={"OCPPGW_DRAIN_S": "3"})
    gw.start()
    sockets = []
    try:
        for n in range(6):
            ws = await websockets.connect(gw.url(unique_cid("DR")), subprotocols=[SUBPROTOCOL])
            await ws.send(boot_frame(f"boot-{n}"))
            sockets.append(ws)
        await asyncio.sleep(0.5)  # every station registered
        signalled_at = time.monotonic()
        gw.proc.send_signal(signal.SIGTERM)

        async def closed_after(ws) -> tuple[float, int | None]:
            code = await _close_code(ws)
            return time.monotonic() - signalled_at, code

        closes = await asyncio.gather(*(closed_after(ws) for ws in sockets))
        assert await asyncio.to_thread(gw.proc.wait, 15) == 0, gw.log()
        assert [code for _, code in closes] == [1001] * 6
        times = sorted(t for t, _ in closes)
        # one every 0.5 s: the first at once, the last after ~2.5 s, not all together
        assert times[0] < 1.0 and times[-1] > 2.0, times
        assert "draining 6 stations over 3s" in gw.log()
    finally:
        for ws in sockets:
            await ws.close()
        gw.stop()
