"""A backend CALL published while its station is connected nowhere, on two real gateway processes
and the machine's Mosquitto, over MQTT 5 and 3.1.1: the station connecting right after gets it
exactly once; a station that never comes gets `offline` (docs/contract.md §2, issue #19)."""

import asyncio
import json
import time
import uuid

import pytest
import websockets

from stations.inbox import OFFLINE_GRACE_S
from tests.conftest import MqttProbe
from tests.e2e.gateway import SUBPROTOCOL, GatewayProcess, Topics, migrated_sqlite

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module", params=["5", "3.1.1"])
def deployment(request, tmp_path_factory):
    """Two gateway nodes, private topics and share group (no other gateway takes our CALLs)."""
    workdir = tmp_path_factory.mktemp(f"redelivery-{request.param}")
    topics = Topics()
    env = {
        "OCPPGW_MQTT_PROTOCOL": request.param,
        "OCPPGW_SHARE_GROUP": topics.prefix,
        "OCPPGW_CALL_TIMEOUT_S": "5",
        "REDIS_URL": "",
    }
    db = migrated_sqlite(workdir)
    nodes = [GatewayProcess(workdir, db, topics, env=env) for _ in range(2)]
    for node in nodes:
        node.launch(own_group=True)
    try:
        for node in nodes:
            node.wait_ready()
        probe = MqttProbe([f"{topics.prefix}/#"])
        yield nodes, topics, probe
        probe.close()
    finally:
        for node in nodes:
            node.stop()


def _reset(uid):
    return {"MessageTypeId": 2, "UniqueId": uid, "Action": "Reset", "Payload": {"type": "Soft"}}


async def _frames(ws, quiet_s):
    """Every frame until the station has heard nothing for quiet_s; CALLs answered Accepted."""
    got = []
    while True:
        try:
            frame = json.loads(await asyncio.wait_for(ws.recv(), quiet_s))
        except TimeoutError:
            return got
        got.append(frame)
        if frame[0] == 2:
            await ws.send(json.dumps([3, frame[1], {"status": "Accepted"}]))


async def test_a_station_connecting_right_after_a_call_gets_it_once(deployment):
    (_a, b), topics, probe = deployment
    p = topics.prefix
    # several stations: over MQTT 5 the process of the share group that sees the CALL is either
    for n in range(4):
        cid = f"RD{uuid.uuid4().hex[:6]}"
        uid = f"c{n}"
        started = time.monotonic()
        probe.publish(f"{p}/cs/{cid}/Reset", _reset(uid))
        ws = await websockets.connect(b.url(cid), subprotocols=[SUBPROTOCOL], open_timeout=10)
        presence = await probe.arrival(topics.presence(cid), lambda e: e["status"] == "connected")
        late_s = time.monotonic() - started
        got = await _frames(ws, 2.0)
        await ws.close()
        calls = [f for f in got if f[0] == 2]
        replies = [e for _, e in probe.snapshot(f"{p}/cp/Reply/{cid}") if e["UniqueId"] == uid]
        errors = [e for _, e in probe.snapshot(f"{p}/cp/Error/{cid}") if e["UniqueId"] == uid]
        figures = (n, round(late_s, 3), presence["node"], calls, replies, errors)
        assert len(replies) + len(errors) == 1, figures  # never silence, never two answers
        assert len(calls) <= 1, figures  # never two deliveries
        if late_s < OFFLINE_GRACE_S * 0.6:  # connected well within the grace: it must reach it
            assert calls == [[2, uid, "Reset", {"type": "Soft"}]] and replies, figures
        else:  # a loaded machine: connected near or after the grace, `offline` is the answer
            assert calls == [] or replies, figures


async def test_a_call_for_a_station_that_never_comes_is_answered_offline_once(deployment):
    _nodes, topics, probe = deployment
    p = topics.prefix
    cid = f"RN{uuid.uuid4().hex[:6]}"
    probe.publish(f"{p}/cs/{cid}/Reset", _reset("o1"))
    error = await probe.arrival(f"{p}/cp/Error/{cid}", timeout_s=5)
    assert (error["UniqueId"], error["ErrorDetails"]["reason"]) == ("o1", "offline")
    await asyncio.sleep(1.5)
    assert len(probe.snapshot(f"{p}/cp/Error/{cid}")) == 1
    assert not [e for _, e in probe.snapshot(f"{p}/cs/{cid}/Reset") if "Redelivered" in e]
