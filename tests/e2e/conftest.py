"""End-to-end fixtures: real `manage.py rungateway` processes, the real Mosquitto, real clients.

Each gateway runs on a free loopback port with its own copy of a migrated SQLite file that
already holds a pool of stations (one `manage.py shell` per session, not one per test). Every
test takes its own stations from the pool, so cids never repeat on the shared broker.
"""

import asyncio
import contextlib
import itertools
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import websockets
from websockets.asyncio.client import connect

from tests.conftest import PASSWORD, basic, clear_retained, free_port
from tests.gateway_process import RungatewayProcess

REPO = Path(__file__).resolve().parents[2]
POOL_SIZE = 120
BASE_ENV = {
    "DEBUG": "true",
    "PYTHONUNBUFFERED": "1",
    "REDIS_URL": "",
    "MQTT_URL": "mqtt://127.0.0.1:1883",
    "OCPPGW_LOG_LEVEL": "INFO",
    "OCPPGW_AUTH_CACHE_TTL_S": "3600",
}


def _env(extra: dict) -> dict:
    # the machine's own settings (a CI DATABASE_URL, for one) must not reach the gateway
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("OCPPGW_", "DJANGO_"))}
    return {**clean, **BASE_ENV, **extra}


def manage(env: dict, *args: str) -> str:
    result = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=REPO,
        env=_env(env),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


_POOL_SCRIPT = """
from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import make_password
from stations.auth import STATION_HASHER
from stations.models import Station
encoded = make_password({password!r}, hasher=STATION_HASHER)
User = get_user_model()
for cid in {cids!r}:
    Station.objects.create(cid=cid, user=User.objects.create(username=cid, password=encoded))
"""


class Pool:
    """The stations every gateway's database holds; take() hands out an unused one."""

    def __init__(self, run_id: str):
        self.cids = [f"E2E{run_id}x{n:03d}" for n in range(POOL_SIZE)]
        self._next = itertools.count()

    def take(self) -> str:
        n = next(self._next)
        assert n < len(self.cids), "the e2e station pool is used up: raise POOL_SIZE"
        return self.cids[n]


@pytest.fixture(scope="session")
def pool() -> Pool:
    return Pool(uuid.uuid4().hex[:8])


@pytest.fixture(scope="session")
def template_db(tmp_path_factory, pool) -> Path:
    path = tmp_path_factory.mktemp("e2e-db") / "template.sqlite3"
    env = {"DATABASE_URL": f"sqlite:///{path}"}
    manage(env, "migrate", "--noinput", "-v0")
    manage(env, "shell", "-c", _POOL_SCRIPT.format(password=PASSWORD, cids=pool.cids))
    yield path
    clear_retained([f"ocpp/presence/{cid}" for cid in pool.cids])


class Gateway(RungatewayProcess):
    """A real `rungateway` on a free port; its output goes to a log file."""

    def __init__(self, workdir: Path, template: Path, env: dict):
        port = free_port()
        self.node = f"e2e-{port}"
        db = workdir / f"gw-{port}.sqlite3"
        shutil.copy(template, db)
        self.db_env = {"DATABASE_URL": f"sqlite:///{db}"}  # for manage(gw.db_env, ...)
        env = _env({**self.db_env, "OCPPGW_NODE": self.node, **env})
        args = ["--host", "127.0.0.1", "--port", str(port)]
        super().__init__(workdir / f"gw-{port}.log", env, args, port=port)

    url = RungatewayProcess.ws_url

    def stop(self) -> None:
        super().stop()
        clear_retained([f"ocpp/gw/nodes/{self.node}"])


def start_gateways(workdir: Path, template: Path, envs: list[dict]) -> list[Gateway]:
    """Start several gateways at once (they start in parallel), each ready on return."""
    gateways = [Gateway(workdir, template, env).launch() for env in envs]
    for gw in gateways:
        gw.wait_ready()
    return gateways


# a short call timeout keeps the timeout tests quick; a responder answers well within it
SHARED_ENV = {"OCPPGW_CALL_TIMEOUT_S": "3"}


@pytest.fixture(scope="session")
def shared_gateway(tmp_path_factory, template_db):
    """One gateway with default settings (and a 3 s call timeout) for most tests."""
    [gw] = start_gateways(tmp_path_factory.mktemp("e2e-shared"), template_db, [SHARED_ENV])
    yield gw
    gw.stop()


@pytest.fixture
def gateway_factory(tmp_path, template_db):
    """start(*envs) -> gateways with their own settings, stopped after the test."""
    started: list[Gateway] = []

    def start(*envs: dict) -> list[Gateway]:
        gateways = start_gateways(tmp_path, template_db, list(envs))
        started.extend(gateways)
        return gateways

    yield start
    for gw in started:
        gw.stop()


# --- charge points ----------------------------------------------------------------------------------
async def open_socket(gw: Gateway, cid: str, version: str = "1.6", password: str = PASSWORD):
    """A raw websocket to the gateway, as a charge point opens it."""
    return await connect(
        gw.url(cid),
        subprotocols=[f"ocpp{version}"],
        additional_headers={"Authorization": basic(cid, password)},
        open_timeout=10,
        ping_interval=None,
        max_size=2**22,
    )


class RawStation:
    """A charge point that records every frame it receives (for exact answers and silence)."""

    def __init__(self, ws):
        self.ws = ws
        self.frames: asyncio.Queue = asyncio.Queue()
        self._reader = asyncio.get_running_loop().create_task(self._read())

    async def _read(self):
        with contextlib.suppress(websockets.ConnectionClosed):
            async for text in self.ws:
                await self.frames.put(json.loads(text))

    async def send(self, frame) -> None:
        await self.ws.send(frame if isinstance(frame, str) else json.dumps(frame))

    async def next(self, timeout_s: float = 5.0) -> list:
        return await asyncio.wait_for(self.frames.get(), timeout_s)

    async def close(self) -> None:
        await self.ws.close()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader


@pytest.fixture
async def raw_station():
    """raw_station(gw, cid, version="1.6") -> an open RawStation, closed after the test."""
    opened: list[RawStation] = []

    async def open_(gw, cid, version="1.6"):
        station = RawStation(await open_socket(gw, cid, version))
        opened.append(station)
        return station

    yield open_
    for station in opened:
        await station.close()


@pytest.fixture
async def ocpp_station():
    """ocpp_station(gw, cid, cls, version) -> a started `ocpp` ChargePoint, closed after."""
    running: list[tuple] = []

    async def open_(gw, cid, cls, version="1.6"):
        ws = await open_socket(gw, cid, version)
        cp = cls(cid, ws, response_timeout=10)
        task = asyncio.get_running_loop().create_task(cp.start())
        running.append((ws, task))
        return cp

    yield open_
    for ws, task in running:
        await ws.close()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, websockets.ConnectionClosed):
            await task


def backend_topics(cid: str) -> list[str]:
    """What a backend subscribes to for one station (seed topics, notices, presence)."""
    return [
        f"ocpp/cp/{cid}/#",
        f"ocpp/cp/Reply/{cid}",
        f"ocpp/cp/Error/{cid}",
        f"ocpp/gw/Notice/{cid}",
        f"ocpp/presence/{cid}",
    ]


async def connected(probe, cid: str) -> dict:
    """Wait for the station's presence: the gateway then holds its downstream subscription."""
    return await probe.arrival(f"ocpp/presence/{cid}", lambda b: b["status"] == "connected")


def elapsed(since: float) -> float:
    return time.monotonic() - since
