"""One real `manage.py rungateway` process for the suites that need Daphne (e2e, reliability,
browser): started with the given arguments and environment, its output in a log file, ready once
`/readyz` answers 200, stopped with SIGTERM (SIGKILL past a timeout). Each suite configures it."""

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _port_open(host: str, port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), 0.5):
        return True
    return False


class RungatewayProcess:
    def __init__(self, log_path: Path, env: dict, args, *, host="127.0.0.1", port, http_port=None):
        self.log_path, self.env, self.args = Path(log_path), env, list(args)
        self.host, self.port = host, port
        self.http_port = http_port or port  # where /readyz, /metrics and the portal answer
        self.proc: subprocess.Popen | None = None
        self._own_group = False

    def start(self, timeout_s: float = 30, wait_ready: bool = True, own_group: bool = False):
        """Start and wait until it listens (and, with `wait_ready`, /readyz says 200).

        `own_group`: a process group of its own, so `stop()` also kills a supervisor's children."""
        self.launch(own_group)
        return self.wait_ready(timeout_s, readyz=wait_ready)

    def launch(self, own_group: bool = False):
        """Start without waiting (several gateways then start in parallel)."""
        self._own_group = own_group
        with open(self.log_path, "ab") as out:  # the child keeps its own descriptor
            self.proc = subprocess.Popen(
                [sys.executable, "manage.py", "rungateway", *self.args],
                cwd=REPO,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=own_group,
            )
        return self

    def wait_ready(self, timeout_s: float = 30, readyz: bool = True):
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"rungateway exited:\n{self.log()[-3000:]}")
            if _port_open(self.host, self.port) and (not readyz or self.http("/readyz")[0] == 200):
                return self
            time.sleep(0.1)
        raise AssertionError(f"rungateway not ready after {timeout_s}s:\n{self.log()[-3000:]}")

    def ws_url(self, cid: str, port: int | None = None) -> str:
        return f"ws://{self.host}:{port or self.port}/ocpp/{cid}"

    def http(self, path: str, port: int | None = None, timeout_s: float = 5) -> tuple[int, bytes]:
        """(status, body) of a GET; (0, b"") when nothing answers."""
        url = f"http://{self.host}:{port or self.http_port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=timeout_s) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()
        except OSError:
            return 0, b""

    def readyz(self) -> tuple[int, dict]:
        status, body = self.http("/readyz")
        return status, json.loads(body or b"{}") if status else {}

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def warmed(self) -> bool:
        """Every OCPP schema compiled (in the background after start-up, stations/gateway.py): memory
        measured before that would count the compiled schemas as growth."""
        from stations.gateway import SCHEMAS_WARMED

        return SCHEMAS_WARMED in self.log()

    def rss(self) -> int:
        import psutil

        return psutil.Process(self.proc.pid).memory_info().rss

    def fds(self) -> int:
        import psutil

        return psutil.Process(self.proc.pid).num_fds()

    def stop(self, timeout_s: float = 15) -> int | None:
        """SIGTERM, wait; SIGKILL if it will not stop. The exit code (None if it had to be killed)."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            if self._own_group:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.kill()
            self.proc.wait(5)
            return None
