"""Real `rungateway` processes for the deployment e2e tests (scale-out, shutdown, admin port).

Each gateway runs on free loopback ports against the shared Mosquitto (and Redis where asked),
on its own migrated SQLite copy, with every MQTT topic under a private prefix: other engineers'
gateways on the same broker never see these stations, and these tests never see theirs.
"""

import contextlib
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import uuid
from pathlib import Path

from tests.gateway_process import RungatewayProcess

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


class GatewayProcess(RungatewayProcess):
    """`manage.py rungateway` with the given arguments and environment; stopped by `stop()`."""

    def __init__(self, workdir: Path, db: Path, topics: Topics, args=(), env=None):
        port, self.admin_port = free_port(), free_port()
        self.db = workdir / f"db-{uuid.uuid4().hex[:6]}.sqlite3"
        shutil.copy(db, self.db)
        self.topics = topics
        env = {
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
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        args = ["--host", "127.0.0.1", "--port", str(port), "--admin-port", str(self.admin_port), *args]  # fmt: skip
        super().__init__(
            workdir / f"gateway-{port}.log", env, args, port=port, http_port=self.admin_port
        )

    def start(self, timeout_s: float = 20) -> "GatewayProcess":
        return super().start(timeout_s, own_group=True)  # stop() kills a supervisor's children

    url = RungatewayProcess.ws_url

    def rows(self, sql: str, params=()) -> list[tuple]:
        with contextlib.closing(sqlite3.connect(self.db, timeout=10)) as conn:
            return conn.execute(sql, params).fetchall()


def boot_frame(unique_id: str) -> str:
    return (
        f'[2,"{unique_id}","BootNotification",'
        '{"chargePointVendor":"ocppgw-e2e","chargePointModel":"deploy"}]'
    )
