"""`bare`: the lean OCPP-J <-> MQTT bridge that ocppgw is measured against (docs/performance.md).

One file, no Django: a `websockets` server on /ocpp/<cid>, orjson, one process-wide aiomqtt
client. Every text frame becomes the seed envelope, published QoS 1 on ocpp/cp/<cid>/<action>
(CALLRESULTs on ocpp/cp/Reply/<cid>, errors on ocpp/cp/Error/<cid>); everything on ocpp/cs/#
is routed by its second topic level to the socket of that cid. No auth, no validation, no log:
it is the ceiling a Python bridge reaches on this machine, not a product.

    python bench/bare.py --port 9000 --mqtt-host 127.0.0.1 --mqtt-port 1883
"""

import argparse
import asyncio
import contextlib
import signal

import aiomqtt
import orjson
from websockets.asyncio.server import serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Response

SUBPROTOCOLS = ["ocpp1.6", "ocpp2.0.1", "ocpp2.1"]
sockets: dict = {}  # cid -> websocket, the only routing state
mqtt: aiomqtt.Client | None = None


def envelope(frame) -> tuple[str, dict] | None:
    """Map an OCPP-J array to (topic suffix kind, seed envelope); None if unclassifiable."""
    if not isinstance(frame, list) or len(frame) < 3 or not isinstance(frame[1], str):
        return None
    kind = frame[0]
    if kind in (2, 6) and len(frame) >= 4:
        return frame[2], {
            "MessageTypeId": kind,
            "UniqueId": frame[1],
            "Action": frame[2],
            "Payload": frame[3],
        }
    if kind == 3:
        return "Reply", {"MessageTypeId": 3, "UniqueId": frame[1], "Payload": frame[2]}
    if kind in (4, 5) and len(frame) >= 4:
        details = frame[4] if len(frame) > 4 else {}
        return "Error", {
            "MessageTypeId": kind,
            "UniqueId": frame[1],
            "ErrorCode": frame[2],
            "ErrorDescription": frame[3],
            "ErrorDetails": details,
        }
    return None


def refuse_bad_path(connection, request):
    """Refuse anything but /ocpp/<one segment> before the upgrade."""
    parts = request.path.split("?")[0].split("/")
    if len(parts) != 3 or parts[1] != "ocpp" or not parts[2]:
        return Response(404, "Not Found", Headers(), b"")
    return None


async def handle(ws) -> None:
    """One CP: publish every frame in order; awaiting the PUBACK is the backpressure."""
    cid = ws.request.path.split("?")[0].split("/")[2]
    sockets[cid] = ws
    try:
        async for text in ws:
            if isinstance(text, bytes):
                continue
            try:
                mapped = envelope(orjson.loads(text))
            except orjson.JSONDecodeError:
                mapped = None
            if mapped is None:
                continue
            kind, env = mapped
            topic = (
                f"ocpp/cp/{kind}/{cid}" if kind in ("Reply", "Error") else f"ocpp/cp/{cid}/{kind}"
            )
            await mqtt.publish(topic, orjson.dumps(env), qos=1)
    except ConnectionClosed:
        pass
    finally:
        if sockets.get(cid) is ws:
            del sockets[cid]


def to_frame(env: dict) -> list | None:
    """Seed envelope from the backend -> OCPP-J array, None when keys are missing."""
    kind = env.get("MessageTypeId")
    if kind in (2, 6):
        return [kind, env["UniqueId"], env["Action"], env.get("Payload", {})]
    if kind == 3:
        return [3, env["UniqueId"], env.get("Payload", {})]
    if kind in (4, 5):
        uid, code, desc = env["UniqueId"], env["ErrorCode"], env["ErrorDescription"]
        return [kind, uid, code, desc, env.get("ErrorDetails", {})]
    return None


async def downstream() -> None:
    """Route ocpp/cs/<cid>/... to the socket of <cid> (ocppgw's default filter is per cid)."""
    await mqtt.subscribe("ocpp/cs/#", qos=1)
    async for msg in mqtt.messages:
        levels = msg.topic.value.split("/")
        ws = sockets.get(levels[2]) if len(levels) > 2 else None
        if ws is None:
            continue
        try:
            frame = to_frame(orjson.loads(msg.payload))
            if frame is not None:
                await ws.send(orjson.dumps(frame).decode())
        except (orjson.JSONDecodeError, KeyError, TypeError, ConnectionClosed):
            continue


async def main(args: argparse.Namespace) -> None:
    """Serve until SIGINT/SIGTERM."""
    global mqtt
    stop = asyncio.get_running_loop().create_future()
    for sig in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set_result, None)
    # max_inflight 0 = unlimited: 1000 CPs each waiting on a PUBACK must not queue behind 20.
    async with aiomqtt.Client(
        args.mqtt_host, args.mqtt_port, max_inflight_messages=0, timeout=60
    ) as client:
        mqtt = client
        client.pending_calls_threshold = 1_000_000  # else one warning per publish past 10
        task = asyncio.create_task(downstream())
        # Pings as ocppgw's defaults (30 s / 30 s) so idle CPU compares like with like.
        async with serve(
            handle, args.host, args.port, subprotocols=SUBPROTOCOLS, process_request=refuse_bad_path,
            backlog=65535, ping_interval=30, ping_timeout=30, max_size=1 << 20,
        ):  # fmt: skip
            print(f"bare listening on {args.host}:{args.port}", flush=True)
            await stop
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000)
    parser.add_argument("--mqtt-host", default="127.0.0.1")
    parser.add_argument("--mqtt-port", type=int, default=1883)
    asyncio.run(main(parser.parse_args()))
