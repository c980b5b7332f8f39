"""A station socket as the conversation sees it: `send(text)` and `close(code, reason)`, both sync.

Daphne's ASGI `send` is a coroutine that only calls the Twisted protocol's `handle_reply`; the
conversation's callers (frame handlers, timers, broker callbacks) are not async, and a task per
frame costs ~4 objects and a loop step. So the writer calls the protocol directly, as Daphne
would, and falls back to a task for any other ASGI server (or the test communicator).
"""

import asyncio
import functools
import logging

from ocppgw.edge.framequeue import FrameQueue

log = logging.getLogger("ocppgw.consumer")


class SocketWriter:
    """Writes ASGI messages to one WebSocket without awaiting."""

    __slots__ = ("_fast", "_send", "label")

    def __init__(self, asgi_send, label: str = ""):
        self._send, self.label = asgi_send, label
        self._fast = None
        if isinstance(asgi_send, functools.partial) and asgi_send.func.__name__ == "handle_reply":
            self._fast = (asgi_send.func.__self__, asgi_send.args[0])  # (server, protocol)

    def send(self, text: str) -> None:
        """Send one text frame."""
        self._write({"type": "websocket.send", "text": text})

    def close(self, code: int, reason: str | None = None) -> None:
        """Close with `code` (any code OCPP needs, see wsprotocol.serverClose) and a reason."""
        message = {"type": "websocket.close", "code": code}
        if reason:
            message["reason"] = reason
        self._write(message)

    def _write(self, message: dict) -> None:
        if self._fast is not None:
            server, protocol = self._fast
            state = server.connections.get(protocol)
            if state is None or state.get("disconnected"):
                return
            try:
                protocol.handle_reply(message)
            except Exception as exc:
                log.debug("%s: write on a closing socket: %s", self.label, exc)
        else:
            asyncio.get_running_loop().create_task(self._quietly(self._send(message)))

    async def _quietly(self, operation) -> None:
        # the socket may close between a decision and its write: disconnect() then follows,
        # which answers the station's pending work; nothing to do here but not to raise
        try:
            await operation
        except Exception as exc:
            log.debug("%s: write on a closing socket: %s", self.label, exc)


def backlog(asgi_receive):
    """The queue Daphne fills with a connection's frames (for its size), or None elsewhere."""
    queue = getattr(asgi_receive, "__self__", None)
    return queue if isinstance(queue, (FrameQueue, asyncio.Queue)) else None
