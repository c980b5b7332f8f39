"""One gateway process on Daphne: the server with the settings a gateway needs, and its ordered stop.

Graceful shutdown (SIGTERM/SIGINT) is ours, not Daphne's: Daphne cancels consumers without
calling disconnect(). We stop listening, publish "disconnected" for every station held (the
broker acknowledges it), flush the message log, close the sockets, publish the node's "offline"
status and disconnect from the broker cleanly, and only then stop the reactor.
"""

import asyncio
import logging
import os
import signal
import sys

from django.conf import settings

log = logging.getLogger("ocppgw.rungateway")

# Connections the kernel completes and queues for accept(). Past it a reconnect storm's SYNs are
# dropped and their stations wait out TCP's SYN back-off (1, 3, 7, 15 s); 2048 overflowed in a
# storm of 30,000 here (bench/README.md, T9). The kernel caps it at net.core.somaxconn (README.md,
# "Many stations on one node").
LISTEN_BACKLOG = 65535
ADMIN_BACKLOG = 128
CONNECT_TIMEOUT_S = 60  # longer than an uncached password check queued behind others
SHUTDOWN_TIMEOUT_S = 20  # the graceful steps; then the reactor stops regardless


def endpoints(host: str, port: int, admin_port: int, fd=None, admin_fd=None) -> list[str]:
    """Twisted endpoint strings: adopted sockets (a supervisor's child) or fresh listeners."""
    if fd is not None:  # the (IPv4) sockets a supervisor created
        return [f"fd:fileno={fd}"] + ([f"fd:fileno={admin_fd}"] if admin_fd is not None else [])
    interface = host.replace(":", r"\:")
    out = [f"tcp:port={port}:interface={interface}:backlog={LISTEN_BACKLOG}"]
    if admin_port:
        out.append(f"tcp:port={admin_port}:interface={interface}:backlog={ADMIN_BACKLOG}")
    return out


def serve(endpoint_list: list[str], on_ready, *, supervised: bool = False) -> None:
    """Run Daphne with the gateway's protocol and server until a graceful stop; never returns."""
    import daphne.server  # noqa: F401  installs the asyncio reactor: import it first
    from twisted.internet import reactor, task

    from ocppgw.asgi import application
    from ocppgw.edge import wsprotocol
    from ocppgw.edge.server import GatewayServer

    wsprotocol.install()
    stopper = GracefulStop()

    def ready():
        # a frame over the limit gets a close frame with 1009 (docs/contract.md §1), not a drop
        server.ws_factory.setProtocolOptions(failByDrop=False)
        on_ready()
        # start the gateway (MQTT, log writer) now rather than on the first station
        reactor.callLater(0, _start_gateway)

    server = GatewayServer(
        application=application,
        endpoints=endpoint_list,
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
        ready_callable=ready,
    )
    for signum in (signal.SIGTERM, signal.SIGINT):  # before run(): a child may be told at once
        signal.signal(
            signum, lambda n, _f: reactor.callFromThread(stopper.begin, signal.strsignal(n))
        )
    # any other way the reactor stops still gets the graceful steps (Daphne's own
    # trigger, registered later in run(), cancels consumers at the same time)
    reactor.addSystemEventTrigger("before", "shutdown", stopper.before_shutdown)
    if supervised:
        parent = os.getppid()
        orphan_check = task.LoopingCall(
            lambda: os.getppid() != parent and stopper.begin("supervisor gone")
        )
        orphan_check.start(1.0, now=False)
    _warm_schemas()
    _tune_gc()
    server.run()
    # everything that matters is flushed and closed by now; don't let interpreter exit wait
    # for executor threads still compiling schemas (seconds on a busy machine)
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _warm_schemas() -> None:
    """Compile the schemas of a connecting station's frames before listening (before /readyz answers).

    Compiled lazily, a restarted process paid them during the reconnect storm that follows a
    restart: 15-20% of its CPU there (bench/README.md, T9). The supervisor's socket queues
    connections meanwhile (LISTEN_BACKLOG).
    """
    import time

    from stations import validation

    started = time.monotonic()
    count = sum(
        validation.warm_boot_path(name.removeprefix("ocpp"))
        for name in settings.OCPPGW_SUBPROTOCOLS
    )
    log.info("compiled %d OCPP schemas in %.1f s", count, time.monotonic() - started)


def _start_gateway():
    from stations import gateway

    async def start():
        from ocppgw.edge import wsprotocol

        gw = gateway.get_gateway()
        # a storm's retryable refusals are answered before Daphne builds an application
        wsprotocol.early_refusal = gw.refuse_early
        gw.open_sockets = lambda: wsprotocol.open_sockets  # places taken (admission.py)
        gw.edge_handshakes = lambda: wsprotocol.handshakes  # a storm's burst (admission.py)

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
            timeout_s = SHUTDOWN_TIMEOUT_S + gw.settings.OCPPGW_DRAIN_S
            job = asyncio.wait_for(gw.shutdown(), timeout_s)
            self._done = defer.Deferred.fromFuture(asyncio.ensure_future(job, loop=gw.loop))
            self._done.addErrback(lambda f: log.error("%s", failed_shutdown(f.value, timeout_s)))
        return _chain(self._done)


def failed_shutdown(error: BaseException, timeout_s: float) -> str:
    """The log line of a graceful shutdown that did not finish: a timeout says how long it was
    given (its str() is empty: the bench's stops after a storm logged "graceful shutdown: ")."""
    if isinstance(error, TimeoutError):
        return (
            f"graceful shutdown not finished within {timeout_s:.0f} s "
            "(SHUTDOWN_TIMEOUT_S + OCPPGW_DRAIN_S): the stations left are cut off by the exit"
        )
    return f"graceful shutdown failed: {error!r}"


def _chain(deferred):
    """A Deferred firing when `deferred` does, without consuming its result."""
    from twisted.internet import defer

    out = defer.Deferred()
    deferred.addBoth(lambda result: (out.callback(None), result)[1])
    return out


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
