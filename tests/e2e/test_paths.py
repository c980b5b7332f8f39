"""Station paths through a real gateway: trailing and repeated slashes, foreign WebSocket paths."""

import pytest
import websockets
from websockets.asyncio.client import connect

from tests.conftest import PASSWORD, basic, wait_until
from tests.e2e.conftest import backend_topics, connected

pytestmark = pytest.mark.e2e


async def _open(gw, path: str, cid: str):
    return await connect(
        f"ws://127.0.0.1:{gw.port}{path}",
        subprotocols=["ocpp1.6"],
        additional_headers={"Authorization": basic(cid, PASSWORD)},
        open_timeout=10,
        ping_interval=None,
    )


@pytest.mark.parametrize("shape", ["/ocpp/{cid}/", "/ocpp//{cid}"])
async def test_trailing_and_repeated_slashes_reach_the_station(
    shared_gateway, pool, mqtt_probe, shape
):
    cid = pool.take()
    probe = mqtt_probe(backend_topics(cid))
    ws = await _open(shared_gateway, shape.format(cid=cid), cid)
    await connected(probe, cid)
    await ws.send('[2, "p-1", "Heartbeat", {}]')
    envelope = await probe.arrival(f"ocpp/cp/{cid}/Heartbeat")
    assert envelope["UniqueId"] == "p-1"
    await ws.close()


async def test_a_refused_path_is_logged_with_the_rule_that_refused_it(shared_gateway, pool):
    cid = pool.take()
    with pytest.raises(websockets.InvalidStatus) as refused:
        await _open(shared_gateway, f"/ocpp/{cid}/extra", cid)
    assert refused.value.response.status_code == 403
    wait_until(
        lambda: f"/ocpp/{cid}/extra': rule 'one segment'" in shared_gateway.log(),
        5,
        "the refusal naming its rule",
    )


async def test_a_websocket_outside_ocpp_gets_a_refusal_and_one_log_line(shared_gateway, pool):
    cid = pool.take()
    path = f"/steve/websocket/CentralSystemService/{cid}"
    with pytest.raises(websockets.InvalidStatus) as refused:
        await _open(shared_gateway, path, cid)
    assert refused.value.response.status_code == 403  # never 500
    wait_until(lambda: path in shared_gateway.log(), 5, "the refusal's log line")
    lines = [line for line in shared_gateway.log().splitlines() if path in line]
    assert len(lines) == 1 and "refused WebSocket" in lines[0]
    assert "Traceback" not in shared_gateway.log()
