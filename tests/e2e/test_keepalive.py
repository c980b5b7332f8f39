"""WebSocket keepalive through a real gateway: pings at the configured interval, dead peers closed."""

import asyncio
import base64
import os
import struct
import time

import pytest

from tests.conftest import PASSWORD, basic

pytestmark = pytest.mark.e2e

INTERVAL_S, TIMEOUT_S = 2, 2
KEEPALIVE_ENV = {"OCPPGW_PING_INTERVAL_S": str(INTERVAL_S), "OCPPGW_PING_TIMEOUT_S": str(TIMEOUT_S)}
# how late a ping may go after it falls due (the gateway's check granularity) plus a busy machine
LATE_S = 4


class RawStation:
    """A bare WebSocket client, so that the test decides whether pings get their pong."""

    def __init__(self, reader, writer):
        self.reader, self.writer = reader, writer
        self.opened = time.monotonic()
        self.pings: list[float] = []  # seconds after the handshake

    @classmethod
    async def open(cls, gw, cid: str) -> "RawStation":
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(
            (
                f"GET /ocpp/{cid} HTTP/1.1\r\nHost: 127.0.0.1:{gw.port}\r\n"
                "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                f"Sec-WebSocket-Protocol: ocpp1.6\r\nAuthorization: {basic(cid, PASSWORD)}\r\n\r\n"
            ).encode()
        )
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        assert head.startswith(b"HTTP/1.1 101"), head
        return cls(reader, writer)

    async def run(self, answer: bool) -> float:
        """Read frames until the gateway drops the socket; the seconds it stayed open."""
        try:
            while True:
                b0, b1 = await self.reader.readexactly(2)
                size = b1 & 0x7F
                if size >= 126:
                    raw = await self.reader.readexactly(2 if size == 126 else 8)
                    size = int.from_bytes(raw, "big")
                payload = await self.reader.readexactly(size)
                if b0 & 0x0F == 0x9:
                    self.pings.append(time.monotonic() - self.opened)
                    if answer:  # a client's frames are masked (RFC 6455 §5.3)
                        mask = os.urandom(4)
                        masked = bytes(c ^ mask[i % 4] for i, c in enumerate(payload))
                        self.writer.write(struct.pack("!BB", 0x8A, 0x80 | size) + mask + masked)
        except (asyncio.IncompleteReadError, ConnectionError):
            return time.monotonic() - self.opened

    def close(self) -> None:
        self.writer.close()


async def test_ping_timeout_closes_a_dead_station_and_spares_one_that_answers(
    gateway_factory, pool
):
    [gw] = gateway_factory(KEEPALIVE_ENV)
    dead = await RawStation.open(gw, pool.take())
    alive = await RawStation.open(gw, pool.take())
    alive_run = asyncio.ensure_future(alive.run(answer=True))
    try:
        lived = await asyncio.wait_for(dead.run(answer=False), INTERVAL_S + TIMEOUT_S + LATE_S + 5)
        assert dead.pings, "closed without being pinged"
        assert dead.pings[0] >= INTERVAL_S - 0.5, dead.pings  # not before the interval of silence
        # autobahn rounds the ping's deadline down to a whole second
        assert lived - dead.pings[-1] >= TIMEOUT_S - 1, (lived, dead.pings)
        assert lived <= INTERVAL_S + TIMEOUT_S + LATE_S, (lived, dead.pings)

        await asyncio.sleep(3 * INTERVAL_S + TIMEOUT_S - (time.monotonic() - alive.opened))
        assert not alive_run.done(), f"a station answering pings was closed: {alive.pings}"
        assert len(alive.pings) >= 2, alive.pings
        gaps = [b - a for a, b in zip(alive.pings, alive.pings[1:], strict=False)]
        assert all(INTERVAL_S - 0.5 <= gap <= INTERVAL_S + LATE_S for gap in gaps), alive.pings
    finally:
        alive_run.cancel()
        dead.close()
        alive.close()
