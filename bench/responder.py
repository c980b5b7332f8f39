"""Backend side of the round-trip measure, in its own process.

Publishes CALL envelopes `{"MessageTypeId":2,"UniqueId":..,"Action":"Reset","Payload":{"type":
"Soft"}}` on ocpp/cs/<cid>/Reset, keeps --window outstanding per CP (the gateway sends one at a
time per CP and queues the rest), and matches the CALLRESULT envelopes arriving on
ocpp/cp/Reply/<cid>. Gateway errors (ocpp/cp/Error/#) and notices (ocpp/gw/Notice/#) are
counted too: each one is a CALL that did not make the round trip.

Control on stdin / events on stdout, one JSON line each:
  -> ready    <- warm  -> warm (one CALL per CP answered: the gateway has subscribed for it)
  <- go  -> done (after --duration s, then up to --drain s for the replies still due)
"""

import argparse
import sys
import threading
import time
from array import array

import orjson
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion


def emit(obj: dict) -> None:
    """One JSON line on stdout."""
    sys.stdout.write(orjson.dumps(obj).decode() + "\n")
    sys.stdout.flush()


class Responder:
    """Outstanding CALLs by UniqueId; replies handled on paho's network thread."""

    def __init__(self, client, args: argparse.Namespace) -> None:
        self.c = client
        self.args = args
        self.lock = threading.Lock()
        self.out: dict[str, tuple[str, int]] = {}  # uid -> (cid, sent ns)
        self.seq = 0
        self.sent = 0
        self.replies = 0
        self.in_window = 0
        self.unmatched = 0
        self.errors = 0
        self.notices = 0
        self.rtt_us = array("q")
        self.end_ns = 0  # no new CALLs after this
        self.w0_ns = 0
        self.payload = orjson.loads(args.payload)

    def call(self, cid: str) -> None:
        """Publish one CALL to cid."""
        with self.lock:
            self.seq += 1
            uid = f"r{self.seq}"
            self.out[uid] = (cid, time.monotonic_ns())
            self.sent += 1
        env = {"MessageTypeId": 2, "UniqueId": uid, "Action": self.args.action}
        env["Payload"] = self.payload
        self.c.publish(f"ocpp/cs/{cid}/{self.args.action}", orjson.dumps(env), qos=1)

    def on_message(self, _c, _u, msg) -> None:
        """A reply closes a round trip and, inside the window, opens the next one."""
        now = time.monotonic_ns()
        topic = msg.topic
        if topic.startswith("ocpp/gw/"):
            self.notices += 1
            return
        try:
            env = orjson.loads(msg.payload)
            uid = env["UniqueId"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            self.unmatched += 1
            return
        with self.lock:
            entry = self.out.pop(uid, None)
        if entry is None:
            self.unmatched += 1
            return
        if topic.startswith("ocpp/cp/Error/"):
            self.errors += 1
        else:
            self.replies += 1
            if self.w0_ns <= now <= self.end_ns:
                self.in_window += 1
                self.rtt_us.append((now - entry[1]) // 1000)
        if now < self.end_ns:
            self.call(entry[0])


def main() -> None:
    """Connect, then run the warm and go phases on command."""
    ap = argparse.ArgumentParser(description="round-trip backend for the ocppgw benchmark")
    ap.add_argument("--mqtt-host", default="127.0.0.1")
    ap.add_argument("--mqtt-port", type=int, default=1883)
    ap.add_argument("-n", type=int, default=1000)
    ap.add_argument("--prefix", default="CP")
    ap.add_argument("--window", type=int, default=1, help="outstanding CALLs per CP")
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--drain", type=float, default=10.0)
    ap.add_argument("--warm-timeout", type=float, default=20.0)
    ap.add_argument("--action", default="Reset")
    ap.add_argument("--payload", default='{"type":"Soft"}')
    args = ap.parse_args()
    cids = [f"{args.prefix}{i:05d}" for i in range(args.n)]

    subscribed = threading.Event()
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-responder-{time.time_ns()}")
    client.max_inflight_messages_set(0)  # 0 = unlimited; the default 20 would be the bottleneck
    r = Responder(client, args)
    client.on_message = r.on_message
    client.on_subscribe = lambda *a: subscribed.set()
    client.on_connect = lambda c, *a: c.subscribe(
        [("ocpp/cp/Reply/#", 1), ("ocpp/cp/Error/#", 1), ("ocpp/gw/Notice/#", 1)]
    )
    client.connect(args.mqtt_host, args.mqtt_port, keepalive=60)
    client.loop_start()
    if not subscribed.wait(10):
        emit({"event": "error", "error": "no SUBACK within 10 s"})
        sys.exit(1)
    emit({"event": "ready"})

    def wait(word: str) -> None:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            line = sys.stdin.readline()
            if not line or line.strip() == word:
                return

    # Warm-up: one CALL per CP until each has answered once (a gateway subscribes per CP on
    # connect; a CALL published before that is not the gateway's loss). A CALL is re-sent only
    # once, after half the timeout: re-sending sooner would queue duplicates behind a slow
    # gateway's one-outstanding-CALL-per-CP and load the window with stale round trips.
    wait("warm")
    t = time.monotonic()
    for cid in cids:
        r.call(cid)
    resent = False
    while time.monotonic() - t < args.warm_timeout:
        with r.lock:
            pending = {cid for cid, _ in r.out.values()}
        if not pending:
            break
        if not resent and time.monotonic() - t > args.warm_timeout / 2:
            resent = True
            for cid in pending:
                r.call(cid)
        time.sleep(0.1)
    with r.lock:
        missing = len({cid for cid, _ in r.out.values()})
    # let late answers to re-sent CALLs arrive before the window opens (at most 5 s)
    t_q = time.monotonic()
    while r.out and time.monotonic() - t_q < 5:
        time.sleep(0.1)
    emit({"event": "warm", "ok": args.n - missing, "missing": missing})

    wait("go")
    with r.lock:
        r.out.clear()
        r.sent = r.replies = r.in_window = r.unmatched = r.errors = r.notices = 0
    r.w0_ns = time.monotonic_ns()
    r.end_ns = r.w0_ns + int(args.duration * 1e9)
    for cid in cids:
        for _ in range(args.window):
            r.call(cid)
    time.sleep(max(0.0, (r.end_ns - time.monotonic_ns()) / 1e9))
    t1 = time.monotonic_ns()
    deadline = time.monotonic() + args.drain
    while r.out and time.monotonic() < deadline:
        time.sleep(0.05)
    client.loop_stop()
    client.disconnect()
    lat = sorted(r.rtt_us)

    def pct(p: float) -> float | None:
        return round(lat[min(len(lat) - 1, int(p / 100 * len(lat)))] / 1000, 3) if lat else None

    emit(
        {
            "event": "done",
            "t0_ns": r.w0_ns,
            "t1_ns": t1,
            "sent": r.sent,
            "replies": r.replies,
            "replies_in_window": r.in_window,
            "rtt_per_s": round(r.in_window / ((t1 - r.w0_ns) / 1e9), 1),
            "lost": len(r.out),
            "errors": r.errors,
            "notices": r.notices,
            "unmatched": r.unmatched,
            "rtt_ms": {"p50": pct(50), "p99": pct(99), "max": pct(100)},
        }
    )


if __name__ == "__main__":
    main()
