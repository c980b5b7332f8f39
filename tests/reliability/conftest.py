"""Fixtures for the reliability suite (issue 7): private services and gateway processes.

Every process a test stops is started here, on a free loopback port, in a temporary directory:
a private Mosquitto, Redis or PostgreSQL (services.py), and real `rungateway` processes. The
shared services on 1883/6379/5432 are never stopped. Every wait is bounded in time.
"""

import contextlib
import os
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from tests.conftest import free_port
from tests.gateway_process import RungatewayProcess
from tests.reliability.services import PG_BIN, Mosquitto, Postgres, Redis

REPO = Path(__file__).resolve().parents[2]
PY = sys.executable


@pytest.fixture
def mosquitto(tmp_path):
    broker = Mosquitto(tmp_path / "mqtt")
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture
def private_redis(tmp_path):
    server = Redis(tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def private_postgres():
    if not (PG_BIN / "initdb").exists():
        pytest.skip("PostgreSQL 15 server binaries are not installed")
    server = Postgres()
    server.start()
    yield server
    server.destroy()


# --- gateway processes ----------------------------------------------------------------------------
BASE_ENV = {
    "DEBUG": "true",
    "OCPPGW_LOG_LEVEL": "INFO",
    "REDIS_URL": "",
    "PYTHONUNBUFFERED": "1",
    "OCPPGW_PING_INTERVAL_S": "30",
}


def manage(env: dict, *args, timeout_s: float = 120) -> str:
    result = subprocess.run(
        [PY, "manage.py", *args],
        cwd=REPO,
        env={**os.environ, **BASE_ENV, **env},
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


@pytest.fixture(scope="session")
def migrated_sqlite(tmp_path_factory) -> Path:
    """One migrated SQLite file per session; each gateway gets its own copy."""
    path = tmp_path_factory.mktemp("sqlite-template") / "template.sqlite3"
    manage({"DATABASE_URL": f"sqlite:///{path}"}, "migrate", "--noinput", "-v0")
    return path


class Gateway(RungatewayProcess):
    """A real `rungateway` process on a free port; its output goes to a log file."""

    def __init__(self, workdir: Path, env: dict, host: str = "127.0.0.1"):
        self.dir = workdir
        port = free_port()
        env = {**os.environ, **BASE_ENV, "OCPPGW_NODE": f"rel-{port}", **env}
        args = ["--host", host, "--port", str(port)]
        super().__init__(workdir / f"gateway-{port}.log", env, args, host=host, port=port)

    url = RungatewayProcess.ws_url


@pytest.fixture
def gateway_factory(tmp_path, migrated_sqlite):
    """start(env) -> a running Gateway on its own SQLite copy (unless env sets DATABASE_URL)."""
    started: list[Gateway] = []

    def start(env: dict, *, wait_ready: bool = True, host: str = "127.0.0.1") -> Gateway:
        env = dict(env)
        if "DATABASE_URL" not in env:
            db = tmp_path / f"gw-{len(started)}.sqlite3"
            shutil.copy(migrated_sqlite, db)
            env["DATABASE_URL"] = f"sqlite:///{db}"
        gw = Gateway(tmp_path, env, host=host)
        started.append(gw)
        return gw.start(wait_ready=wait_ready)

    yield start
    for gw in started:
        gw.stop()


def sqlite_rows(gw: Gateway, sql: str, params=()) -> list[tuple]:
    """Read a gateway's SQLite database directly (the test is another process)."""
    path = gw.env["DATABASE_URL"].removeprefix("sqlite:///")
    with contextlib.closing(sqlite3.connect(path, timeout=20)) as db:
        return db.execute(sql, params).fetchall()


# --- MQTT -----------------------------------------------------------------------------------------
class Recorder:
    """A backend on MQTT: records every message on its filters (with arrival time).

    `durable=True` keeps a persistent session (MQTT 3.1.1, clean_session false, QoS 1), so a
    broker restarted with persistence delivers what arrived while this client was reconnecting.
    `respond` answers station CALLs like a backend: it gets (topic, envelope) and returns
    (topic, envelope) or None.
    """

    def __init__(self, port, filters=("#",), *, durable=False, respond=None, client_id=None):
        self.messages: list[tuple[float, str, bytes, bool]] = []
        self.lock = threading.Lock()
        self.respond = respond
        self.connected = threading.Event()
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id or f"rel-recorder-{os.getpid()}-{id(self)}",
            protocol=mqtt.MQTTv311,
            clean_session=not durable,
        )
        self.client.max_inflight_messages_set(1000)
        self.client.reconnect_delay_set(0.2, 1)
        self._filters = list(filters)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = lambda *a: self.connected.clear()
        self.client.on_message = self._on_message
        self.client.connect_async("127.0.0.1", port, keepalive=30)
        self.client.loop_start()
        assert self.connected.wait(10), "recorder could not connect"

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        client.subscribe([(f, 1) for f in self._filters])
        self.connected.set()

    def _on_message(self, client, userdata, message):
        with self.lock:
            self.messages.append(
                (time.monotonic(), message.topic, message.payload, bool(message.retain))
            )
        if self.respond and not message.retain:
            answer = self.respond(message.topic, message.payload)
            if answer:
                client.publish(answer[0], answer[1], qos=1)

    def snapshot(self, start: int = 0) -> list[tuple[float, str, bytes, bool]]:
        with self.lock:
            return self.messages[start:]

    def publish(self, topic: str, payload, qos: int = 1) -> None:
        self.client.publish(topic, payload, qos=qos)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def recorder_factory():
    made: list[Recorder] = []

    def make(port, filters=("#",), **kwargs) -> Recorder:
        rec = Recorder(port, filters, **kwargs)
        made.append(rec)
        return rec

    yield make
    for rec in made:
        rec.close()


def make_stations(env: dict, stations) -> None:
    """Create stations [(cid, password, profile)] in the database `env` points at (one process)."""
    code = (
        "from django.core.management import call_command\n"
        f"for cid, password, profile in {list(stations)!r}:\n"
        "    call_command('createstation', cid, password=password, profile=profile)\n"
    )
    manage(env, "shell", "-c", code)


def metric(gw: Gateway, name: str) -> float | None:
    """A sample from the gateway's /metrics, or None when it has no such metric (yet)."""
    status, body = gw.http("/metrics")
    if status != 200:
        return None
    for line in body.decode().splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return None
