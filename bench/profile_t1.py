"""py-spy profile of ocppgw under T1's load (1000 CPs firing Heartbeats), summarised per layer.

    .venv/bin/pip install py-spy
    .venv/bin/python bench/profile_t1.py [--duration 20]   # -> bench/results/profile-<ts>.*
    .venv/bin/python bench/profile_t1.py --open 1000        # T2's load (open loop, 1000 msg/s)
    .venv/bin/python bench/profile_t1.py --open 1000 --no-spy   # the measure alone, for A/B

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


def summarise(collapsed: str, layer=layer_of) -> dict[str, float]:
    """Share of samples per layer (`layer`: stack -> name), from py-spy's raw (collapsed) output."""
    c: Counter = Counter()
    for line in collapsed.splitlines():
        stack, _, n = line.rpartition(" ")
        if stack and n.isdigit() and int(n):
            c[layer(stack)] += int(n)
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
    ap.add_argument(
        "--open",
        type=int,
        default=0,
        metavar="MSG_S",
        help="T2's load instead: open loop at this total rate (e.g. 1000)",
    )
    ap.add_argument("--no-spy", action="store_true", help="measure only (A/B without py-spy)")
    ap.add_argument("--spy-args", default="", help="extra py-spy options, e.g. '--native'")
    args = ap.parse_args()
    mode, rate = ("open", args.open) if args.open else ("fire", 0)
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
            # profile the fire window only (not the handshakes)
            if word == "go" and not args.no_spy:
                cmd = [spy, "record", "--pid", str(srv.pid), "--format", "raw"]
                if "--native" not in args.spy_args:  # py-spy cannot unwind C without pausing
                    cmd.append("--nonblocking")
                cmd += ["--rate", str(args.rate), "--duration", str(int(args.duration) - 2)]
                cmd += ["--output", str(out), *args.spy_args.split()]
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
        warm = b.upstream(g, mode, args.n, 5, rate)  # warm-up: schemas compiled, caches filled
        res = b.upstream(g, mode, args.n, args.duration, rate)
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
        "helpers_cpu_pct": res["helpers_cpu_pct_window"],
        "layers": shares,
    }
    (run.RESULTS / f"profile-{started}.json").write_text(json.dumps(summary, indent=1))
    print(
        f"{mode} {rate or ''} {'' if args.no_spy else 'under py-spy'}: "
        f"{res['throughput']:,.0f} msg/s, {res['cpu_us_per_msg']} us CPU/msg, "
        f"lost {res['lost']}, helpers CPU % {res['helpers_cpu_pct_window']}"
    )
    print("| layer | share of CPU samples | us per message |\n|---|---|---|")
    for k, v in shares.items():
        per = v / 100 * res["cpu_us_per_msg"] if res["cpu_us_per_msg"] else None
        print(f"| {k} | {v}% | {per:.0f} |" if per else f"| {k} | {v}% | n/a |")
    print(f"raw profile: {out}")


if __name__ == "__main__":
    main()
