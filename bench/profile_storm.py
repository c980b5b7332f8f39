"""Reconnect storms of T9 (bench/scale.py) alone, with a py-spy profile of the handshake path.

    .venv/bin/pip install py-spy
    .venv/bin/python bench/profile_storm.py [-n 3000] [--processes 2] [--no-spy]

ocppgw as in T9 (`rungateway --processes 2`, Basic auth, validation and log on, PostgreSQL,
Redis): N stations connect, then every socket is dropped and all reconnect at once (passwords
remembered), then the gateway restarts and all reconnect again (nothing remembered). No traffic
and no idle window, so a before/after pair fits in a few minutes. py-spy samples every gateway
process (--nonblocking, every thread) during each storm; each sample is charged to one layer of
a handshake (`layer_of`), and the gateway's CPU over the storm divided by N gives the cost of a
handshake per layer.
"""

import argparse
import json
import shutil
import subprocess
import time

import profile_t1

# A handshake's layers. First the ones told by any frame of the stack (the code that was
# entered decides: the database under the credential check is "credential DB load", the
# database under the log writer is "presence/log rows"), then the innermost frame that belongs
# to one of the rest.
BY_STACK = (
    ("presence/log rows", ("stations/msglog", "stations/dbthread")),
    ("PBKDF2", ("auth/hashers", "stations/hashers")),
    ("credential DB load", ("load_many", "django/db", "psycopg")),
    ("Redis claim", ("redis/", "stations/cluster")),
    ("MQTT subscribe", ("paho/", "stations/bridge")),
)
BY_FRAME = (
    ("admission/gateway", ("stations/", "ocppgw/")),
    ("Channels/asgiref", ("channels/", "asgiref/")),
    ("Daphne", ("daphne/",)),
    ("Twisted/autobahn", ("twisted/", "autobahn/", "txaio/")),
    ("asyncio loop", ("asyncio/",)),
)


def layer_of(stack: str) -> str:
    """The layer of one collapsed stack ("outer;...;inner")."""
    for name, parts in BY_STACK:
        if any(p in stack for p in parts):
            return name
    for frame in reversed(stack.split(";")):
        if "ocppgw/edge" in frame:
            return "Twisted/autobahn"  # our Daphne/Twisted adapters (docs/architecture.md)
        for name, parts in BY_FRAME:
            if any(p in frame for p in parts):
                return name
    return "other (stdlib, interpreter)"


def summarise(collapsed: str) -> dict[str, float]:
    """Share of samples per handshake layer, from py-spy's raw (collapsed) output."""
    return profile_t1.summarise(collapsed, layer_of)


def auth_counts(port: int) -> dict:
    """ocppgw_auth_cache_{hits,shared_hits,misses}_total from /metrics (all processes)."""
    import urllib.request

    out = {}
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            for line in r.read().decode().splitlines():
                for k in ("hits", "shared_hits", "misses"):
                    if line.startswith(f"ocppgw_auth_cache_{k}_total "):
                        out[k] = float(line.split()[1])
    except OSError:
        pass
    return out


def main() -> None:
    import procs
    import run
    import scale

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-n", type=int, default=3000)
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--workers", type=int, default=2, help="load generator processes")
    ap.add_argument("--rate", type=int, default=100, help="py-spy samples per second")
    ap.add_argument("--no-spy", action="store_true", help="storms only, no profile")
    ap.add_argument(
        "--spy-seconds", type=float, default=600, help="profile only a storm's first S seconds"
    )
    ap.add_argument("--env", action="append", default=[], help="KEY=VALUE for the gateway")
    ap.add_argument("--storm-limit", type=float, help="a storm gives up after this many s")
    ap.add_argument("--no-cold", action="store_true", help="skip the storm after a restart")
    ap.add_argument(
        "--concurrency",
        type=int,
        default=200,
        help="handshakes in flight per generator worker while connecting (n/workers: a cold "
        "storm on a fresh gateway, with --connect-only)",
    )
    ap.add_argument("--connect-only", action="store_true", help="no storms, only the connect")
    ap.add_argument("--db", default="postgres")
    ap.add_argument("--redis-url", default="redis://127.0.0.1:6379/15")
    args = ap.parse_args()
    spy = shutil.which("py-spy") or str(run.BENCH.parent / ".venv" / "bin" / "py-spy")
    started = time.strftime("%Y%m%d-%H%M%S")
    run.RESULTS.mkdir(exist_ok=True)
    logs = run.RESULTS / f"storm-{started}-logs"
    logs.mkdir()
    scale.raise_nofile(2 * args.n + 16384)
    with procs.listen_queues() as kernel:
        _run(args, spy, started, logs, kernel)


def _run(args, spy, started, logs, kernel) -> None:
    import gateway as gw
    import procs
    import run
    import scale

    broker = run.Broker(logs, None)
    g = gw.Gateway(logs, broker.url, args.db, args.redis_url)
    g.env.update(kv.split("=", 1) for kv in args.env)
    g.create_stations_code = scale.CREATE_SCALE_STATIONS.format(
        n=args.n, prefix=run.PREFIX, pw=scale.SCALE_PASSWORD
    )
    print(g.prepare(args.n, run.PREFIX).strip(), flush=True)
    port = run.free_port()
    argv = ["scale_loadgen.py", "--url", f"ws://127.0.0.1:{port}/ocpp/", "-n", str(args.n)]
    argv += ["--workers", str(args.workers), "--prefix", run.PREFIX]
    argv += ["--password", scale.SCALE_PASSWORD, "--per-station-rate", "0.05"]
    argv += ["--concurrency", str(args.concurrency)]
    out: dict = {"n": args.n, "processes": args.processes, "env": args.env, "kernel": kernel}
    out["phases"] = {}

    def phase(name: str, lg, word: str, event: str) -> None:
        pids = [p.pid for p in procs.tree(g.pid)]
        spies = []
        if not args.no_spy:
            for pid in pids:
                cmd = [spy, "record", "--pid", str(pid), "--nonblocking", "--format", "raw"]
                cmd += ["--rate", str(args.rate), "--duration", str(int(args.spy_seconds))]
                cmd += ["--output", str(logs / f"{name}-{pid}.txt")]
                spies.append(
                    subprocess.Popen(
                        cmd, stdout=subprocess.DEVNULL, stderr=open(logs / "py-spy.log", "a")
                    )
                )
            time.sleep(1.0)  # py-spy attached
        m0 = auth_counts(port)
        c0 = run.cpu_s(g.pid)
        lg.send(word)
        ev = lg.expect(event, 900)
        cpu = run.cpu_s(g.pid) - c0
        time.sleep(1.5)  # the gateway samples its counters every second (stations/metrics.py)
        m1 = auth_counts(port)
        for p in spies:
            p.send_signal(2)  # SIGINT: py-spy writes what it has
        for p in spies:
            p.wait(60)
        wall = ev["t_last"] - ev["t_start"]
        collapsed = "\n".join(f.read_text() for f in logs.glob(f"{name}-*.txt") if f.exists())
        res = {
            "stations": ev["connected"],
            "wall_s": round(wall, 2),
            "first_back_s": round(ev.get("t_first", ev["t_start"]) - ev["t_start"], 2),
            "per_s": round(ev["connected"] / wall) if wall else None,
            "errors": ev.get("errors", {}),
            "refused": ev.get("refused", {}),
            "cpu_s": round(cpu, 2),
            "cpu_ms_per_handshake": round(cpu / max(1, ev["connected"]) * 1000, 2),
            # password checks by where they were answered (deltas of /metrics over the phase)
            "auth": {k: m1.get(k, 0) - m0.get(k, 0) for k in m1},
            "layers": summarise(collapsed) if collapsed else {},
        }
        out["phases"][name] = res
        print(f"[{name}] {json.dumps(res)}", flush=True)

    try:
        g.start(port, args.processes)
        lg = run.Child("storm-loadgen", argv, logs)
        try:
            lg.expect("ready", 60)
            phase("connect", lg, "connect", "connected")
            storm = "storm" + (f" {args.storm_limit}" if args.storm_limit else "")
            if not args.connect_only:
                time.sleep(3)
                phase("remembered", lg, storm, "stormed")
            if not (args.connect_only or args.no_cold):
                g.stop()
                g.forget_verified()  # nothing remembered: not in Redis either
                g.start(port, args.processes)
                phase("cold", lg, storm, "stormed")
            lg.send("close")
            lg.expect("closed", 120)
        finally:
            lg.stop()
    finally:
        g.stop()
        broker.stop()
    (run.RESULTS / f"storm-{started}.json").write_text(json.dumps(out, indent=1))
    for name, res in out["phases"].items():
        print(
            f"\n{name}: {res['stations']} in {res['wall_s']} s = {res['per_s']}/s, "
            f"gateway CPU {res['cpu_ms_per_handshake']} ms per handshake, "
            f"errors {res['errors']}, refused {res['refused']}"
        )
        if res["layers"]:
            print("| layer | share | ms CPU per handshake |\n|---|---|---|")
            for k, v in res["layers"].items():
                print(f"| {k} | {v}% | {v / 100 * res['cpu_ms_per_handshake']:.2f} |")


if __name__ == "__main__":
    main()
