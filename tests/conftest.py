"""Shared test helpers: stations, Basic-auth headers, unique ids and an MQTT probe on the real broker.

The broker (Mosquitto on 127.0.0.1:1883) is shared with other test runs and other engineers'
gateways, so every test uses its own charge point ids and MQTT client ids, and subscribes only to
its own topics.
"""

import asyncio
import base64
import contextlib
import datetime
import json
import os
import socket
import threading
import time
import uuid

import paho.mqtt.client as mqtt
import pytest

BROKER_HOST, BROKER_PORT = "127.0.0.1", 1883
# 16-40 characters as OCPP requires, with ':' inside: the Basic header splits on the first ':'
PASSWORD = "pw:with:colons-0123456789"


def unique_cid(prefix: str = "T") -> str:
    """A charge point id no other test (or test run) uses: the broker is shared."""
    return f"{prefix}{uuid.uuid4().hex[:12]}"


def basic(user: str, password: str) -> str:
    """The value of an HTTP Basic Authorization header."""
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def new_station(cid=None, password=PASSWORD, *, enabled=True, profile=1, user_active=True):
    """Create a station and its Django user (sync: call through database_sync_to_async in async)."""
    from django.contrib.auth import get_user_model
    from django.contrib.auth.hashers import make_password

    from stations.auth import STATION_HASHER
    from stations.models import Station

    cid = cid or unique_cid()
    user = get_user_model().objects.create(
        username=cid,
        password=make_password(password, hasher=STATION_HASHER),
        is_active=user_active,
    )
    return Station.objects.create(cid=cid, user=user, enabled=enabled, security_profile=profile)


@pytest.fixture
def make_station(db):
    """make_station(cid=None, connected=False, version="1.6", **Station fields) -> Station.

    A connected station looks as the gateway's writer leaves it (connection id, node "test:1").
    """

    def make(cid=None, *, connected=False, version="1.6", password=PASSWORD, **fields):
        station = new_station(
            cid,
            password,
            enabled=fields.pop("enabled", True),
            profile=fields.pop("security_profile", 1),
        )
        station.ocpp_version = version
        if connected:
            now = datetime.datetime.now(datetime.UTC)
            station.connection_id = uuid.uuid4().hex[:16]
            station.node = "test:1"
            station.connected_at = station.last_frame_at = now
        for name, value in fields.items():
            setattr(station, name, value)
        station.save()
        return station

    return make


@pytest.fixture
def make_log(db):
    """make_log(station, direction="in", ..., ago_s=0) -> a MessageLog row created ago_s ago."""
    from stations.models import MessageLog

    def make(station, *, direction="in", outcome="published", ago_s=0.0, **fields):
        created = datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=ago_s)
        return MessageLog.objects.create(
            created=created,
            station=station,
            cid=station.cid,
            direction=direction,
            outcome=outcome,
            **fields,
        )

    return make


def _staff(username: str, password: str, perms: list[str]):
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Permission

    user = get_user_model().objects.create_user(username, password=password, is_staff=True)
    for perm in perms:
        app_label, codename = perm.split(".")
        user.user_permissions.add(
            Permission.objects.get(content_type__app_label=app_label, codename=codename)
        )
    return user


@pytest.fixture
def viewer(db):
    """A staff user without any action permission (sees pages, may not act)."""
    return _staff("viewer", "viewer-pass-123", [])


@pytest.fixture
def operator(db):
    """A staff user allowed to kick, send commands and edit rules and exemptions."""
    return _staff(
        "operator",
        "operator-pass-123",
        [
            "stations.kick_station",
            "stations.send_command",
            "stations.add_topicrule",
            "stations.change_topicrule",
            "stations.delete_topicrule",
            "stations.add_validationexemption",
            "stations.change_validationexemption",
            "stations.delete_validationexemption",
        ],
    )


def free_port() -> int:
    """A TCP port free on the loopback interface right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
        return True
    return False


def wait_until(predicate, timeout_s: float, what: str, step_s: float = 0.02):
    """Poll `predicate` until it returns something truthy; fail naming `what` after timeout_s."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step_s)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


async def until(predicate, timeout_s: float, what: str, step_s: float = 0.05):
    """`wait_until` for async tests: the loop keeps running (readers, senders) while it waits."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        await asyncio.sleep(step_s)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


class MqttProbe:
    """A backend on the real broker: subscribes to filters and records what arrives.

    `respond(topic, envelope) -> (topic, envelope) | None` answers like a backend would.
    """

    def __init__(self, filters, *, respond=None, host=BROKER_HOST, port=BROKER_PORT):
        self.messages: list[tuple[float, str, bytes, bool]] = []
        self.lock = threading.Lock()
        self.respond = respond
        self._filters = list(filters)
        self._subscribed = threading.Event()
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=f"test-probe-{os.getpid()}-{uuid.uuid4().hex[:8]}",
            protocol=mqtt.MQTTv311,
        )
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *a: self._subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect_async(host, port, keepalive=30)
        self.client.loop_start()
        assert self._subscribed.wait(10), "the MQTT probe could not subscribe"

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        client.subscribe([(f, 1) for f in self._filters])

    def _on_message(self, client, userdata, message):
        with self.lock:
            self.messages.append(
                (time.monotonic(), message.topic, message.payload, bool(message.retain))
            )
        if self.respond and not message.retain and message.payload:
            answer = self.respond(message.topic, json.loads(message.payload))
            if answer:
                client.publish(answer[0], json.dumps(answer[1]), qos=1)

    def snapshot(self, topic: str | None = None) -> list[tuple[str, dict]]:
        """(topic, decoded envelope) of every non-empty message so far, optionally on one topic."""
        with self.lock:
            items = list(self.messages)
        return [(t, json.loads(p)) for _, t, p, _ in items if p and (topic is None or t == topic)]

    def wait_for(self, topic: str, predicate=lambda body: True, timeout_s: float = 5.0) -> dict:
        """The first envelope on `topic` matching `predicate`, waiting up to timeout_s."""
        return wait_until(
            lambda: next((b for t, b in self.snapshot(topic) if predicate(b)), None),
            timeout_s,
            f"an MQTT message on {topic}",
        )

    async def arrival(self, topic: str, predicate=lambda body: True, timeout_s: float = 5.0):
        """Like wait_for, for async tests: polls without blocking the event loop."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            found = next((b for t, b in self.snapshot(topic) if predicate(b)), None)
            if found is not None:
                return found
            await asyncio.sleep(0.02)
        raise AssertionError(f"timed out after {timeout_s}s waiting for an MQTT message on {topic}")

    def publish(self, topic: str, body, qos: int = 1, retain: bool = False, wait=True) -> None:
        """Publish; wait=False inside `respond` (paho's thread cannot wait for itself)."""
        payload = body if isinstance(body, bytes | str) else json.dumps(body)
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        if wait:
            info.wait_for_publish(5)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def mqtt_probe():
    """mqtt_probe(filters, respond=None) -> an MqttProbe, closed after the test."""
    made: list[MqttProbe] = []

    def make(filters, **kwargs) -> MqttProbe:
        probe = MqttProbe(filters, **kwargs)
        made.append(probe)
        return probe

    yield make
    for probe in made:
        probe.close()


def clear_retained(topics) -> None:
    """Remove retained messages this test left on the shared broker (presence, node status)."""
    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2, client_id=f"test-clean-{uuid.uuid4().hex[:8]}"
    )
    try:
        client.connect(BROKER_HOST, BROKER_PORT, keepalive=10)
    except OSError:
        return
    client.loop_start()
    infos = [client.publish(topic, b"", qos=1, retain=True) for topic in topics]
    for info in infos:
        info.wait_for_publish(5)
    client.disconnect()
    client.loop_stop()


@pytest.fixture(scope="session")
def django_db_modify_db_settings(tmp_path_factory):
    """SQLite tests use a file, as production does: an in-memory test database shares one cache
    between connections, where a write on the gateway's database thread makes a concurrent
    query fail at once ("table is locked") instead of waiting its turn."""
    from django.conf import settings

    database = settings.DATABASES["default"]
    if database["ENGINE"].endswith("sqlite3"):
        database.setdefault("TEST", {})["NAME"] = str(
            tmp_path_factory.mktemp("db") / "test.sqlite3"
        )


# --- the in-process gateway (tests/asgi_station.py drives stations against it) -------------------
@pytest.fixture
async def gateway(settings):
    """A fresh Gateway for this test's loop, shut down (and its retained status cleared) after."""
    from stations import gateway as gateway_module

    node = settings.OCPPGW_NODE = f"test-{uuid.uuid4().hex[:10]}"
    yield
    gw = gateway_module._gateway
    if gw is not None and gw.loop is asyncio.get_running_loop():
        await gw.shutdown()
        gateway_module._gateway = None
    clear_retained([f"ocpp/gw/nodes/{node}"])


@pytest.fixture
def station_factory():
    """station(cid=None, **kwargs) -> Station row; retained presence of each is cleared after."""
    from channels.db import database_sync_to_async

    cids = []

    async def make(cid=None, **kwargs):
        station = await database_sync_to_async(new_station)(cid, **kwargs)
        cids.append(station.cid)
        return station

    yield make
    clear_retained([f"ocpp/presence/{cid}" for cid in cids])
