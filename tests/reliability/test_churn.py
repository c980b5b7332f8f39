"""Connection churn leaves nothing behind: the same 1,000 stations connect, send, and close three
times and the gateway's memory stays where it was.

A closed connection's objects once formed reference cycles (consumer and session, the HTTP
channel and its upgraded request, autobahn's Deferreds) that only a full GC pass frees, and
rungateway runs those rarely: each round of 1,000 left ~25 MB behind."""

import asyncio

import pytest
import websockets

from tests.conftest import until

pytestmark = pytest.mark.e2e

STATIONS, ROUNDS = 1000, 3


async def _round(gw) -> None:
    sockets = []
    for start in range(0, STATIONS, 100):  # as stations reconnect after an outage: in waves
        batch = range(start, start + 100)
        sockets += await asyncio.gather(
            *(websockets.connect(gw.url(f"churn{i:04d}"), subprotocols=["ocpp1.6"]) for i in batch)
        )
    # a malformed CALL each (answered at once): every session does some work before it ends
    await asyncio.gather(*(ws.send('[2,"1","Heartbeat",{},"x"]') for ws in sockets))
    answers = await asyncio.gather(*(asyncio.wait_for(ws.recv(), 30) for ws in sockets))
    assert all(answer.startswith("[4,") for answer in answers)
    await asyncio.gather(*(ws.close() for ws in sockets))


async def test_stations_that_come_and_go_leave_the_gateway_memory_flat(gateway_factory, mosquitto):
    gw = gateway_factory({"MQTT_URL": mosquitto.url, "OCPPGW_AUTH": "none"})
    await _round(gw)  # first use: stations created, code paths warmed
    await asyncio.sleep(2)  # the message log's flush, Daphne's clean-up of closed connections
    await until(gw.warmed, 60, "every schema compiled (memory that stays, not churn)")
    before = await asyncio.to_thread(gw.rss)
    for _ in range(ROUNDS):
        await _round(gw)
    await asyncio.sleep(2)
    after = await asyncio.to_thread(gw.rss)
    grown_mb = (after - before) / 2**20
    print(f"churn: RSS {before / 2**20:.1f} -> {after / 2**20:.1f} MB over {ROUNDS} rounds")
    assert grown_mb < 20, grown_mb  # was ~25 MB a round
