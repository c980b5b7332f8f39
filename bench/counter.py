"""MQTT counter: a separate process that counts every upstream message the gateway publishes.

Subscribes `ocpp/cp/#` (plus `ocpp/gw/#` for gateway notices), counts each message by kind,
flags duplicates (same topic + MessageTypeId + UniqueId twice), bins arrivals in 100 ms slots of
CLOCK_MONOTONIC (shared by every process on the machine, so run.py can cut the load generator's
window out of them) and, when a UniqueId ends in `.<monotonic ns>` (the `open` mode), records
the publish latency. Lost = sent (load generator) - received (here), computed by run.py.

With --tag, only UniqueIds starting with it are counted (others are "stale": a previous
measure's backlog still being published). Before announcing ready the counter waits until the
stream has been quiet for --settle s, so one measure's tail does not land in the next.

Control on stdin / report on stdout, one JSON object per line:
  -> {"event": "ready"} once subscribed and settled
  <- "stop [N]"   stop once N upstream CALLs have arrived, or the stream has been quiet for
                  --quiet s, at most --max-drain s after the command
  -> {"event": "report", ...} and exit
"""

import argparse
import sys
import threading
import time
from array import array

import orjson
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from shm import Slots

DROPPED = "$SYS/broker/publish/messages/dropped"


class Counter:
    """State touched only from paho's network thread (reads from the main thread are racy
    but monotonic, which is all the quiet detection needs)."""

    def __init__(self, bin_ms: int, slots: Slots | None, tag: str) -> None:
        self.tag = tag
        self.stale = 0
        self.t0 = time.monotonic_ns()
        self.bin_ns = bin_ms * 1_000_000
        self.bins: dict[int, int] = {}
        self.n = 0
        self.kinds: dict[str, int] = {}
        self.actions: dict[str, int] = {}
        self.seen: set[tuple] = set()
        self.dup = 0
        self.bad = 0
        self.lat_us = array("q")
        self.lat_s = array("l")  # second of arrival (since t0) of each latency in lat_us
        self.last_ns = self.t0
        self.slots = slots
        self.dropped: list[int] = []

    def on_message(self, _client, _userdata, msg) -> None:
        """Count one message; must stay cheap: it is the counter's whole per-message cost."""
        now = time.monotonic_ns()
        topic = msg.topic
        if topic == DROPPED:
            self.dropped.append(int(msg.payload))
            return
        self.last_ns = now
        try:
            env = orjson.loads(msg.payload)
            uid = env["UniqueId"]
            key = (topic, env["MessageTypeId"], uid)
        except (orjson.JSONDecodeError, KeyError, TypeError):
            env, uid, key = None, None, None
        if self.tag and not (isinstance(uid, str) and uid.startswith(self.tag)):
            self.stale += 1
            return
        self.n += 1
        if self.slots is not None:
            self.slots.v[0] = self.n
        b = (now - self.t0) // self.bin_ns
        self.bins[b] = self.bins.get(b, 0) + 1
        levels = topic.split("/")
        if levels[1] == "gw":
            kind = "notice"
        elif len(levels) > 2 and levels[2] in ("Reply", "Error"):
            kind = levels[2].lower()
        else:
            kind = "call"
        self.kinds[kind] = self.kinds.get(kind, 0) + 1
        if key is None:
            self.bad += 1
            return
        if kind == "call":
            action = env.get("Action", "?")
            self.actions[action] = self.actions.get(action, 0) + 1
        if key in self.seen:
            self.dup += 1
        else:
            self.seen.add(key)
        if isinstance(uid, str) and "." in uid:
            try:
                self.lat_us.append((now - int(uid.rsplit(".", 1)[1])) // 1000)
                self.lat_s.append((now - self.t0) // 1_000_000_000)
            except ValueError:
                pass

    def reset(self) -> None:
        """Forget what arrived while settling."""
        self.n = self.stale = self.dup = self.bad = 0
        for d in (self.bins, self.kinds, self.actions, self.seen):
            d.clear()
        del self.lat_us[:]
        del self.lat_s[:]

    def report(self) -> dict:
        """Everything run.py needs; latency percentiles over the whole run."""
        lat = sorted(self.lat_us)

        def pct(p: float) -> float | None:
            return percentile_ms(lat, p)

        return {
            "event": "report",
            "received": self.n,
            "kinds": self.kinds,
            "actions": self.actions,
            "duplicates": self.dup,
            "stale": self.stale,
            "unparsable": self.bad,
            "t0_ns": self.t0,
            "bin_ns": self.bin_ns,
            "bins": {str(k): v for k, v in sorted(self.bins.items())},
            "last_ns": self.last_ns,
            "latency_ms": {
                "n": len(lat),
                "p50": pct(50),
                "p90": pct(90),
                "p99": pct(99),
                "p999": pct(99.9),
                "max": round(lat[-1] / 1000, 3) if lat else None,
            },
            "latency_by_s": by_second(self.lat_s, self.lat_us),
            "drain_s": getattr(self, "drain_s", None),
            "drain_reason": getattr(self, "drain_reason", None),
            "broker_dropped": (self.dropped[-1] - self.dropped[0]) if self.dropped else None,
        }


def by_second(seconds, lat_us) -> list[list]:
    """[second, messages, p50 ms, p99 ms, max ms] for each second messages arrived in: one
    percentile over a whole run hides when the slow ones came."""
    per: dict[int, list[int]] = {}
    for sec, us in zip(seconds, lat_us, strict=True):
        per.setdefault(sec, []).append(us)
    out = []
    for sec in sorted(per):
        lat = sorted(per[sec])
        out.append([sec, len(lat), percentile_ms(lat, 50), percentile_ms(lat, 99), lat[-1] / 1000])
    return out


def percentile_ms(lat_us: list[int], p: float) -> float | None:
    """The p-th percentile of sorted latencies in µs, in ms (None for none)."""
    if not lat_us:
        return None
    return round(lat_us[min(len(lat_us) - 1, int(p / 100 * len(lat_us)))] / 1000, 3)


def emit(obj: dict) -> None:
    """One JSON line on stdout."""
    sys.stdout.write(orjson.dumps(obj).decode() + "\n")
    sys.stdout.flush()


def main() -> None:
    """Subscribe, announce ready, count until told to stop and the stream is quiet."""
    ap = argparse.ArgumentParser(description="MQTT counter for the ocppgw benchmark")
    ap.add_argument("--mqtt-host", default="127.0.0.1")
    ap.add_argument("--mqtt-port", type=int, default=1883)
    ap.add_argument("--topic", action="append", default=None, help="default ocpp/cp/# ocpp/gw/#")
    ap.add_argument("--qos", type=int, default=1)
    ap.add_argument("--bin-ms", type=int, default=100)
    ap.add_argument("--shm", help="slots file shared with the load generator")
    ap.add_argument("--tag", default="", help="count only UniqueIds with this prefix")
    ap.add_argument("--settle", type=float, default=1.0, help="quiet seconds before ready")
    ap.add_argument("--max-settle", type=float, default=30.0)
    ap.add_argument("--quiet", type=float, default=5.0)
    ap.add_argument("--max-drain", type=float, default=30.0)
    ap.add_argument("--max-life", type=float, default=900.0, help="hard stop, seconds")
    args = ap.parse_args()
    topics = args.topic or ["ocpp/cp/#", "ocpp/gw/#"]

    counter = Counter(args.bin_ms, Slots(args.shm) if args.shm else None, args.tag)
    subscribed = threading.Event()
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-counter-{time.time_ns()}")
    client.on_message = counter.on_message
    client.on_subscribe = lambda *a: subscribed.set()

    def on_connect(c, _u, _f, rc, _p) -> None:
        c.subscribe([(t, args.qos) for t in topics] + [(DROPPED, 0)])

    client.on_connect = on_connect
    client.connect(args.mqtt_host, args.mqtt_port, keepalive=60)
    client.loop_start()
    if not subscribed.wait(10):
        emit({"event": "error", "error": "no SUBACK within 10 s"})
        sys.exit(1)
    t_settle = time.monotonic()
    while time.monotonic() - t_settle < args.max_settle:
        if (time.monotonic_ns() - counter.last_ns) / 1e9 >= args.settle:
            break
        time.sleep(0.05)
    settled = {"before_ready": counter.n + counter.stale, "settle_s": time.monotonic() - t_settle}
    counter.reset()
    emit({"event": "ready", "t0_ns": counter.t0} | settled)

    # stdin is read on a thread so a dead parent (EOF) or --max-life also ends the process.
    stop = threading.Event()
    expected: list[int] = []

    def read_stop() -> None:
        words = sys.stdin.readline().split()
        if len(words) > 1 and words[1].isdigit():
            expected.append(int(words[1]))
        stop.set()

    threading.Thread(target=read_stop, daemon=True).start()
    stop.wait(args.max_life)
    t_stop = time.monotonic()
    # "all": every expected CALL arrived; "quiet": nothing for --quiet s (the rest is lost);
    # "limit": still arriving at --max-drain (the rest is late, not known to be lost)
    counter.drain_reason = "limit"
    while time.monotonic() - t_stop < args.max_drain:
        if expected and counter.kinds.get("call", 0) >= expected[0]:
            time.sleep(0.2)  # a duplicate right behind the last message is still caught
            counter.drain_reason = "all"
            break
        if (time.monotonic_ns() - counter.last_ns) / 1e9 >= args.quiet:
            counter.drain_reason = "quiet"
            break
        time.sleep(0.02)
    counter.drain_s = round(time.monotonic() - t_stop, 2)
    client.loop_stop()
    client.disconnect()
    emit(counter.report())


if __name__ == "__main__":
    main()
