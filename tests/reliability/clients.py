"""Raw WebSocket charge points for the reliability suite: they send frames and record answers."""

import asyncio
import base64
import json
import time

import websockets
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus


def basic(cid: str, password: str) -> dict:
    token = base64.b64encode(f"{cid}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


class Station:
    """One charge point: a raw websocket plus a reader task that records every frame received."""

    def __init__(self, url: str, cid: str, *, version="ocpp1.6", headers=None, ssl=None):
        self.url, self.cid, self.version = url, cid, version
        self.headers, self.ssl = headers or {}, ssl
        self.ws = None
        self.local_addr: tuple[str, int] | None = None  # bind the client side (source address)
        self.received: list[tuple[float, object]] = []  # (monotonic time, parsed frame or text)
        self.close_code: int | None = None
        self.closed = asyncio.Event()
        self._reader: asyncio.Task | None = None

    async def open(self, timeout_s: float = 20) -> "Station":
        kwargs = {"ssl": self.ssl} if self.ssl else {}
        if self.local_addr:
            kwargs["local_addr"] = self.local_addr
        self.ws = await connect(
            self.url,
            subprotocols=[self.version],
            additional_headers=self.headers,
            open_timeout=timeout_s,
            ping_interval=None,
            max_size=2**22,
            **kwargs,
        )
        self._reader = asyncio.get_running_loop().create_task(self._read())
        return self

    async def _read(self) -> None:
        try:
            async for text in self.ws:
                try:
                    frame = json.loads(text)
                except ValueError:
                    frame = text
                self.received.append((time.monotonic(), frame))
        except ConnectionClosed:
            pass
        finally:
            self.close_code = self.ws.close_code
            self.closed.set()

    async def send(self, frame) -> bool:
        """Send a frame (a list is JSON-encoded); False when the socket is already closed."""
        try:
            await self.ws.send(frame if isinstance(frame, str) else json.dumps(frame))
            return True
        except ConnectionClosed:
            return False

    def answers(self) -> dict[str, list[tuple[float, list]]]:
        """CALLRESULT/CALLERROR frames received, by UniqueId."""
        out: dict[str, list] = {}
        for at, frame in self.received:
            if isinstance(frame, list) and frame and frame[0] in (3, 4) and len(frame) > 1:
                out.setdefault(frame[1], []).append((at, frame))
        return out

    def calls(self) -> list[list]:
        """CALLs received from the gateway (backend commands)."""
        return [f for _, f in self.received if isinstance(f, list) and f and f[0] == 2]

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()
        if self._reader is not None:
            try:
                await asyncio.wait_for(self._reader, 5)
            except (TimeoutError, asyncio.CancelledError):
                self._reader.cancel()


async def refused_status(
    url: str, headers=None, version="ocpp1.6", ssl=None, local_addr=None
) -> int | None:
    """The HTTP status of a refused handshake, or None when the WebSocket opened."""
    kwargs = {"ssl": ssl} if ssl else {}
    if local_addr:
        kwargs["local_addr"] = local_addr
    try:
        async with connect(
            url, subprotocols=[version], additional_headers=headers or {}, open_timeout=20, **kwargs
        ):
            return None
    except InvalidStatus as exc:
        return exc.response.status_code


async def open_all(stations: list[Station], batch: int = 50) -> None:
    for i in range(0, len(stations), batch):
        await asyncio.gather(*(s.open() for s in stations[i : i + batch]))


async def close_all(stations: list[Station]) -> None:
    await asyncio.gather(*(s.close() for s in stations), return_exceptions=True)


__all__ = ["Station", "basic", "close_all", "open_all", "refused_status", "websockets"]
