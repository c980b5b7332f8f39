"""Serve stations and operators with the Daphne settings a gateway needs (docs/contract.md §3).

`--processes N` (N > 1) makes this process a supervisor. Twisted has no SO_REUSEPORT, so it
creates the listening sockets once (backlog 2048) and starts N children (`manage.py rungateway
--fd …`) that adopt them; the kernel hands each new connection to one of them. Every child is a
complete gateway with its own node name, MQTT connection and subscriptions; Redis carries only the
claims between them, so REDIS_URL is required. The supervisor forwards SIGTERM/SIGINT, waits for
the children's graceful shutdown, and restarts a child that dies (a crash loop stops it all).

Graceful shutdown (SIGTERM/SIGINT) is ours, not Daphne's: Daphne cancels consumers without
calling disconnect(). We stop listening, publish "disconnected" for every station held (the
broker acknowledges it), flush the message log, close the sockets, publish the node's "offline"
status and disconnect from the broker cleanly, and only then stop the reactor.
"""

import argparse
import asyncio
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
from django.core.management.base import BaseCommand, CommandError

log = logging.getLogger("ocppgw.rungateway")

LISTEN_BACKLOG = 2048  # Daphne's default of 50 drops connections in a reconnect storm
ADMIN_BACKLOG = 128
CONNECT_TIMEOUT_S = 60  # longer than an uncached password check queued behind others
SHUTDOWN_TIMEOUT_S = 20  # the graceful steps; then the reactor stops regardless
CHILD_STOP_TIMEOUT_S = 30  # supervisor: a child still running after this is killed
RESTART_DELAY_S = 1.0
CRASH_LIMIT = 5  # deaths of one child within CRASH_WINDOW_S before the supervisor gives up
CRASH_WINDOW_S = 60


class Command(BaseCommand):
    help = "Run the OCPP gateway (stations on --port, operators too unless OCPPGW_ADMIN_PORT)."

    def add_arguments(self, parser):
        parser.add_argument("--host", default="0.0.0.0", help="interface to listen on")
        parser.add_argument("--port", type=int, default=settings.OCPPGW_PORT)
        parser.add_argument(
            "--admin-port",
            type=int,
            default=settings.OCPPGW_ADMIN_PORT,
            help="second listener for portal, admin, API and metrics (0 = none)",
        )
        parser.add_argument(
            "--processes",
            type=int,
            default=1,
            help="gateway processes sharing the port (more than 1 needs REDIS_URL)",
        )
        parser.add_argument(
            "--embedded-broker",
            action="store_true",
            help="start an in-process MQTT broker when MQTT_URL is unset and "
            "nothing listens on 127.0.0.1:1883 (laptop quick start)",
        )
        # set by the supervisor for its children: listening sockets to adopt
        parser.add_argument("--fd", type=int, default=None, help=argparse.SUPPRESS)
        parser.add_argument("--admin-fd", type=int, default=None, help=argparse.SUPPRESS)

    def handle(self, *args, host, port, admin_port, processes, embedded_broker, fd, admin_fd, **o):
        if processes < 1:
            raise CommandError("--processes must be at least 1")
        if processes > 1:
            if not settings.REDIS_URL:
                raise CommandError(
                    "REDIS_URL is required for --processes > 1: the processes coordinate "
                    "duplicate charge point ids and kicks through Redis"
                )
            if embedded_broker:
                raise CommandError("--embedded-broker runs with one process only")
            if ":" in host:  # Daphne's fd: endpoint adopts IPv4 sockets only
                raise CommandError("--processes > 1 needs an IPv4 --host")
            code = Supervisor(self.stdout, host, port, admin_port, processes).run()
            if code:
                raise CommandError("gateway processes failed", returncode=code)
            return
        if embedded_broker:
            self._maybe_start_broker()
        self._serve(host, port, admin_port, fd, admin_fd)

    # --- one gateway process ---------------------------------------------------------------------
    def _serve(self, host, port, admin_port, fd, admin_fd):
        import daphne.server  # noqa: F401  installs the asyncio reactor: import it first
        from twisted.internet import reactor, task

        from ocppgw import wsprotocol
        from ocppgw.asgi import application
        from ocppgw.server import GatewayServer

        wsprotocol.install()
        settings.OCPPGW_ADMIN_PORT = admin_port  # the ASGI port split (ocppgw/asgi.py) reads it
        if fd is not None:  # a supervisor's child: adopt the (IPv4) sockets it created
            endpoints = [f"fd:fileno={fd}"]
            if admin_fd is not None:
                endpoints.append(f"fd:fileno={admin_fd}")
        else:
            interface = host.replace(":", r"\:")
            endpoints = [f"tcp:port={port}:interface={interface}:backlog={LISTEN_BACKLOG}"]
            if admin_port:
                endpoints.append(
                    f"tcp:port={admin_port}:interface={interface}:backlog={ADMIN_BACKLOG}"
                )
        stopper = GracefulStop()
        server = GatewayServer(
            application=application,
            endpoints=endpoints,
            signal_handlers=False,  # SIGTERM/SIGINT are handled by GracefulStop
            websocket_timeout=-1,  # no lifetime limit: Daphne's default closes sockets after a day
            websocket_connect_timeout=CONNECT_TIMEOUT_S,
            websocket_handshake_timeout=CONNECT_TIMEOUT_S,
            ping_interval=settings.OCPPGW_PING_INTERVAL_S,
            ping_timeout=settings.OCPPGW_PING_TIMEOUT_S,
            websocket_max_message_size=settings.OCPPGW_MAX_FRAME_BYTES,
            websocket_max_frame_size=settings.OCPPGW_MAX_FRAME_BYTES,
            application_close_timeout=10,
            verbosity=0,
            ready_callable=lambda: self._ready(server, host, port, admin_port),
        )
        for signum in (signal.SIGTERM, signal.SIGINT):  # before run(): a child may be told at once
            signal.signal(
                signum, lambda n, _f: reactor.callFromThread(stopper.begin, signal.strsignal(n))
            )
        # any other way the reactor stops still gets the graceful steps (Daphne's own
        # trigger, registered later in run(), cancels consumers at the same time)
        reactor.addSystemEventTrigger("before", "shutdown", stopper.before_shutdown)
        if fd is not None:
            parent = os.getppid()
            orphan_check = task.LoopingCall(
                lambda: os.getppid() != parent and stopper.begin("supervisor gone")
            )
            orphan_check.start(1.0, now=False)
        _tune_gc()
        server.run()
        # everything that matters is flushed and closed by now; don't let interpreter exit wait
        # for executor threads still compiling schemas (seconds on a busy machine)
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)

    def _ready(self, server, host, port, admin_port):
        from twisted.internet import reactor

        # a frame over the limit gets a close frame with 1009 (docs/contract.md §1), not a dropped socket
        server.ws_factory.setProtocolOptions(failByDrop=False)

        where = f"ws://{host}:{port}/ocpp/<charge point id>"
        extra = f", operators on http://{host}:{admin_port}/portal/" if admin_port else ""
        self.stdout.write(f"ocppgw {os.getpid()} serving stations on {where}{extra}", ending="\n")
        self.stdout.flush()
        # start the gateway (MQTT, log writer) now rather than on the first station
        reactor.callLater(0, _start_gateway)

    def _maybe_start_broker(self):
        from stations import embedded_broker

        if os.environ.get("MQTT_URL"):
            return
        if embedded_broker.port_in_use("127.0.0.1", 1883):
            self.stdout.write("using the MQTT broker already listening on 127.0.0.1:1883")
            return
        embedded_broker.start_in_thread("127.0.0.1", 1883)
        settings.OCPPGW_MQTT_PROTOCOL = "3.1.1"  # amqtt speaks MQTT 3.1.1 only
        self.stdout.write("started an embedded MQTT broker on 127.0.0.1:1883 (laptop use only)")


def _start_gateway():
    from stations import gateway

    async def start():
        gateway.get_gateway()

    asyncio.get_event_loop().create_task(start())


class GracefulStop:
    """The ordered shutdown of one gateway process; runs once, then stops the reactor."""

    def __init__(self):
        self._done = None  # Deferred of the graceful steps, once begun

    def begin(self, why: str) -> None:
        from twisted.internet import reactor

        if self._done is None:
            log.info("shutting down (%s)", why)
            self._steps().addBoth(lambda _: reactor.stop())

    def before_shutdown(self):
        return self._steps()

    def _steps(self):
        from twisted.internet import defer, reactor, tcp

        if self._done is not None:
            return _chain(self._done)
        # stop accepting: new stations go to the other processes or wait for the restart
        for reader in reactor.getReaders():
            if isinstance(reader, tcp.Port):
                reader.stopListening()
        from stations import gateway

        gw = gateway.current()
        if gw is None:
            self._done = defer.succeed(None)
        else:
            job = asyncio.wait_for(gw.shutdown(), SHUTDOWN_TIMEOUT_S)
            self._done = defer.Deferred.fromFuture(asyncio.ensure_future(job, loop=gw.loop))
            self._done.addErrback(lambda f: log.error("graceful shutdown: %s", f.value))
        return _chain(self._done)


def _chain(deferred):
    """A Deferred firing when `deferred` does, without consuming its result."""
    from twisted.internet import defer

    out = defer.Deferred()
    deferred.addBoth(lambda result: (out.callback(None), result)[1])
    return out


# --- several processes -----------------------------------------------------------------------------
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
        raise CommandError(f"cannot listen on {host}:{port}: {exc.strerror}") from exc
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


# gen0 collections every 10,000 allocations, gen1 every 10 of those, gen2 every 1000 gen1s
GC_THRESHOLDS = (10_000, 10, 1000)


def _tune_gc() -> None:
    """Keep the cycle collector from pausing the event loop for hundreds of milliseconds.

    Frames are freed by reference counting; with Python's default thresholds the collector
    still ran a full (gen2) pass every few seconds under load, scanning every connection's
    objects: 170-210 ms pauses measured here, which set the latency p99. Objects that exist at
    start-up (Django, the URLconf, libraries) are frozen out of the scans; the rest are
    collected far less often (a full pass every ~100M allocations).
    """
    import gc

    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
