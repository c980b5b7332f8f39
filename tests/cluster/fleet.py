"""The fleet the cluster scenarios share: a backend on the broker and firmware-like stations."""

import asyncio
import collections
import json
import random
import time
import uuid

import paho.mqtt.client as mqtt
import websockets
from websockets.asyncio.client import connect

STATIONS = 300
FIGURES = "/tmp/cluster-figures.jsonl"


async def until(predicate, timeout_s: float, what) -> None:
    """Poll `predicate` every 0.2 s; on timeout fail with `what` (a string, or a callable that
    says how far it got)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(
                f"timed out after {timeout_s}s: {what() if callable(what) else what}"
            )
        await asyncio.sleep(0.2)


class Backend:
    """Records every upstream frame on the broker and answers each CALL (a CALLRESULT)."""

    def __init__(self, services, durable: bool = False):
        self.published: dict[str, int] = {}  # UniqueId -> times published
        self.sequence: list[str] = []  # UniqueIds in the order the broker delivered them
        # CALLs the broker delivered to this backend again (DUP: our PUBACK was lost in its
        # restart); not counted as published twice, the gateway published them once
        self.redelivered = 0
        self.presence: dict[str, dict] = {}
        self.errors: list[dict] = []
        self.replies: dict[str, int] = {}  # UniqueId of a backend CALL -> station answers seen
        self.called_at: dict[str, float] = {}  # UniqueId of a backend CALL -> when published
        # durable: a persistent session (QoS 1), so the broker queues what arrives while this
        # backend reconnects after a broker restart
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                                  client_id=f"cl-backend-{uuid.uuid4().hex[:6]}",
                                  clean_session=not durable)  # fmt: skip
        self.client.reconnect_delay_set(0.2, 1)
        self.client.on_connect = lambda c, *_: c.subscribe(
            [("ocpp/cp/#", 1), ("ocpp/presence/#", 1)]
        )
        self.client.on_message = self._on_message
        self.client.connect(services.ip, services.mqtt_port)
        self.client.loop_start()

    def _on_message(self, client, _userdata, msg):
        if msg.topic.startswith("ocpp/presence/"):
            if msg.payload:
                self.presence[msg.topic.rsplit("/", 1)[1]] = json.loads(msg.payload)
            return
        body = json.loads(msg.payload)
        if msg.topic.startswith("ocpp/cp/Error/"):
            self.errors.append(body)
            return
        if msg.topic.startswith("ocpp/cp/Reply/"):
            uid = body.get("UniqueId")
            self.replies[uid] = self.replies.get(uid, 0) + 1
            return
        if body.get("MessageTypeId") != 2:
            return
        uid = body["UniqueId"]
        if msg.dup and uid in self.published:  # the broker's own resend to us, already seen
            self.redelivered += 1
            return
        self.published[uid] = self.published.get(uid, 0) + 1
        self.sequence.append(uid)
        cid = msg.topic.split("/")[2]
        reply = {
            "MessageTypeId": 3,
            "UniqueId": uid,
            "Payload": {"currentTime": "2026-01-01T00:00:00Z"},
        }
        client.publish(f"ocpp/cs/{cid}/Reply/Heartbeat", json.dumps(reply), qos=1)

    def call(self, cid: str, uid: str) -> None:
        """A backend CALL to the station, on its downstream topic."""
        body = {"MessageTypeId": 2, "UniqueId": uid, "Action": "DataTransfer",
                "Payload": {"vendorId": "cluster"}}  # fmt: skip
        self.called_at[uid] = time.monotonic()
        self.client.publish(f"ocpp/cs/{cid}/DataTransfer", json.dumps(body), qos=1)

    def outcome(self, uid: str) -> str | None:
        """What became of a backend CALL: "reached" (the station answered), the gateway's
        error reason (docs/contract.md: the backend is never left waiting), or None (silence)."""
        if uid in self.replies:
            return "reached"
        for error in self.errors:
            if error.get("UniqueId") == uid:
                return error.get("ErrorDetails", {}).get("reason", "error")
        return None

    def stop(self):
        self.client.loop_stop()
        self.client.disconnect()


class Station:
    """A charge point with firmware-like reconnects: jittered back-off 1-10 s, resend unanswered."""

    def __init__(self, url: str, cid: str, stats: dict):
        self.url, self.cid, self.stats = url + cid, cid, stats
        self.connected = asyncio.Event()
        self.n = 0
        self.pending: str | None = None  # a CALL sent but not answered: resent after a reconnect
        self.answered: set[str] = set()
        self.answered_at: list[float] = []
        self.sent: set[str] = set()
        self.sends: dict[str, int] = {}  # UniqueId -> times sent (a resend repeats it)
        # UniqueId of a backend CALL received -> how often (the gateway must send it once)
        self.backend_calls: collections.Counter[str] = collections.Counter()
        self.disconnected_at: float | None = None
        # (when the socket was lost, seconds until the next one opened); a first connection
        # that fails is not a reconnect
        self.reconnects: list[tuple[float, float]] = []
        self.connected_at: list[float] = []  # when each connection opened (monotonic)
        self.close_codes: list[tuple[float, int]] = []  # (when, code) of each socket's close
        self.errored: set[str] = set()  # CALLs the gateway answered with a CALLERROR

    async def run(self, stop: asyncio.Event):
        backoff = 1.0
        while not stop.is_set():
            try:
                # close_timeout: firmware drops a dead socket, it does not wait 10 s for a close
                async with connect(self.url, subprotocols=["ocpp1.6"], open_timeout=10,
                                   ping_interval=None, close_timeout=1) as ws:  # fmt: skip
                    if self.disconnected_at is not None:
                        lost = self.disconnected_at
                        self.reconnects.append((lost, time.monotonic() - lost))
                        self.disconnected_at = None
                    backoff = 1.0
                    self.connected_at.append(time.monotonic())
                    self.connected.set()
                    try:
                        await self._talk(ws, stop)
                    finally:
                        if ws.close_code is not None:
                            self.close_codes.append((time.monotonic(), ws.close_code))
            except (TimeoutError, OSError, websockets.WebSocketException):
                pass
            self.connected.clear()
            if self.disconnected_at is None and self.connected_at:
                self.disconnected_at = time.monotonic()
            if stop.is_set():
                return
            await asyncio.sleep(random.uniform(1.0, backoff))
            backoff = min(10.0, backoff * 2)

    async def _talk(self, ws, stop):
        while not stop.is_set():
            if self.pending is None:
                self.n += 1
                self.pending = f"{self.cid}-{self.n}"
            uid = self.pending
            self.sent.add(uid)
            self.sends[uid] = self.sends.get(uid, 0) + 1
            await ws.send(json.dumps([2, uid, "Heartbeat", {}]))
            answer = await self._receive(ws, 15, uid)
            if answer == 3:
                self.answered.add(uid)
                self.answered_at.append(time.monotonic())
            elif answer == 4:  # e.g. InternalError at the call timeout: the next CALL is new
                self.errored.add(uid)
            else:
                raise TimeoutError(f"{uid} unanswered")
            self.pending = None
            await self._receive(ws, random.uniform(2.0, 4.0))

    async def _receive(self, ws, seconds: float, uid: str | None = None) -> int | None:
        """Answer backend CALLs for `seconds`; the answer's type (3 or 4) as soon as the answer
        to `uid` arrives, else None."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while (left := deadline - loop.time()) > 0:
            try:
                frame = json.loads(await asyncio.wait_for(ws.recv(), left))
            except TimeoutError:
                return None
            if frame[0] == 2:
                self.backend_calls[frame[1]] += 1
                await ws.send(json.dumps([3, frame[1], {"status": "Accepted"}]))
            elif frame[0] in (3, 4) and frame[1] == uid:
                return frame[0]
        return None


async def halt(stop, tasks) -> None:
    """End the stations' traffic: set `stop`, cancel the tasks, wait until they are done."""
    stop.set()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def record(name: str, figures: dict) -> None:
    line = json.dumps({"scenario": name, **figures})
    print(f"CLUSTER-FIGURES {line}")
    with open(FIGURES, "a") as out:
        out.write(line + "\n")


def unaccounted(stations, backend) -> list[str]:
    """CALLs a station sent that reached no backend and got no gateway error: lost. A station
    resends an unanswered CALL after reconnecting, so only the one in flight when the scenario
    stopped may be missing legitimately."""
    return [
        uid
        for s in stations
        for uid in s.sent
        if uid not in backend.published and uid not in s.errored and uid != s.pending
    ]


async def all_connected(stations, backend, timeout_s: float = 120) -> None:
    """Until the broker's retained presence says every station is connected."""

    def missing():
        return [s for s in stations if backend.presence.get(s.cid, {}).get("status") != "connected"]

    def report():
        gone = missing()
        return f"presence connected for all ({len(stations) - len(gone)}/{len(stations)}): " + str(
            [(s.cid, backend.presence.get(s.cid), s.close_codes[-1:]) for s in gone[:3]]
        )

    await until(lambda: not missing(), timeout_s, report)


def overpublished(stations, backend) -> list[str]:
    """CALLs the broker carried more often than the station sent them: published twice by the
    gateway. (A station's own resend of an unanswered CALL may be published again: that is a
    duplicate of the station's making, counted in the figures, not here.)"""
    return [
        uid
        for s in stations
        for uid, sends in s.sends.items()
        if backend.published.get(uid, 0) > sends
    ]
