"""Two gateway processes sharing Redis and the broker: the newest connection of a cid wins."""

import asyncio
import time

import pytest
import websockets

from tests.e2e.conftest import backend_topics, connected, open_socket

pytestmark = pytest.mark.e2e

REDIS_URL = "redis://127.0.0.1:6379/0"


async def test_same_cid_on_another_process_closes_the_older_socket(
    gateway_factory, pool, mqtt_probe
):
    first_gw, second_gw = gateway_factory({"REDIS_URL": REDIS_URL}, {"REDIS_URL": REDIS_URL})
    cid = pool.take()
    probe = mqtt_probe(backend_topics(cid))
    await asyncio.sleep(1.0)  # both processes listen on Redis (it reconnects every 2 s at worst)
    old = await open_socket(first_gw, cid)
    first = await connected(probe, cid)
    assert first["node"] == first_gw.node

    new = await open_socket(second_gw, cid)
    opened = time.monotonic()
    with pytest.raises(websockets.ConnectionClosed):
        await asyncio.wait_for(old.recv(), 1.5)
    assert time.monotonic() - opened < 1.0 + 0.5  # "within a second", with scheduling slack
    assert old.close_code == 1000

    # presence ends "connected" on the new node: the replaced socket never marks it offline
    await asyncio.sleep(1.0)
    events = [body for _, body in probe.snapshot(f"ocpp/presence/{cid}")]
    assert events[-1]["status"] == "connected"
    assert events[-1]["node"] == second_gw.node
    assert events[-1]["connection"] != first["connection"]
    late = mqtt_probe([f"ocpp/presence/{cid}"])
    retained = await late.arrival(f"ocpp/presence/{cid}")
    assert (retained["status"], retained["node"]) == ("connected", second_gw.node)

    # and the backend's commands reach the live socket on the second process
    probe.publish(
        f"ocpp/cs/{cid}",
        {"MessageTypeId": 2, "UniqueId": "c-1", "Action": "Reset", "Payload": {"type": "Soft"}},
    )
    assert await asyncio.wait_for(new.recv(), 5) == '[2,"c-1","Reset",{"type":"Soft"}]'
    await new.close()


async def test_replaced_socket_is_told_why(shared_gateway, pool, mqtt_probe):
    cid = pool.take()
    probe = mqtt_probe(backend_topics(cid))
    old = await open_socket(shared_gateway, cid)
    await connected(probe, cid)
    new = await open_socket(shared_gateway, cid)
    with pytest.raises(websockets.ConnectionClosed):
        await asyncio.wait_for(old.recv(), 2)
    await new.close()
    assert old.close_code == 1000
    assert "replaced" in old.close_reason
