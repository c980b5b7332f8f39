"""Daphne WebSocket fixes: backpressure, every close code OCPP needs, and the close reason.

Backpressure: stop reading a socket while its consumer is behind.

Daphne hands every frame to the application's asyncio.Queue without a bound, so a station (or
a thousand) sending faster than the gateway can process grows memory without limit and starves
the event loop with reads. Here a connection stops reading (TCP pushes back on the sender) when
HIGH frames wait, and resumes when its consumer has taken the queue down to LOW.
"""

from daphne.ws_protocol import WebSocketFactory, WebSocketProtocol

HIGH_FRAMES = 32
LOW_FRAMES = 4
# bytes read from a socket at a time (Twisted reads 64 KiB): everything read is parsed into the
# queue at once, so this bounds what a paused flooder can have queued (~70 small frames)
READ_CHUNK_BYTES = 4096


class BackpressureWebSocketProtocol(WebSocketProtocol):
    _paused = False

    def applicationCreateWorked(self, application_queue):
        super().applicationCreateWorked(application_queue)
        self.transport.bufferSize = READ_CHUNK_BYTES
        original_get = application_queue._get

        # asyncio.Queue.get()/get_nowait() take items through _get(): resume reading from there
        def get():
            item = original_get()
            if self._paused and application_queue.qsize() <= LOW_FRAMES:
                self._paused = False
                self.transport.resumeProducing()
            return item

        application_queue._get = get

    def handle_reply(self, message):
        # Daphne drops the ASGI close reason; stations and tests rely on it ("replaced by ...")
        if message.get("type") == "websocket.close":
            self._close_reason = (message.get("reason") or "")[:120] or None
        super().handle_reply(message)

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

    def onMessage(self, payload, isBinary):
        super().onMessage(payload, isBinary)
        queue = getattr(self, "application_queue", None)
        if not self._paused and queue is not None and queue.qsize() >= HIGH_FRAMES:
            self._paused = True
            self.transport.pauseProducing()


def install() -> None:
    """Make Daphne's WebSocket factory build these protocols."""
    WebSocketFactory.protocol = BackpressureWebSocketProtocol
