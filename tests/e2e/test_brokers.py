"""The end-to-end flows on every broker an operator may cluster: Mosquitto, RabbitMQ's MQTT plugin
and NATS JetStream's MQTT, all over MQTT 3.1.1 (RabbitMQ 3.x and NATS speak no MQTT 5), with two
gateway nodes each: boot, heartbeat, a backend CALL round trip, presence, a duplicate connection,
and the `offline` answer for a station held nowhere, which must not depend on `$share`.

Mosquitto is the machine's. RabbitMQ's MQTT plugin is enabled on 127.0.0.1:1884 (its default
1883 is Mosquitto's) where RabbitMQ runs; a NATS server with JetStream and MQTT is started here.
"""

import asyncio
import contextlib
import json
import shutil
import subprocess
import time
import uuid

import pytest
import websockets

from tests.conftest import MqttProbe
from tests.e2e.gateway import (
    SUBPROTOCOL,
    GatewayProcess,
    Topics,
    free_port,
    migrated_sqlite,
    port_open,
)

pytestmark = pytest.mark.e2e
RABBIT_MQTT_PORT = 1884
_RABBIT_LISTENER = (
    "application:load(rabbitmq_mqtt), "
    f'application:set_env(rabbitmq_mqtt, tcp_listeners, [{{"127.0.0.1", {RABBIT_MQTT_PORT}}}]).'
)


def _wait_port(port: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if port_open(port):
            return True
        time.sleep(0.2)
    return False


@contextlib.contextmanager
def mosquitto(tmp_path):
    yield 1883


@contextlib.contextmanager
def rabbitmq(tmp_path):
    if not port_open(RABBIT_MQTT_PORT):
        if not shutil.which("rabbitmq-plugins") or not port_open(5672):
            pytest.skip("RabbitMQ is not running here (rabbitmq-server -detached starts it)")
        # the listener first: enabled with its default port, the plugin would collide with Mosquitto
        subprocess.run(["rabbitmqctl", "eval", _RABBIT_LISTENER], check=True, timeout=60)
        subprocess.run(["rabbitmq-plugins", "enable", "rabbitmq_mqtt"], check=True, timeout=120)
        assert _wait_port(RABBIT_MQTT_PORT, 30), "RabbitMQ's MQTT listener did not open"
    yield RABBIT_MQTT_PORT


@contextlib.contextmanager
def nats(tmp_path):
    binary = shutil.which("nats-server") or "/usr/sbin/nats-server"
    if not shutil.which(binary):
        pytest.skip("nats-server is not installed (Debian package nats-server)")
    port, mqtt_port = free_port(), free_port()
    conf = tmp_path / "nats.conf"
    conf.write_text(
        f"listen: 127.0.0.1:{port}\nserver_name: ocppgw-e2e\n"
        f'jetstream {{ store_dir: "{tmp_path / "js"}" }}\n'
        f"mqtt {{ listen: 127.0.0.1:{mqtt_port} }}\n"
    )
    with open(tmp_path / "nats.log", "wb") as log:
        proc = subprocess.Popen([binary, "-c", str(conf)], stdout=log, stderr=subprocess.STDOUT)
    try:
        assert _wait_port(mqtt_port, 30), (tmp_path / "nats.log").read_text()
        yield mqtt_port
    finally:
        proc.terminate()
        proc.wait(10)


BROKERS = {"mosquitto": mosquitto, "rabbitmq": rabbitmq, "nats": nats}


@pytest.fixture(scope="module", params=list(BROKERS))
def deployment(request, tmp_path_factory):
    """Two gateway nodes on one broker over MQTT 3.1.1, private topics and share group."""
    workdir = tmp_path_factory.mktemp(f"broker-{request.param}")
    with BROKERS[request.param](workdir) as port:
        topics = Topics()
        env = {
            "MQTT_URL": f"mqtt://127.0.0.1:{port}",
            "OCPPGW_MQTT_PROTOCOL": "3.1.1",
            "OCPPGW_SHARE_GROUP": topics.prefix,  # the 3.1.1 election counts this deployment only
            "OCPPGW_CALL_TIMEOUT_S": "5",
        }
        db = migrated_sqlite(workdir)
        nodes = [GatewayProcess(workdir, db, topics, env=env) for _ in range(2)]
        for node in nodes:
            node.launch(own_group=True)
        try:
            for node in nodes:
                node.wait_ready()
            probe = MqttProbe([f"{topics.prefix}/#"], port=port)
            yield request.param, nodes, topics, probe
            probe.close()
        finally:
            for node in nodes:
                node.stop()


async def _station(node, cid):
    return await websockets.connect(node.url(cid), subprotocols=[SUBPROTOCOL], open_timeout=10)


async def _next(ws, timeout_s=5.0):
    return json.loads(await asyncio.wait_for(ws.recv(), timeout_s))


def _envelopes(probe, topic):
    return [body for t, body in probe.snapshot() if t == topic]


async def test_flows_on_every_broker(deployment):
    _broker, (_one, two), topics, probe = deployment
    p = topics.prefix
    cid = f"BR{uuid.uuid4().hex[:6]}"
    ws = await _station(two, cid)
    await probe.arrival(topics.presence(cid), lambda b: b["status"] == "connected", 10)

    # boot and heartbeat: published once, answered by the backend through the other node's broker
    await ws.send(
        json.dumps(
            [2, "b1", "BootNotification", {"chargePointVendor": "V", "chargePointModel": "M"}]
        )
    )
    boot = await probe.arrival(f"{p}/cp/{cid}/BootNotification")
    assert boot["UniqueId"] == "b1"
    answer = {"currentTime": "2026-12-06T10:00:00Z", "interval": 300, "status": "Accepted"}
    probe.publish(
        f"{p}/cs/{cid}/Reply/BootNotification",
        {"MessageTypeId": 3, "UniqueId": "b1", "Payload": answer},
    )
    assert await _next(ws) == [3, "b1", answer]
    await ws.send(json.dumps([2, "h1", "Heartbeat", {}]))
    await probe.arrival(f"{p}/cp/{cid}/Heartbeat")

    # a backend CALL reaches the station once (both nodes hold the fleet-wide subscription)
    probe.publish(
        f"{p}/cs/{cid}/Reset",
        {"MessageTypeId": 2, "UniqueId": "r1", "Action": "Reset", "Payload": {"type": "Soft"}},
    )
    assert (await _next(ws))[:3] == [2, "r1", "Reset"]
    await ws.send(json.dumps([3, "r1", {"status": "Accepted"}]))
    reply = await probe.arrival(f"{p}/cp/Reply/{cid}")
    assert (reply["UniqueId"], reply["Action"], reply["Payload"]) == (
        "r1",
        "Reset",
        {"status": "Accepted"},
    )
    with pytest.raises(TimeoutError):
        await _next(ws, 1.0)  # no second copy of the Reset
    assert len(_envelopes(probe, f"{p}/cp/{cid}/BootNotification")) == 1

    # a duplicate connection on the same node: the newer one wins, the older is closed
    newer = await _station(two, cid)
    with pytest.raises(websockets.ConnectionClosed):
        await _next(ws)
    await newer.close()
    await probe.arrival(topics.presence(cid), lambda b: b["status"] == "disconnected", 10)


async def test_offline_answer_without_shared_subscriptions(deployment):
    broker, _nodes, topics, probe = deployment
    p = topics.prefix
    cid = f"OFF{uuid.uuid4().hex[:6]}"  # connected nowhere
    probe.publish(
        f"{p}/cs/{cid}/Reset",
        {"MessageTypeId": 2, "UniqueId": "o1", "Action": "Reset", "Payload": {"type": "Soft"}},
    )
    error = await probe.arrival(f"{p}/cp/Error/{cid}", timeout_s=5)
    assert (error["UniqueId"], error["ErrorDetails"]["reason"]) == ("o1", "offline")
    await asyncio.sleep(1.5)  # the other node's grace has long passed: it must stay silent
    assert len(_envelopes(probe, f"{p}/cp/Error/{cid}")) == 1, broker
