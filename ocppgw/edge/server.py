"""Daphne's Server without its walks over every connection (~1.5% of a core at 5,000 idle
stations, of the gateway's ~3.9%). The same checks, each no later than Daphne's. A WebSocket's
input queue is a FrameQueue (ocppgw/edge/framequeue.py), not an asyncio.Queue."""

import asyncio
import logging
import math
import time
from concurrent.futures import CancelledError
from functools import partial

from daphne.server import Server  # installs the asyncio reactor: before twisted's reactor
from daphne.ws_protocol import WebSocketProtocol
from twisted.internet import reactor

from ocppgw.edge.framequeue import FrameQueue

logger = logging.getLogger("daphne.server")  # the messages are Daphne's

TICK_S = 2.0  # Daphne's timeout sweep: HTTP requests and WebSockets not yet (or no longer) open
# Connections a listening port takes per loop turn. Twisted grows its batch by 20 for every full
# one, without bound: in a reconnect storm a turn took in thousands of requests, and the
# handshakes already admitted waited behind all of them, a loop turn per step (a cold storm of
# 50,000 on three processes: no password check started in the first 20 s, bench/README.md, T9).
# The rest wait in the kernel's listen queue, in order, at no cost.
ACCEPTS_PER_TURN = 200
GRAIN_S = 1.0  # timeout checks run on a whole-second grid
APPLICATION_CHECK_S = 1.0  # Daphne's


# Daphne checks every connection's timeouts every 2 s and every application instance every 1 s.
# Here a connection's timeouts are checked when that can next change anything (an open WebSocket:
# when its ping falls due), and the application check visits only the connections with something
# to clean up (a finished application or a closed socket).
class GatewayServer(Server):
    """A Daphne Server whose idle connections cost nothing between their pings."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._due = {}  # grid time -> protocols whose check_timeouts() runs then
        self._due_at = {}  # protocol -> its grid time in _due
        self._to_check = set()  # protocols the application checker has to look at

    def listen_success(self, port):
        super().listen_success(port)
        if hasattr(port, "numberAccepts"):
            read = port.doRead

            def bounded_read():
                port.numberAccepts = min(port.numberAccepts, ACCEPTS_PER_TURN)
                return read()

            port.doRead = bounded_read

    # --- timeouts and pings ------------------------------------------------------------------------
    def protocol_connected(self, protocol):
        super().protocol_connected(protocol)
        self._schedule_timeouts(protocol)

    def protocol_disconnected(self, protocol):
        super().protocol_disconnected(protocol)
        at = self._due_at.pop(protocol, None)
        if at in self._due:
            self._due[at].discard(protocol)  # lets the protocol go now, not when it was due
        self._to_check.add(protocol)

    def timeout_checker(self):
        """Replaced by _check_timeouts() on a grid (see _schedule_timeouts); Daphne's run() calls it."""

    def _check_timeouts(self, at):
        for protocol in self._due.pop(at):
            if self._due_at.get(protocol) != at:  # closed by an earlier check in this batch
                continue
            del self._due_at[protocol]
            try:
                protocol.check_timeouts()
            finally:  # one failed check must not end the connection's keepalive
                self._schedule_timeouts(protocol)

    def _schedule_timeouts(self, protocol):
        details = self.connections.get(protocol)
        if details is None or "disconnected" in details:  # check_timeouts() may have closed it
            return
        now = time.time()
        due = now + TICK_S - GRAIN_S
        if isinstance(protocol, WebSocketProtocol) and protocol.state == protocol.STATE_OPEN:
            # check_timeouts() pings once last_ping (the last frame or ping) is ping_interval old
            due = protocol.last_ping + self.ping_interval
            if self.websocket_timeout >= 0:
                due = min(due, protocol.socket_opened + self.websocket_timeout)
        # strictly after `due`, on the grid: one wake-up a second at most (a wake-up per connection
        # cost more than Daphne's sweeps), and as autobahn rounds a ping's deadline down to a whole
        # second, a ping sent just after one keeps (almost) all of ping_timeout
        at = (math.floor(max(due, now) / GRAIN_S) + 1) * GRAIN_S
        batch = self._due.get(at)
        if batch is None:
            batch = self._due[at] = set()
            reactor.callLater(at - now, self._check_timeouts, at)
        batch.add(protocol)
        self._due_at[protocol] = at

    # --- finished applications ---------------------------------------------------------------------
    def create_application(self, protocol, scope):
        """Daphne's create_application (4.2), with a FrameQueue for a WebSocket's input."""
        if scope.get("type") != "websocket":
            queue = super().create_application(protocol, scope)
        else:
            assert "application_instance" not in self.connections[protocol]
            queue = FrameQueue()
            scope.setdefault("asgi", {"version": "3.0"})
            application = self.application(
                scope=scope, receive=queue.get, send=partial(self.handle_reply, protocol)
            )
            if protocol not in self.connections:
                application.close()  # never awaited: no "coroutine was never awaited" warning
                return None
            self.connections[protocol]["application_instance"] = asyncio.ensure_future(
                application, loop=asyncio.get_event_loop()
            )
        instance = self.connections.get(protocol, {}).get("application_instance")
        if instance is not None:
            instance.add_done_callback(lambda _: self._to_check.add(protocol))
        return queue

    def application_checker(self):
        """Daphne's application check, for the connections that have something to clean up."""
        for protocol in list(self._to_check):
            self._check_application(protocol)
            details = self.connections.get(protocol)
            if details is None or "disconnected" not in details:
                self._to_check.discard(protocol)  # an open socket comes back when it closes
        reactor.callLater(APPLICATION_CHECK_S, self.application_checker)

    def _check_application(self, protocol):
        # the body of Daphne 4.2's Server.application_checker() loop, for one connection
        details = self.connections.get(protocol)
        if details is None:
            return
        disconnected = details.get("disconnected", None)
        application_instance = details.get("application_instance", None)
        if disconnected and time.time() - disconnected > self.application_close_timeout:
            if application_instance and not application_instance.done():
                logger.warning(
                    "Application instance %r for connection %s took too long to shut down and "
                    "was killed.",
                    application_instance,
                    repr(protocol),
                )
                application_instance.cancel()
        if application_instance and application_instance.done():
            try:
                exception = application_instance.exception()
            except (CancelledError, asyncio.CancelledError):
                pass
            else:
                if exception:
                    if isinstance(exception, KeyboardInterrupt):
                        self.stop()
                    else:
                        logger.error(
                            "Exception inside application: %s", exception, exc_info=exception
                        )
                        if not disconnected:
                            protocol.handle_exception(exception)
            del details["application_instance"]
            application_instance = None
        if not application_instance and disconnected:
            del self.connections[protocol]
