"""A station that stops reading its answers: the gateway stops reading it (TCP pushes back) with
its memory in bounds, and once the station reads again every answer arrives, in order: answers
the kernel took whole, in part, or not at all leave through one ordered path."""

import base64
import json
import os
import socket
import struct
import time

import psutil
import pytest

from tests.conftest import PASSWORD, basic

pytestmark = pytest.mark.e2e

SMALL_BUFFER = 4096  # the station's socket buffers


def _open(port: int, cid: str) -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SMALL_BUFFER)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SMALL_BUFFER)
    sock.settimeout(10)
    sock.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            f"GET /ocpp/{cid} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            f"Sec-WebSocket-Protocol: ocpp1.6\r\nAuthorization: {basic(cid, PASSWORD)}\r\n\r\n"
        ).encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)  # byte by byte: nothing after the head may be taken here
    assert head.startswith(b"HTTP/1.1 101"), head
    return sock


def _masked(text: str) -> bytes:
    """A client text frame (RFC 6455 §5.3: masked), payloads under 126 bytes."""
    payload, mask = text.encode(), os.urandom(4)
    assert len(payload) < 126
    return (
        struct.pack("!BB", 0x81, 0x80 | len(payload))
        + mask
        + bytes(c ^ mask[i % 4] for i, c in enumerate(payload))
    )


class _Reader:
    """Text frames from the gateway (unmasked), kept whole across reads; pings are skipped."""

    def __init__(self, sock: socket.socket):
        self.sock, self.buffer = sock, b""

    def frames(self, want: int, timeout_s: float) -> list:
        out, deadline = [], time.monotonic() + timeout_s
        while len(out) < want and time.monotonic() < deadline:
            self.buffer += self.sock.recv(65536)
            while len(out) < want and len(self.buffer) >= 2:
                size, at = self.buffer[1] & 0x7F, 2
                if size >= 126:
                    width = 2 if size == 126 else 8
                    if len(self.buffer) < 2 + width:
                        break
                    size, at = int.from_bytes(self.buffer[2 : 2 + width], "big"), 2 + width
                if len(self.buffer) < at + size:
                    break
                opcode, payload = self.buffer[0] & 0x0F, self.buffer[at : at + size]
                self.buffer = self.buffer[at + size :]
                if opcode == 0x1:
                    out.append(json.loads(payload))
        return out


def test_a_station_that_stops_reading_is_paused_then_gets_every_answer_in_order(
    shared_gateway, pool
):
    sock = _open(shared_gateway.port, pool.take())
    gateway, reader = psutil.Process(shared_gateway.proc.pid), _Reader(sock)
    warm_up = 2000  # answered and read: the gateway's first-use allocations come before the count
    for batch in range(0, warm_up, 20):
        sock.sendall(
            b"".join(_masked(json.dumps([2, f"w{k}", "Heartbeat", {}, "x"])) for k in range(20))
        )
        assert len(reader.frames(20, timeout_s=10)) == 20, batch
    time.sleep(1.5)  # the message log's flush
    rss_before = gateway.memory_info().rss
    sock.setblocking(False)
    sent, rest, stalled_since = 0, b"", None
    # the kernel's buffers on the gateway's side grow to a few MB first: 40k-120k frames
    give_up = time.monotonic() + 60
    # malformed CALLs (a fifth element): each is answered at once with a CALLERROR
    while True:
        assert time.monotonic() < give_up, f"the gateway never pushed back ({sent} frames)"
        data = rest or _masked(json.dumps([2, f"u{sent}", "Heartbeat", {}, "x"]))
        try:
            taken = sock.send(data)
        except BlockingIOError:
            taken = 0
        rest = data[taken:]
        if not rest:
            sent, stalled_since = sent + 1, None
            continue
        stalled_since = stalled_since or time.monotonic()
        if time.monotonic() - stalled_since > 2:
            break  # the gateway has stopped taking this station's frames for 2 s
        time.sleep(0.05)
    rss_paused = gateway.memory_info().rss
    sock.setblocking(True)
    sock.settimeout(10)
    answers = reader.frames(sent, timeout_s=60)  # reading again: the gateway reads again
    sock.sendall(rest)
    answers += reader.frames(1, timeout_s=10)
    sock.close()
    assert sent > 100, sent
    assert [a[1] for a in answers] == [f"u{k}" for k in range(sent + 1)]
    assert {a[0] for a in answers} == {4}
    assert rss_paused - rss_before < 20 * 2**20, (rss_before, rss_paused, sent)
