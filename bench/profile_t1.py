"""py-spy profile of ocppgw under T1's load (1000 CPs firing Heartbeats), summarised per layer.

    .venv/bin/pip install py-spy
    .venv/bin/python bench/profile_t1.py [--duration 20]   # -> bench/results/profile-<ts>.*

One gateway process (as T1), validation, message log and auth on. py-spy samples the process
(--nonblocking, 100 Hz) only inside the fire window; every sample's stack is given to one layer:
the innermost frame that belongs to a known layer (a stdlib leaf such as json or logging is
charged to the code that called it). `summarise` is pure and unit-tested.
"""

import argparse
import json
import shutil
import subprocess
import time
from collections import Counter

# (layer, path fragments), checked from the innermost frame outwards; first hit wins
LAYERS = (
    ("GC", ("<gc>", "gc_collect")),
    ("log/DB", ("stations/msglog", "stations/dbthread", "ocppgw/logs", "django/db", "psycopg",
                "stations/audit", "stations/retention")),
    ("bridge/paho", ("paho/", "stations/bridge", "stations/outbox", "stations/inbox",
                     "stations/topics", "stations/mqtt_url")),
    ("session/validation/envelope", ("stations/", "fastjsonschema", "jsonschema", "orjson")),
    ("Channels", ("channels/", "asgiref/")),
    ("Daphne", ("daphne/",)),
    ("Twisted/autobahn", ("twisted/", "autobahn/", "txaio/", "ocppgw/edge")),
    ("asyncio loop", ("asyncio/",)),
)  # fmt: skip


def layer_of(stack: str) -> str:
    """The layer of one collapsed stack ("outer;...;inner")."""
    for frame in reversed(stack.split(";")):
        for name, parts in LAYERS:
            if any(p in frame for p in parts):
                return name
    return "other (stdlib, interpreter)"


def summarise(collapsed: str) -> dict[str, float]:
    """Share of samples per layer, from py-spy's raw (collapsed) output."""
    c: Counter = Counter()
    for line in collapsed.splitlines():
        stack, _, n = line.rpartition(" ")
        if stack and n.isdigit() and int(n):
            c[layer_of(stack)] += int(n)
    total = sum(c.values()) or 1
    return {k: round(v / total * 100, 1) for k, v in c.most_common()}


def main() -> None:
    import gateway as gw
    import run

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--duration", type=float, default=20.0)
    ap.add_argument("-n", type=int, default=1000)
    ap.add_argument("--rate", type=int, default=100, help="py-spy samples per second")
    ap.add_argument("--db", default="postgres")
    ap.add_argument("--redis-url", default="redis://127.0.0.1:6379/15")
    args = ap.parse_args()
    spy = shutil.which("py-spy") or str(run.BENCH.parent / ".venv" / "bin" / "py-spy")
    started = time.strftime("%Y%m%d-%H%M%S")
    run.RESULTS.mkdir(exist_ok=True)
    logs = run.RESULTS / f"profile-{started}-logs"
    logs.mkdir()
    out = run.RESULTS / f"profile-{started}.txt"
    broker = run.Broker(logs, None)
    g = gw.Gateway(logs, broker.url, args.db, args.redis_url)
    print(g.prepare(args.n, run.PREFIX).strip(), flush=True)
    bargs = argparse.Namespace(workers=1, max_inflight=10000)
    b = run.Bench(bargs, broker, logs)
    spied: list = []
    make = b.loadgen

    def loadgen(srv, mode, n, extra):
        lg = make(srv, mode, n, extra)
        send = lg.send

        def send_and_spy(word):
            send(word)
            if word == "go":  # profile the fire window only (not the handshakes)
                cmd = [spy, "record", "--pid", str(srv.pid), "--nonblocking", "--format", "raw"]
                cmd += ["--rate", str(args.rate), "--duration", str(int(args.duration) - 2)]
                cmd += ["--output", str(out)]
                spied.append(
                    subprocess.Popen(
                        cmd, stdout=subprocess.DEVNULL, stderr=open(logs / "py-spy.log", "w")
                    )
                )

        lg.send = send_and_spy
        return lg

    b.loadgen = loadgen
    try:
        g.start(run.free_port())
        warm = b.upstream(g, "fire", args.n, 5)  # warm-up: schemas compiled, caches filled
        res = b.upstream(g, "fire", args.n, args.duration)
    finally:
        for p in spied:
            p.wait(60)
        g.stop()
        broker.stop()
    shares = summarise(out.read_text()) if out.exists() else {}
    summary = {
        "throughput": res["throughput"],
        "warm_throughput": warm["throughput"],
        "cpu_us_per_msg": res["cpu_us_per_msg"],
        "lost": res["lost"],
        "layers": shares,
    }
    (run.RESULTS / f"profile-{started}.json").write_text(json.dumps(summary, indent=1))
    print(
        f"T1 fire under py-spy: {res['throughput']:,.0f} msg/s, "
        f"{res['cpu_us_per_msg']} us CPU/msg, lost {res['lost']}"
    )
    print("| layer | share of CPU samples | us per message |\n|---|---|---|")
    for k, v in shares.items():
        per = v / 100 * res["cpu_us_per_msg"] if res["cpu_us_per_msg"] else None
        print(f"| {k} | {v}% | {per:.0f} |" if per else f"| {k} | {v}% | n/a |")
    print(f"raw profile: {out}")


if __name__ == "__main__":
    main()
