"""The processes a bench run starts and measures: free ports, children that report JSON-line
events, the private Mosquitto, the `bare` baselines, and CPU and RSS of a process tree."""

import contextlib
import json
import queue
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

BENCH = Path(__file__).resolve().parent
MOSQUITTO_CONF = """listener {port} 127.0.0.1
allow_anonymous true
persistence false
# 0 = unlimited: with Mosquitto's defaults (1000 queued, 20 in flight) a counter that falls
# a second behind has messages dropped by the broker, which would be charged to the gateway.
max_queued_messages 0
max_inflight_messages 0
sys_interval 1
set_tcp_nodelay true
# Mosquitto drops root privileges to its own user, which cannot write in results/: stderr
log_dest stderr
"""


# The kernel's caps on a listening socket's queues: a server's listen(backlog) gets at most
# somaxconn, and SYNs past tcp_max_syn_backlog wait out TCP's retransmission back-off
LISTEN_SYSCTLS = ("/proc/sys/net/core/somaxconn", "/proc/sys/net/ipv4/tcp_max_syn_backlog")


@contextlib.contextmanager
def listen_queues(want: int = 65535):
    """Raise the listen queue caps to `want` for the run where allowed (root in this network
    namespace), as a node holding tens of thousands of stations is set up; restored after.
    Yields the values in force, for the report."""
    before = {}
    for path in map(Path, LISTEN_SYSCTLS):
        with contextlib.suppress(OSError, ValueError):
            before[path] = int(path.read_text())
            if before[path] < want:
                path.write_text(str(want))
    try:
        yield {path.name: int(path.read_text()) for path in before}
    finally:
        for path, value in before.items():
            with contextlib.suppress(OSError):
                path.write_text(str(value))


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 20) -> None:
    """Block until something accepts on 127.0.0.1:port."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listening on {port} after {timeout} s")


# --- processes ---------------------------------------------------------------------------------


class Child:
    """A helper process: commands on stdin, one JSON event per stdout line, stderr to a log."""

    def __init__(self, name: str, argv: list[str], log_dir: Path) -> None:
        self.name = name
        self.log = open(log_dir / f"{name}.log", "a")
        self.p = subprocess.Popen(
            [sys.executable, *argv],
            cwd=BENCH,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
            bufsize=1,
        )
        self.events: queue.Queue = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        for line in self.p.stdout:
            try:
                self.events.put(json.loads(line))
            except ValueError:
                self.log.write(line)
        self.events.put({"event": "exit"})

    def expect(self, event: str, timeout: float) -> dict:
        """Next event of that name; raises on timeout or when the process ends first."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{self.name}: no '{event}' within {timeout} s")
            try:
                ev = self.events.get(timeout=left)
            except queue.Empty:
                continue
            if ev.get("event") == event:
                return ev
            if ev.get("event") in ("exit", "error"):
                raise RuntimeError(
                    f"{self.name} ended before '{event}': {ev} (see {self.log.name})"
                )

    def send(self, word: str) -> None:
        with contextlib.suppress(BrokenPipeError, OSError):
            self.p.stdin.write(word + "\n")
            self.p.stdin.flush()

    def stop(self) -> None:
        """Close stdin (helpers exit on EOF), then terminate if still running."""
        with contextlib.suppress(OSError):
            self.p.stdin.close()
        try:
            self.p.wait(10)
        except subprocess.TimeoutExpired:
            self.p.terminate()
            try:
                self.p.wait(5)
            except subprocess.TimeoutExpired:
                self.p.kill()
        self.log.close()


class Broker:
    """A private Mosquitto with unlimited queues, or an existing broker given by --mqtt-url."""

    def __init__(self, results: Path, url: str | None) -> None:
        self.proc = None
        self.pid = None
        if url:
            hostport = url.split("://", 1)[1].rsplit("@", 1)[-1]
            self.host, port = hostport.split(":")
            self.port = int(port)
            self.url = url
            return
        self.host, self.port = "127.0.0.1", free_port()
        conf = results / "mosquitto.conf"
        conf.write_text(MOSQUITTO_CONF.format(port=self.port))
        self.log = open(results / "mosquitto.log", "a")
        self.proc = subprocess.Popen(
            [shutil.which("mosquitto") or "mosquitto", "-c", str(conf)],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        wait_port(self.port)
        self.pid = self.proc.pid
        self.url = f"mqtt://{self.host}:{self.port}"

    def stop(self) -> None:
        if self.proc:
            self.proc.terminate()
            self.proc.wait(10)


class Bare:
    """A baseline server: bench/bare.py, or bench/bare_paho.py as `bare-paho`."""

    def __init__(self, results: Path, broker: Broker, name: str = "bare") -> None:
        self.results, self.broker, self.name = results, broker, name
        self.script = name.replace("-", "_") + ".py"
        self.proc = None
        self.port = 0

    def start(self, port: int, processes: int = 1) -> None:
        self.port = port
        self.log = open(self.results / f"{self.name}-{port}.log", "a")
        argv = [sys.executable, str(BENCH / self.script), "--port", str(port)]
        argv += ["--mqtt-host", self.broker.host, "--mqtt-port", str(self.broker.port)]
        self.proc = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT)
        wait_port(port)
        time.sleep(0.3)  # MQTT connection and subscription

    @property
    def pid(self) -> int:
        return self.proc.pid

    def settings(self) -> dict:
        return {
            "command": f"python bench/{self.script} --port {self.port} "
            f"--mqtt-port {self.broker.port}"
        }

    def stop(self) -> None:
        if self.proc:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
            self.proc = None
            self.log.close()


# --- resources ---------------------------------------------------------------------------------


def tree(pid: int) -> list[psutil.Process]:
    """The process and all its descendants (gateway worker processes included)."""
    try:
        p = psutil.Process(pid)
        return [p, *p.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of the process tree so far."""
    total = 0.0
    for p in tree(pid):
        with contextlib.suppress(psutil.NoSuchProcess):
            t = p.cpu_times()
            total += t.user + t.system
    return total


def machine_busy_s() -> float:
    """CPU seconds the whole machine spent busy (all cores), to see other load on it."""
    t = psutil.cpu_times()
    return sum(t) - t.idle - getattr(t, "iowait", 0.0)


def rss(pid: int) -> int:
    """Resident set size of the process tree, bytes."""
    total = 0
    for p in tree(pid):
        with contextlib.suppress(psutil.NoSuchProcess):
            total += p.memory_info().rss
    return total


class Sampler:
    """Peak RSS of the server while a measure runs (sampled every 100 ms)."""

    def __init__(self, pid: int) -> None:
        self.pid, self.peak, self._stop = pid, 0, threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss(self.pid))
            self._stop.wait(0.1)

    def stop(self) -> int:
        self._stop.set()
        self._t.join()
        return self.peak
