"""`rungateway --processes N`: one listening socket, N complete gateway processes adopting it.

Twisted has no SO_REUSEPORT, so the supervisor creates the listening sockets once and starts N
children (`manage.py rungateway --fd …`); the kernel hands each new connection to one of them.
Every child has its own node name, MQTT connection and subscriptions; Redis carries only the
claims between them. SIGTERM/SIGINT are forwarded and the children's graceful stop awaited; a
child that dies is restarted (a crash loop stops it all).
"""

import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from django.conf import settings

from ocppgw.edge.serve import ADMIN_BACKLOG, LISTEN_BACKLOG

log = logging.getLogger("ocppgw.rungateway")

CHILD_STOP_TIMEOUT_S = 30  # a child still running after this is killed
RESTART_DELAY_S = 1.0
CRASH_LIMIT = 5  # deaths of one child within CRASH_WINDOW_S before the supervisor gives up
CRASH_WINDOW_S = 60


class ListenError(Exception):
    """A listening socket could not be created (the port is taken, say)."""


class Supervisor:
    """Create the listening sockets once, run N gateway children on them, keep them running."""

    def __init__(self, stdout, host, port, admin_port, processes):
        self.stdout, self.host, self.port = stdout, host, port
        self.admin_port, self.processes = admin_port, processes
        self.children: dict[int, subprocess.Popen] = {}  # slot -> child
        self.deaths: dict[int, list[float]] = {}
        self.stopping = None  # the signal that asked us to stop

    def run(self) -> int:
        sockets = [_listen(self.host, self.port, LISTEN_BACKLOG)]
        if self.admin_port:
            sockets.append(_listen(self.host, self.admin_port, ADMIN_BACKLOG))
        metrics_dir, own_dir = _metrics_dir()
        self.metrics_dir = metrics_dir
        env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": metrics_dir}
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._on_signal)
        self.stdout.write(
            f"ocppgw supervisor {os.getpid()}: {self.processes} processes on "
            f"{self.host}:{self.port}" + (f", admin {self.admin_port}" if self.admin_port else "")
        )
        self.stdout.flush()
        failed = False
        try:
            for slot in range(self.processes):
                self._start(slot, sockets, env)
            while self.stopping is None and not failed:
                time.sleep(0.2)
                for slot, child in list(self.children.items()):
                    if child.poll() is not None and self.stopping is None:
                        failed = not self._died(slot, child, sockets, env)
            for sock in sockets:  # nobody accepts any more: let new connections fail fast
                sock.close()
            return self._stop_children() or int(failed)
        finally:
            if own_dir:
                _remove_tree(metrics_dir)

    def _on_signal(self, signum, frame):
        self.stopping = signum

    def _start(self, slot, sockets, env) -> None:
        args = [sys.executable, str(Path(settings.BASE_DIR) / "manage.py"), "rungateway"]
        args += ["--host", self.host, "--port", str(self.port)]
        args += ["--admin-port", str(self.admin_port), "--fd", str(sockets[0].fileno())]
        if self.admin_port:
            args += ["--admin-fd", str(sockets[1].fileno())]
        child_env = dict(env)
        if settings.OCPPGW_NODE:  # a fixed name must still differ per process (MQTT client id)
            child_env["OCPPGW_NODE"] = f"{settings.OCPPGW_NODE}-{slot}"
        child = subprocess.Popen(args, env=child_env, pass_fds=[s.fileno() for s in sockets])
        self.children[slot] = child

    def _died(self, slot, child, sockets, env) -> bool:
        """Restart a dead child; False when it keeps dying (a crash loop)."""
        _mark_dead(child.pid, self.metrics_dir)
        del self.children[slot]  # its exit code is no verdict on a later shutdown
        now = time.monotonic()
        recent = [t for t in self.deaths.get(slot, []) if now - t < CRASH_WINDOW_S] + [now]
        self.deaths[slot] = recent
        log.error("gateway process %s exited with %s", child.pid, child.returncode)
        if len(recent) >= CRASH_LIMIT:
            log.error(
                "gateway process %s died %d times in %ss: giving up",
                slot,
                len(recent),
                CRASH_WINDOW_S,
            )
            return False
        time.sleep(RESTART_DELAY_S)
        if self.stopping is None:
            self._start(slot, sockets, env)
        return True

    def _stop_children(self) -> int:
        """SIGTERM every running child and wait; 1 if one of them did not stop cleanly."""
        running = []
        for child in self.children.values():
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
                running.append(child)
            else:  # died just before the signal (would have been restarted): not our verdict
                log.error("gateway process %s exited with %s", child.pid, child.returncode)
                _mark_dead(child.pid, self.metrics_dir)
        deadline = time.monotonic() + CHILD_STOP_TIMEOUT_S
        code = 0
        for child in running:
            try:
                child.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.error("gateway process %s did not stop in time: killing it", child.pid)
                child.kill()
                child.wait()
            # killed by our SIGTERM before it installed its handler: it held nothing yet
            code = code or (0 if child.returncode in (0, -signal.SIGTERM) else 1)
            _mark_dead(child.pid, self.metrics_dir)
        return code


def _listen(host: str, port: int, backlog: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        raise ListenError(f"cannot listen on {host}:{port}: {exc.strerror}") from exc
    sock.listen(backlog)
    sock.setblocking(False)  # Twisted adopts only non-blocking sockets
    return sock


def _metrics_dir() -> tuple[str, bool]:
    """prometheus-client's multiprocess directory: the operator's (emptied) or a fresh one."""
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not path:
        return tempfile.mkdtemp(prefix="ocppgw-metrics-"), True
    os.makedirs(path, exist_ok=True)
    for stale in Path(path).glob("*.db"):  # values of an earlier run's processes
        stale.unlink()
    return path, False


def _mark_dead(pid: int, metrics_dir: str) -> None:
    """Drop a dead process's live gauges (its counters stay in the totals)."""
    from prometheus_client import multiprocess

    try:
        multiprocess.mark_process_dead(pid, metrics_dir)
    except OSError:
        pass


def _remove_tree(path: str) -> None:
    for item in Path(path).glob("*"):
        item.unlink(missing_ok=True)
    Path(path).rmdir()
