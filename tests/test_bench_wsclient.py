"""bench/wsclient.py, the scale run's lean WebSocket client, against a real `websockets` server."""

import asyncio
import socket
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
wsclient = pytest.importorskip("wsclient")
serve = pytest.importorskip("websockets.asyncio.server").serve
Response = pytest.importorskip("websockets.http11").Response
Headers = pytest.importorskip("websockets.datastructures").Headers


def test_frames_round_trip_through_the_parser():
    for n in (0, 5, 125, 126, 65535, 65536):
        payload = bytes(range(256)) * (n // 256) + bytes(range(n % 256))
        frame = wsclient.client_frame(wsclient.TEXT, payload, mask=b"\x01\x02\x03\x04")
        # a server frame is the same without the mask bit and key: unmask to compare
        head = 2 + (2 if 126 <= n < 65536 else 8 if n >= 65536 else 0)
        masked = frame[head + 4 :]
        unmasked = bytes(b ^ (1, 2, 3, 4)[i % 4] for i, b in enumerate(masked))
        assert unmasked == payload
        server = bytearray([frame[0], frame[1] & 0x7F]) + frame[2:head] + payload
        buf = server + b"\x81"  # and the start of the next frame stays in the buffer
        assert wsclient.parse_frames(buf) == [(wsclient.TEXT, payload)]
        assert buf == b"\x81"


async def _connect(port: int, path: str = "/ocpp/CP1", on_text=None):
    sock = socket.socket()
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    headers = {"Sec-WebSocket-Protocol": "ocpp1.6", "Authorization": "Basic eDp5"}
    return await wsclient.open_station(sock, f"127.0.0.1:{port}", path, headers, on_text)


def test_handshake_messages_ping_and_close_with_a_real_server():
    got, seen_headers = [], {}

    async def handler(ws):
        seen_headers.update(auth=ws.request.headers["Authorization"], sub=ws.subprotocol)
        await ws.send('[2,"1","Reset",{"type":"Soft"}]')
        got.append(await ws.recv())  # the station's answer
        pong = await ws.ping(b"x")
        await asyncio.wait_for(pong, 2)  # the client answered the ping
        got.append(await ws.recv())  # a message sent after the pong
        await ws.wait_closed()

    async def main():
        async with serve(handler, "127.0.0.1", 0, subprotocols=["ocpp1.6"]) as server:
            port = server.sockets[0].getsockname()[1]
            station = await _connect(port, on_text=lambda st, text: st.send(f"echo {text}"))
            await asyncio.sleep(0.3)
            assert station.send('[2,"2","Heartbeat",{}]')
            await station.close()
            return station.close_code

    code = asyncio.run(asyncio.wait_for(main(), 10))
    assert got == ['echo [2,"1","Reset",{"type":"Soft"}]', '[2,"2","Heartbeat",{}]']
    assert seen_headers == {"auth": "Basic eDp5", "sub": "ocpp1.6"}
    assert code == 1000


def test_a_503_before_the_upgrade_is_a_refusal_with_its_status():
    def refuse(connection, request):
        return Response(503, "Service Unavailable", Headers({"Retry-After": "10"}), b"")

    async def main():
        async with serve(lambda ws: None, "127.0.0.1", 0, process_request=refuse) as server:
            with pytest.raises(wsclient.Refused) as refused:
                await _connect(server.sockets[0].getsockname()[1])
            return refused.value.status

    assert asyncio.run(asyncio.wait_for(main(), 10)) == 503


def test_a_close_right_after_the_upgrade_fails_the_handshake_with_its_code():
    async def handler(ws):
        await ws.close(1013, "try again later")

    async def main():
        async with serve(handler, "127.0.0.1", 0) as server:
            port = server.sockets[0].getsockname()[1]
            station = None
            try:
                station = await _connect(port)
            except wsclient.ClosedInHandshake as exc:
                return exc.code
            await station.lost  # the close came in a later read: the station sees it closed
            return station.close_code

    assert asyncio.run(asyncio.wait_for(main(), 10)) == 1013
