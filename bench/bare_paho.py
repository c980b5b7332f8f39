"""`bare-paho`: bench/bare.py's bridge with paho-mqtt on its own network thread (docs/performance.md).

The strongest lean Python bridge measured on this machine kind (the issue's ~31,000 msg/s at
1,000 CPs): the same `websockets` server, envelopes, topics and routing as `bare`, but publishes
go to paho, whose thread does the socket work, with an unlimited in-flight window as ocppgw's
bridge has, and each CP may have as many frames unacknowledged as ocppgw allows a station (16,
stations/outbox.py) before its socket is no longer read. `bare` (aiomqtt, all on the loop, one
PUBACK awaited per frame) stays for continuity with earlier runs.

    python bench/bare_paho.py --port 9000 --mqtt-host 127.0.0.1 --mqtt-port 1883
"""

import argparse
import asyncio
import signal

import orjson
import paho.mqtt.client as paho
from bare import SUBPROTOCOLS, envelope, refuse_bad_path, to_frame
from websockets.asyncio.server import serve
from websockets.exceptions import ConnectionClosed

sockets: dict = {}  # cid -> websocket
waiting: dict[int, asyncio.Semaphore] = {}  # MQTT message id -> the CP's window, freed on PUBACK
WINDOW = 16  # frames a CP may have unacknowledged, as ocppgw's UNACKED_HIGH
loop: asyncio.AbstractEventLoop
client: paho.Client


def on_publish(client, userdata, mid, reason_code, properties):
    """paho's thread: hand the PUBACK to the loop."""
    loop.call_soon_threadsafe(_acked, mid)


def _acked(mid: int) -> None:
    window = waiting.pop(mid, None)
    if window is not None:
        window.release()


def on_message(client, userdata, message):
    loop.call_soon_threadsafe(_route, message.topic, message.payload)


def _route(topic: str, payload: bytes) -> None:
    levels = topic.split("/")
    ws = sockets.get(levels[2]) if len(levels) > 2 else None
    if ws is None:
        return
    try:
        frame = to_frame(orjson.loads(payload))
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return
    if frame is not None:
        loop.create_task(_send(ws, orjson.dumps(frame).decode()))


async def _send(ws, text: str) -> None:
    try:
        await ws.send(text)
    except ConnectionClosed:
        pass


async def handle(ws) -> None:
    """One CP: publish every frame in order; a full window of unacknowledged frames stops reading
    (the backpressure)."""
    cid = ws.request.path.split("?")[0].split("/")[2]
    sockets[cid] = ws
    window = asyncio.Semaphore(WINDOW)
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
            await window.acquire()
            # registered before the PUBACK can be handled: _acked runs on this loop, later
            waiting[client.publish(topic, orjson.dumps(env), qos=1).mid] = window
    except ConnectionClosed:
        pass
    finally:
        if sockets.get(cid) is ws:
            del sockets[cid]


async def main(args: argparse.Namespace) -> None:
    """Serve until SIGINT/SIGTERM."""
    global loop, client
    loop = asyncio.get_running_loop()
    stop = loop.create_future()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set_result, None)
    client = paho.Client(paho.CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
    client.max_inflight_messages_set(0)  # unlimited, as ocppgw's bridge (stations/bridge.py)
    client.max_queued_messages_set(0)
    client.on_publish, client.on_message = on_publish, on_message
    subscribed = asyncio.Event()
    client.on_connect = lambda c, *a: c.subscribe("ocpp/cs/#", qos=1)
    client.on_subscribe = lambda *a: loop.call_soon_threadsafe(subscribed.set)
    client.connect(args.mqtt_host, args.mqtt_port, 60)
    client.loop_start()
    await asyncio.wait_for(subscribed.wait(), 10)
    # pings as ocppgw's defaults (30 s / 30 s) so idle CPU compares like with like
    async with serve(
        handle, args.host, args.port, subprotocols=SUBPROTOCOLS, process_request=refuse_bad_path,
        backlog=65535, ping_interval=30, ping_timeout=30, max_size=1 << 20,
    ):  # fmt: skip
        print(f"bare-paho listening on {args.host}:{args.port}", flush=True)
        await stop
    client.disconnect()
    client.loop_stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000)
    parser.add_argument("--mqtt-host", default="127.0.0.1")
    parser.add_argument("--mqtt-port", type=int, default=1883)
    asyncio.run(main(parser.parse_args()))
