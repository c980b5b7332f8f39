"""Daphne WebSocket fixes: backpressure, every close code OCPP needs, the close reason, prompt writes,
and a storm's "not now" answered as plain HTTP before any WebSocket protocol is built.

Backpressure: stop reading a socket while its consumer is behind, or while the station is not
reading what we send it.

Daphne hands every frame to the application's asyncio.Queue without a bound, so a station (or
a thousand) sending faster than the gateway can process grows memory without limit and starves
the event loop with reads. Here a connection stops reading (TCP pushes back on the sender) when
HIGH frames wait, and resumes when its consumer has taken the queue down to LOW. Likewise a
flooding station that does not read its answers (CALLERRORs, "rate limit") would pile them up
in Twisted's write buffer: the protocol is registered as the transport's producer, so a full
write buffer also stops reading until the station has taken its answers.
"""

import pprint

from autobahn.websocket import protocol as autobahn_protocol
from daphne import http_protocol
from daphne.ws_protocol import WebSocketFactory, WebSocketProtocol
from twisted.internet import tcp
from twisted.internet.interfaces import IPushProducer
from zope.interface import implementer

HIGH_FRAMES = 8
LOW_FRAMES = 2
# bytes read from a socket at a time (Twisted reads 64 KiB): everything read is parsed into the
# queue at once, so this bounds what a paused flooder has queued (~10 small frames); with a
# thousand flooders 4 KiB reads held 1.6x the idle memory, 512 B reads 1.4x
READ_CHUNK_BYTES = 512


@implementer(IPushProducer)
class _UnreadAnswers:
    """Twisted calls this when the write buffer passes bufferSize, and again once it drained."""

    def __init__(self, protocol):
        self.protocol = protocol

    def pauseProducing(self):
        self.protocol.pause_reading("unread")

    def resumeProducing(self):
        self.protocol.resume_reading("unread")

    def stopProducing(self):
        pass


class _Formatted:
    """pprint.pformat(obj), computed only if a log line is really written."""

    __slots__ = ("obj",)

    def __init__(self, obj):
        self.obj = obj

    def __format__(self, spec):
        return format(pprint.pformat(self.obj), spec)

    __str__ = __repr__ = lambda self: pprint.pformat(self.obj)


# (raw path, Authorization header) -> seconds for Retry-After to refuse the upgrade with 503
# before a WebSocket protocol or an application is built (EdgeRequest), or None; set by the
# gateway once it runs (serve.py)
early_refusal = None
# After such a refusal the process stops accepting for this long. With `--processes N` the
# kernel hands each connection to whichever process accepts first, full or not: a full process
# kept taking (and refusing) a storm's connections that another had room for (bench/README.md,
# T9). Paused, it leaves them to the others; if all are full, a station waits this long in the
# kernel's queue, then gets its 503.
PAUSE_AFTER_REFUSAL_S = 0.2
_paused_ports: set = set()
# WebSocket sockets this process holds open, handshakes included: what its fd limit bounds
# (stations/admission.py counts them against the process's station limit). A socket leaves the
# count when Twisted closes it, not once its consumer has caught up: in a reconnect storm every
# old socket closes at once, their consumers took seconds, and meanwhile the new connections of
# the same stations were counted twice and refused (bench/README.md, T9)
open_sockets = 0
# WebSocket handshakes in progress (the request handed over, not yet open nor closed). Counted the
# moment Daphne hands a request over: a storm's burst is parsed in one loop turn, before any
# application has run, so the password checks queued (stations/gatekeeper.py) still read 0 while
# thousands more pass; admission.refuse_early bounds the burst with this count instead
handshakes = 0


def _pause_accepting(port) -> None:
    from twisted.internet import reactor

    if port is None or port in _paused_ports:
        return
    _paused_ports.add(port)
    port.stopReading()

    def resume():
        _paused_ports.discard(port)
        if port.connected and not port.disconnecting:  # not once it stopped listening
            port.startReading()

    reactor.callLater(PAUSE_AFTER_REFUSAL_S, resume)


class BackpressureWebSocketProtocol(WebSocketProtocol):
    _paused_by: frozenset = frozenset()  # "queue" (consumer behind), "unread" (write buffer)
    _counted = False  # in open_sockets
    _handshaking = False  # in handshakes

    def _connectionMade(self):
        # autobahn pretty-prints its ~40 options for a debug line on every new connection, even
        # with debug off: 3.7% of the gateway's CPU in a reconnect storm (py-spy, bench T9
        # storm profile in bench/README.md). Formatted only when written; the reactor is one
        # thread, so the swap cannot leak into another call
        autobahn_protocol.pformat = _Formatted
        try:
            super()._connectionMade()
        finally:
            autobahn_protocol.pformat = pprint.pformat
        global open_sockets, handshakes
        open_sockets += 1
        handshakes += 1
        self._counted = self._handshaking = True

    def _handshake_over(self):
        global handshakes
        if self._handshaking:
            handshakes -= 1
            self._handshaking = False

    def onOpen(self):
        self._handshake_over()
        super().onOpen()

    def applicationCreateWorked(self, application_queue):
        super().applicationCreateWorked(application_queue)
        # also the write-buffer mark at which the producer is paused
        self.transport.bufferSize = READ_CHUNK_BYTES
        # the HTTP channel that handed the socket over stays registered, but never pauses an
        # upgraded connection (it is "handling a request" for good): take its place
        channel = getattr(self.transport, "producer", None)
        if channel is not None:
            self.transport.unregisterProducer()
            # the channel and its upgraded request refer to each other: a cycle that outlived
            # the socket until a full GC pass (rare in rungateway); the channel is done here
            channel.requests = []
        self.transport.registerProducer(_UnreadAnswers(self), True)
        application_queue.reader = self  # a FrameQueue (ocppgw/edge/server.py): frames_taken()

    def frames_taken(self, left: int) -> None:
        """The consumer took a frame, `left` wait: resume reading once it has caught up."""
        if left <= LOW_FRAMES and "queue" in self._paused_by:
            self.resume_reading("queue")

    def pause_reading(self, why: str) -> None:
        if not self._paused_by:
            self.transport.pauseProducing()
        self._paused_by |= {why}

    def resume_reading(self, why: str) -> None:
        if why in self._paused_by:
            self._paused_by -= {why}
            if not self._paused_by:
                self.transport.resumeProducing()

    def _closeConnection(self, abort=False):
        # with a producer registered, Twisted keeps a closing socket open once its buffer drains
        if getattr(self.transport, "producer", None) is not None:
            self.transport.unregisterProducer()
        super()._closeConnection(abort)

    def connectionLost(self, reason):
        global open_sockets
        if self._counted:
            open_sockets -= 1
            self._counted = False
        self._handshake_over()
        super().connectionLost(reason)
        # Break this connection's reference cycles (the queue's reader is the protocol,
        # autobahn's is_open/is_closed Deferreds hold it as their result): rungateway collects
        # cycles rarely (its GC tuning), and closed connections piled up at ~25 KB each
        queue = getattr(self, "application_queue", None)
        if queue is not None:
            queue.reader = None
        self.is_open = self.is_closed = None

    def handle_reply(self, message):
        # Daphne drops the ASGI close reason; stations and tests rely on it ("replaced by ...")
        if message.get("type") == "websocket.close":
            self._close_reason = (message.get("reason") or "")[:120] or None
            if message.get("code") == 1013 and self.state == self.STATE_CONNECTING:
                # "try again later" before the upgrade: Daphne would answer 403 (its
                # serverReject); the station is told 503 and when to retry (docs/contract.md §1)
                self._retry_after = int(message.get("retry_after") or 10)
        super().handle_reply(message)

    def failHandshake(self, reason, code=400, responseHeaders=None):
        retry_after = getattr(self, "_retry_after", None)
        # Daphne's serverReject of a 1013 close (403)
        if retry_after is not None and code == 403:
            code, reason = 503, "Service Unavailable"
            responseHeaders = [*(responseHeaders or []), ("Retry-After", str(retry_after))]
        super().failHandshake(reason, code, responseHeaders)

    def serverClose(self, code=None):
        # autobahn's sendClose() takes only 1000 and 3000-4999 from an application and raises on
        # the codes OCPP needs (1001 shutdown, 1002, 1003, 1008, 1009, 1013), which RFC 6455
        # §7.4.1 lets an endpoint send: write the close frame directly for those
        code = 1000 if code is None else code
        reason = getattr(self, "_close_reason", None)
        if code == 1000 or 3000 <= code <= 4999:
            self.sendClose(code=code, reason=reason)
        else:
            self.sendCloseFrame(
                code=code, reasonUtf8=reason.encode() if reason else None, isReply=False
            )

    def sendData(self, data, sync=False, chopsize=None):
        # Twisted only buffers a write and sends it when the loop next finds the socket writable:
        # three system calls (watch, send, unwatch) and a loop turn per frame. A frame (an answer,
        # a ping) with nothing queued before it goes out at once; what the kernel does not take
        # is buffered as before, so order and backpressure are unchanged.
        if not (sync or chopsize or self.send_queue) and _write_at_once(self.transport, data):
            return
        super().sendData(data, sync, chopsize)

    def onMessage(self, payload, isBinary):
        super().onMessage(payload, isBinary)
        queue = getattr(self, "application_queue", None)
        if queue is not None and queue.qsize() >= HIGH_FRAMES and "queue" not in self._paused_by:
            self.pause_reading("queue")


def _write_at_once(transport, data: bytes) -> bool:
    """Send on a plain TCP socket with an empty write buffer; False leaves it to Twisted."""
    if (
        type(transport) is not tcp.Server  # TLS and other transports buffer on their own
        or transport.dataBuffer
        or transport._tempDataBuffer
        or transport.disconnecting
        or transport._writeDisconnected
        or not transport.connected
    ):
        return False
    try:
        sent = transport.socket.send(data)
    except OSError:  # full (EAGAIN) or broken: Twisted's write path retries or reports the loss
        return False
    if sent < len(data):
        transport.write(data[sent:])
    return True


class EdgeRequest(http_protocol.WebRequest):
    """Daphne's HTTP request, answering a storm's "not now" itself (`early_refusal`).

    Refused here, an upgrade costs Twisted's parse of the request and a 503: no autobahn
    protocol is built, the request is not parsed a second time, no Deferreds are chained. A
    storm refuses more handshakes than it admits (a cold one of 17,000 on one process: ~30,000
    refusals, bench/README.md, T9), so their cost decides how soon the admitted ones finish.
    """

    def process(self):
        retry_after = self._retry_after()
        if retry_after is None:
            return super().process()
        _pause_accepting(getattr(self.transport, "server", None))
        self.setResponseCode(503)
        self.setHeader(b"Retry-After", str(retry_after).encode())
        self.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
        self.setHeader(b"Content-Length", b"%d" % len(REFUSED_BODY))
        self.setHeader(b"Connection", b"close")
        self.channel.persistent = False  # closed once the answer is written
        self.write(REFUSED_BODY)
        self.finish()  # also takes the request out of Daphne's server (protocol_disconnected)
        return None

    def _retry_after(self) -> int | None:
        if early_refusal is None:
            return None
        headers = self.requestHeaders
        upgrade = headers.getRawHeaders(b"upgrade")
        if not upgrade or upgrade[0].lower() != b"websocket":
            return None
        authorization = headers.getRawHeaders(b"authorization")
        return early_refusal(self.path, authorization[0] if authorization else None)


REFUSED_BODY = b"Service Unavailable: retry after the time in Retry-After\n"


def install() -> None:
    """Make Daphne build these requests and WebSocket protocols."""
    # Daphne's HTTPFactory.buildProtocol looks the request class up in its module on each call
    http_protocol.WebRequest = EdgeRequest
    WebSocketFactory.protocol = BackpressureWebSocketProtocol
