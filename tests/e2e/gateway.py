"""Real `rungateway` processes for the deployment e2e tests (scale-out, shutdown, admin port).

Each gateway runs on free loopback ports against the shared Mosquitto (and Redis where asked),
on its own migrated SQLite copy, with every MQTT topic under a private prefix: other engineers'
gateways on the same broker never see these stations, and these tests never see theirs.
"""

import contextlib
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SUBPROTOCOL = "ocpp1.6"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
        return True
    return False


def migrated_sqlite(directory: Path) -> Path:
    """A freshly migrated SQLite file in `directory`."""
    path = directory / "gateway.sqlite3"
    env = {**os.environ, "DEBUG": "true", "DATABASE_URL": f"sqlite:///{path}"}
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v0"],
        cwd=REPO,
        env=env,
        check=True,
        timeout=120,
    )
    return path


class Topics:
    """Private topic templates: `prefix/cp/${cid}/${action}` and friends."""

    def __init__(self):
        self.prefix = f"e2e{uuid.uuid4().hex[:10]}"

    def env(self) -> dict:
        p = self.prefix
        return {
            "OCPPGW_UPSTREAM_TOPIC": f"{p}/cp/${{cid}}/${{action}}",
            "OCPPGW_REPLY_TOPIC": f"{p}/cp/Reply/${{cid}}",
            "OCPPGW_ERROR_TOPIC": f"{p}/cp/Error/${{cid}}",
            "OCPPGW_NOTICE_TOPIC": f"{p}/gw/Notice/${{cid}}",
            "OCPPGW_DOWNSTREAM_TOPIC": f"{p}/cs/${{cid}}/#",
            "OCPPGW_PRESENCE_TOPIC": f"{p}/presence/${{cid}}",
        }

    def presence(self, cid: str) -> str:
        return f"{self.prefix}/presence/{cid}"


class GatewayProcess:
    """`manage.py rungateway` with the given arguments and environment; stopped by `stop()`."""

    def __init__(self, workdir: Path, db: Path, topics: Topics, args=(), env=None):
        self.port, self.admin_port = free_port(), free_port()
        self.db = workdir / f"db-{uuid.uuid4().hex[:6]}.sqlite3"
        shutil.copy(db, self.db)
        self.topics = topics
        self.log_path = workdir / f"gateway-{self.port}.log"
        self.env = {
            **os.environ,
            "DEBUG": "false",
            "DJANGO_SECRET_KEY": "e2e-" + uuid.uuid4().hex,
            "DATABASE_URL": f"sqlite:///{self.db}",
            "MQTT_URL": "mqtt://127.0.0.1:1883",
            "OCPPGW_AUTH": "none",
            "OCPPGW_LOG_FLUSH_S": "0.2",
            **topics.env(),
            **(env or {}),
        }
        self.env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        self.args = [
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--admin-port",
            str(self.admin_port),
            *args,
        ]
        self.proc: subprocess.Popen | None = None

    def start(self, timeout_s: float = 20) -> "GatewayProcess":
        with open(self.log_path, "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "manage.py", "rungateway", *self.args],
                cwd=REPO,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # stop() can kill a supervisor's children with it
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"rungateway exited:\n{self.log()}"
            if self.http("/readyz")[0] == 200:
                return self
            time.sleep(0.1)
        raise AssertionError(f"rungateway not ready after {timeout_s}s:\n{self.log()}")

    def url(self, cid: str, port: int | None = None) -> str:
        return f"ws://127.0.0.1:{port or self.port}/ocpp/{cid}"

    def http(self, path: str, port: int | None = None) -> tuple[int, bytes]:
        url = f"http://127.0.0.1:{port or self.admin_port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=3) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()
        except OSError:
            return 0, b""

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def rows(self, sql: str, params=()) -> list[tuple]:
        with contextlib.closing(sqlite3.connect(self.db, timeout=10)) as conn:
            return conn.execute(sql, params).fetchall()

    def stop(self, timeout_s: float = 15) -> int | None:
        """SIGTERM, wait; SIGKILL if it will not stop. The exit code (None if it had to be killed)."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.kill()
            self.proc.wait(5)
            return None


def boot_frame(unique_id: str) -> str:
    return (
        f'[2,"{unique_id}","BootNotification",'
        '{"chargePointVendor":"ocppgw-e2e","chargePointModel":"deploy"}]'
    )
