"""Browser-test rig: a real `rungateway` subprocess (temp SQLite, real Mosquitto), a backend that
answers the station's CALLs on MQTT, an `ocpp` v1.6 ChargePoint in its own thread, and Debian's
chromium driven by Playwright (never a downloaded browser)."""

import asyncio
import base64
import datetime
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from tests.gateway_process import RungatewayProcess

REPO = Path(__file__).resolve().parents[2]
SHOTS = REPO / "artifacts" / "screenshots"
CHROMIUM = "/usr/bin/chromium"
ADMIN = ("operator1", "operator-password-1")
STATION_PASSWORD = "browser-test-password-01"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


class Gateway(RungatewayProcess):
    """One `manage.py rungateway` on a free port with its own SQLite file."""

    def __init__(self, workdir: Path, cid: str, *, redis_url: str = "", set_up: bool = True):
        """With set_up False the database in `workdir` is another gateway's (several processes)."""
        port = free_port()
        self.cid = cid
        env = {
            **os.environ,
            "DEBUG": "true",
            "DATABASE_URL": f"sqlite:///{workdir / 'db.sqlite3'}",
            "OCPPGW_NODE": f"browser-{uuid.uuid4().hex[:6]}",
            "DJANGO_SUPERUSER_PASSWORD": ADMIN[1],
            "REDIS_URL": redis_url,
        }
        args = ["--host", "127.0.0.1", "--port", str(port)]
        super().__init__(workdir / f"gateway-{port}.log", env, args, port=port)
        if set_up:
            # one process for the three set-up commands: each Django start costs a second or two
            setup = (
                "from django.core.management import call_command as c;"
                "c('migrate', verbosity=0);"
                f"c('createsuperuser', interactive=False, username='{ADMIN[0]}', email='o@x.io');"
                f"c('createstation', '{cid}', password='{STATION_PASSWORD}')"
            )
            with open(self.log_path, "ab") as out:
                subprocess.run(
                    [sys.executable, "manage.py", "shell", "-c", setup],
                    cwd=REPO,
                    env=self.env,
                    check=True,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
        self.start(timeout_s=20)
        self.url = f"http://127.0.0.1:{port}"  # the portal; a station connects to ws_url(cid)


class Backend:
    """Answers every CALL a station publishes under ocpp/cp/<cid>/ with a CALLRESULT downstream,
    and records what arrives on the topics the test watches."""

    ANSWERS = {
        "BootNotification": lambda: {"currentTime": _now(), "interval": 30, "status": "Accepted"},
        "Heartbeat": lambda: {"currentTime": _now()},
    }

    def __init__(self, cid: str):
        self.cid = cid
        self.seen: list[tuple[str, dict]] = []
        self.lock = threading.Lock()
        ready = threading.Event()
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=f"browser-backend-{uuid.uuid4().hex[:8]}"
        )
        self.client.on_connect = lambda c, *a: c.subscribe(f"ocpp/cp/{cid}/#", qos=1)
        self.client.on_subscribe = lambda *a: ready.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", 1883)
        self.client.loop_start()
        assert ready.wait(10), "the test backend could not subscribe"

    def _on_message(self, client, userdata, message):
        body = json.loads(message.payload)
        with self.lock:
            self.seen.append((message.topic, body))
        if body.get("MessageTypeId") == 2:
            payload = self.ANSWERS.get(body["Action"], dict)()
            answer = {"MessageTypeId": 3, "UniqueId": body["UniqueId"], "Payload": payload}
            client.publish(f"ocpp/cs/{self.cid}/Reply/{body['Action']}", json.dumps(answer), qos=1)

    def arrived(self, topic: str, action: str):
        with self.lock:
            return next((b for t, b in self.seen if t == topic and b.get("Action") == action), None)

    def close(self):
        self.client.loop_stop()
        self.client.disconnect()


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


class Station:
    """An `ocpp` 1.6 ChargePoint on its own event-loop thread (Playwright's sync API owns ours)."""

    def __init__(self, gateway_port: int, cid: str):
        self.url = f"ws://127.0.0.1:{gateway_port}/ocpp/{cid}"
        self.cid = cid
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.cp = None
        self.ws = None

    def run(self, coro, timeout_s=15):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout_s)

    def connect(self):
        self.run(self._connect())

    async def _connect(self):
        import websockets
        from ocpp.routing import on
        from ocpp.v16 import ChargePoint, call_result
        from ocpp.v16.enums import Action, ResetStatus

        class Simulated(ChargePoint):
            @on(Action.reset)
            def on_reset(self, type, **kwargs):
                return call_result.Reset(status=ResetStatus.accepted)

        token = base64.b64encode(f"{self.cid}:{STATION_PASSWORD}".encode()).decode()
        self.ws = await websockets.connect(
            self.url,
            subprotocols=["ocpp1.6"],
            additional_headers={"Authorization": f"Basic {token}"},
        )
        self.cp = Simulated(self.cid, self.ws, response_timeout=10)
        self.listener = asyncio.ensure_future(self.cp.start())

    def boot(self):
        from ocpp.v16 import call

        return self.run(
            self.cp.call(
                call.BootNotification(charge_point_model="Browser", charge_point_vendor="ocppgw")
            )
        )

    def status(self, connector: int, status: str, error_code: str = "NoError"):
        from ocpp.v16 import call

        return self.run(
            self.cp.call(
                call.StatusNotification(
                    connector_id=connector, error_code=error_code, status=status
                )
            )
        )

    def close_code(self):
        """The close code once the gateway closed the socket, else None."""
        return self.ws.close_code if self.ws is not None else None

    def disconnect(self):
        if self.ws is not None:
            self.run(self.ws.close())
            self.ws = None
            self.loop.call_soon_threadsafe(self.listener.cancel)

    def stop(self):
        try:
            self.disconnect()
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(5)


@pytest.fixture(scope="module")
def rig():
    """The gateway, the backend and a (not yet connected) station, shared by a module's tests."""
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is missing: apt-get install -y chromium")
    workdir = Path(tempfile.mkdtemp(prefix="ocppgw-browser-"))
    cid = f"BRW{uuid.uuid4().hex[:8].upper()}"
    gateway = Gateway(workdir, cid)
    backend = Backend(cid)
    station = Station(gateway.port, cid)
    try:
        yield type(
            "Rig", (), {"gateway": gateway, "backend": backend, "station": station, "cid": cid}
        )
    finally:
        station.stop()
        backend.close()
        gateway.stop()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is missing: apt-get install -y chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def page(browser, rig):
    """One logged-out browser tab, 1400 px wide like an operator's screen."""
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    tab = context.new_page()
    tab.set_default_timeout(10000)
    yield tab
    context.close()


def shoot(page, name: str) -> None:
    """Save a full-page screenshot to artifacts/screenshots/ (gitignored) to look at."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)
