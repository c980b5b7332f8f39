"""A minimal WebSocket client for the scale run's tens of thousands of stations (RFC 6455).

The `websockets` client spent about as much CPU per handshake as the gateway did to serve it: in
a reconnect storm of 30,000 on two gateway processes the gateway had sent 7,500 "101 Switching
Protocols" per process within 8 s while the generator, its two processes saturated, counted the
first one done only after 19 s (bench/README.md, T9). On two shared cores that measures the
generator, so the scale run's stations speak the protocol here instead: a fixed upgrade request,
the response's status line and Sec-WebSocket-Accept checked, masked text frames out (a random
key per frame, as the RFC requires), text, ping (answered with a pong) and close frames in.
Nothing else: no extensions, no fragmentation (the gateway never fragments its small frames).
"""

import asyncio
import base64
import contextlib
import hashlib
import os
import struct

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
TEXT, CLOSE, PING, PONG = 0x1, 0x8, 0x9, 0xA


class Refused(Exception):
    """The server answered the upgrade with an HTTP status other than 101."""

    def __init__(self, status: int):
        super().__init__(f"HTTP {status}")
        self.status = status


class ClosedInHandshake(Exception):
    """The server accepted the upgrade and closed at once (a close frame with `code`)."""

    def __init__(self, code: int | None):
        super().__init__(f"closed {code}")
        self.code = code


def accept_key(key: bytes) -> bytes:
    """The Sec-WebSocket-Accept a server must answer to Sec-WebSocket-Key `key`."""
    return base64.b64encode(hashlib.sha1(key + GUID).digest())


def upgrade_request(host: str, path: str, key: bytes, headers: dict[str, str]) -> bytes:
    lines = [
        f"GET {path} HTTP/1.1",
        f"Host: {host}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key.decode()}",
        "Sec-WebSocket-Version: 13",
        *(f"{k}: {v}" for k, v in headers.items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def client_frame(opcode: int, payload: bytes, mask: bytes | None = None) -> bytes:
    """One final, masked frame (a client must mask every frame)."""
    mask = mask or os.urandom(4)
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
    elif n < 65536:
        head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
    key = int.from_bytes((mask * (n // 4 + 1))[:n], "big") if n else 0
    masked = (int.from_bytes(payload, "big") ^ key).to_bytes(n, "big") if n else b""
    return head + mask + masked


def parse_frames(buf: bytearray) -> list[tuple[int, bytes]]:
    """Take every complete (unmasked, server) frame off the front of `buf`: [(opcode, payload)]."""
    out = []
    while len(buf) >= 2:
        opcode, n = buf[0] & 0x0F, buf[1] & 0x7F
        at = 2
        if n == 126:
            if len(buf) < 4:
                break
            (n,) = struct.unpack_from("!H", buf, 2)
            at = 4
        elif n == 127:
            if len(buf) < 10:
                break
            (n,) = struct.unpack_from("!Q", buf, 2)
            at = 10
        if len(buf) < at + n:
            break
        out.append((opcode, bytes(buf[at : at + n])))
        del buf[: at + n]
    return out


class Station(asyncio.Protocol):
    """One client connection: `opened` resolves once the server's 101 was checked."""

    def __init__(self, request: bytes, key: bytes, on_text=None):
        self.request, self.expect = request, accept_key(key)
        self.on_text = on_text  # called with each text message's str, if set
        self.opened = asyncio.get_running_loop().create_future()
        self.lost = asyncio.get_running_loop().create_future()
        self.buf = bytearray()
        self.open = self.closing = False
        self.close_code: int | None = None  # None while open (as websockets' attribute)
        self.transport = None

    def connection_made(self, transport):
        self.transport = transport
        transport.write(self.request)

    def data_received(self, data):
        self.buf += data
        opening = not self.open
        if opening and not self._handshake():
            return
        for opcode, payload in parse_frames(self.buf):
            if opcode == TEXT and self.on_text is not None:
                self.on_text(self, payload.decode())
            elif opcode == PING:
                self.transport.write(client_frame(PONG, payload))
            elif opcode == CLOSE:
                self.close_code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
                if not self.opened.done():
                    self.opened.set_exception(ClosedInHandshake(self.close_code))
                if not self.closing:  # else this answers our own close frame
                    self.transport.write(client_frame(CLOSE, payload[:2]))
                self.transport.close()
        # set after this chunk's frames: a close frame that came with the 101 fails the handshake
        if opening and not self.opened.done():
            self.opened.set_result(self)

    def _handshake(self) -> bool:
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            return False
        head = bytes(self.buf[:end]).decode("latin-1").split("\r\n")
        del self.buf[: end + 4]
        status = int(head[0].split(" ", 2)[1])
        headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in head[1:])}
        if status != 101 or headers.get("sec-websocket-accept", "").encode() != self.expect:
            self.opened.set_exception(Refused(status if status != 101 else 0))
            self.transport.close()
            return False
        self.open = True
        return True

    def connection_lost(self, exc):
        if self.close_code is None:
            self.close_code = 1006
        if not self.opened.done():
            self.opened.set_exception(exc or ConnectionResetError("closed during the handshake"))
        if not self.lost.done():
            self.lost.set_result(None)

    def send(self, text: str) -> bool:
        """Write one text message; False when the connection is already closed."""
        if self.close_code is not None or self.transport.is_closing():
            return False
        self.transport.write(client_frame(TEXT, text.encode()))
        return True

    async def close(self) -> None:
        """Close handshake (1000), then the socket; aborted if the server does not answer in 2 s."""
        if self.close_code is None and not self.transport.is_closing():
            self.closing = True
            self.transport.write(client_frame(CLOSE, struct.pack("!H", 1000)))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self.lost), 2.0)
        self.transport.abort()


async def open_station(sock, host: str, path: str, headers: dict[str, str], on_text=None):
    """Upgrade the connected socket `sock`; the open Station, else Refused/ClosedInHandshake/OSError."""
    key = base64.b64encode(os.urandom(16))
    request = upgrade_request(host, path, key, headers)
    loop = asyncio.get_running_loop()
    _, station = await loop.create_connection(lambda: Station(request, key, on_text), sock=sock)
    try:
        return await station.opened
    except BaseException:
        station.transport.abort()
        raise
