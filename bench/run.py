"""One benchmark run: `bare` and ocppgw side by side, targets T1-T8 of docs/performance.md.

Every measure runs the server under test, a load generator, an MQTT counter (or the round-trip
responder) and the broker as separate processes on this machine. Server CPU and RSS come from
psutil on the server's pid and its children, as deltas over the measure's window. Results go to
bench/results/<timestamp>.json (+ PNG plots when matplotlib is installed) and one table.

    python bench/run.py                  # the whole run (what `make bench` does), < 15 min
    python bench/run.py --quick          # one repetition, shorter windows (~5 min)
    python bench/run.py --only bare      # just the baseline
"""

import argparse
import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import gateway as gw
import psutil
from procs import BENCH, Bare, Broker, Child, Sampler, cpu_s, free_port, machine_busy_s, rss
from report import plots, rows, table

RESULTS = BENCH / "results"
PREFIX = "CP"


def in_window(report: dict, t0: int, t1: int) -> float:
    """Messages the counter saw inside [t0, t1] (partial 100 ms bins weighted by overlap)."""
    ct0, width = report["t0_ns"], report["bin_ns"]
    total = 0.0
    for b, n in report["bins"].items():
        lo = ct0 + int(b) * width
        hi = lo + width
        overlap = min(hi, t1) - max(lo, t0)
        if overlap > 0:
            total += n * overlap / width
    return total


# --- measures ----------------------------------------------------------------------------------


class Bench:
    """Runs the measures against one started server."""

    def __init__(self, args, broker: Broker, logs: Path) -> None:
        self.args, self.broker, self.logs = args, broker, logs

    def mqtt_args(self) -> list[str]:
        return ["--mqtt-host", self.broker.host, "--mqtt-port", str(self.broker.port)]

    def loadgen(self, srv, mode: str, n: int, extra: list[str]) -> Child:
        argv = ["loadgen.py", mode, "--url", f"ws://127.0.0.1:{srv.port}/ocpp/", "-n", str(n)]
        argv += ["--prefix", PREFIX, "--password", gw.PASSWORD, *extra]
        lg = Child(f"loadgen-{srv.name}", argv, self.logs)
        lg.expect("ready", 30)
        return lg

    def counter(self, shm: str | None = None, tag: str = "") -> Child:
        """Start a counter; it is ready once the previous measure's tail has gone quiet."""
        argv = ["counter.py", *self.mqtt_args(), "--tag", tag] + (["--shm", shm] if shm else [])
        c = Child("counter", argv, self.logs)
        c.expect("ready", 60)
        return c

    def settle(self) -> None:
        """Wait until nothing is being published upstream any more (bounded by the counter)."""
        c = self.counter()
        c.send("stop 0")
        c.expect("report", 30)
        c.stop()

    def upstream(self, srv, mode: str, n: int, duration: float, rate: float = 0) -> dict:
        """fire or open: sent by the load generator vs counted at the broker, server CPU/RSS."""
        shm = None
        if mode == "fire":
            shm = f"/dev/shm/ocppgw-bench-{os.getpid()}.slots"
            from shm import Slots

            Slots(shm, create=True).close()
        tag = f"t{time.time_ns() // 1_000_000 % 10**7:07d}:"  # this measure's UniqueIds
        counter = self.counter(shm, tag)
        extra = ["--duration", str(duration), "--workers", str(self.args.workers), "--tag", tag]
        if mode == "fire":
            extra += ["--shm", shm, "--max-inflight", str(self.args.max_inflight)]
        else:
            extra += ["--rate", str(rate)]
        lg = self.loadgen(srv, mode, n, extra)
        try:
            lg.send("connect")
            conn = lg.expect("connected", 180)
            time.sleep(1.0)
            rss_idle = rss(srv.pid)
            sampler = Sampler(srv.pid)
            helpers = {"loadgen": lg.p.pid, "counter": counter.p.pid, "broker": self.broker.pid}
            h0 = {k: cpu_s(p) for k, p in helpers.items() if p}
            w0, m0, c0 = time.monotonic(), machine_busy_s(), cpu_s(srv.pid)
            lg.send("go")
            done = lg.expect("done", duration + 120)
            w1, m1, c1 = time.monotonic(), machine_busy_s(), cpu_s(srv.pid)
            h1 = {k: round((cpu_s(helpers[k]) - v) / (w1 - w0) * 100, 1) for k, v in h0.items()}
            # whatever else ran on the machine meanwhile (other users' tests): context for noise
            h1["others"] = round(((m1 - m0) - (c1 - c0)) / (w1 - w0) * 100 - sum(h1.values()), 1)
            counter.send(f"stop {done['sent']}")
            rep = counter.expect("report", 120)
            c2 = cpu_s(srv.pid)
            peak = sampler.stop()
            lg.send("close")
            closed = lg.expect("closed", 60)
        finally:
            lg.stop()
            counter.stop()
            if shm:
                with contextlib.suppress(OSError):
                    os.unlink(shm)
        t0, t1 = done["t0_ns"], done["t1_ns"]
        win_s = (t1 - t0) / 1e9
        seen = in_window(rep, t0, t1)
        calls = rep["kinds"].get("call", 0)
        answered = sum(v for k, v in closed["rx"].items() if k in ("3", "4"))
        missing = max(0, done["sent"] - calls - answered)
        # missing frames are lost once the stream went quiet; at the drain limit they were
        # still coming (a slow server's backlog), so they are reported as late, not lost
        late = missing if rep["drain_reason"] == "limit" else 0
        return {
            "connected": conn["connected"],
            "connect_failed": conn["failed"],
            "window_s": round(win_s, 3),
            "sent": done["sent"],
            "published": calls,
            "answered_by_gateway": answered,
            "lost": missing - late,
            "late_at_drain_limit": late,
            "drain_reason": rep["drain_reason"],
            "extra_published": max(0, calls + answered - done["sent"]),
            "duplicates": rep["duplicates"],
            "stale_from_earlier": rep["stale"],
            "drain_s": rep["drain_s"],
            "broker_dropped": rep["broker_dropped"],
            "throughput": round(seen / win_s, 1),
            "offered": rate or None,
            "latency_ms": rep["latency_ms"],
            "cpu_window_s": round(c1 - c0, 3),
            "cpu_pct_window": round((c1 - c0) / win_s * 100, 1),
            "helpers_cpu_pct_window": h1,
            "cpu_total_s": round(c2 - c0, 3),
            "cpu_us_per_msg": round((c1 - c0) / seen * 1e6, 1) if seen else None,
            "cpu_us_per_msg_incl_drain": round((c2 - c0) / calls * 1e6, 1) if calls else None,
            "rss_idle": rss_idle,
            "rss_peak": peak,
            "rss_peak_ratio": round(peak / rss_idle, 3) if rss_idle else None,
            "closed_by_server": closed["closed_by_server"],
            "send_errors": done["send_errors"],
            "lag_max_ms": done.get("lag_max_ms"),
        }

    def rtt(self, srv, n: int, duration: float) -> dict:
        """Downstream CALL -> CP -> CALLRESULT round trips, one outstanding per CP."""
        self.settle()
        lg = self.loadgen(srv, "rtt", n, ["--workers", str(self.args.workers)])
        argv = ["responder.py", *self.mqtt_args(), "-n", str(n), "--prefix", PREFIX]
        argv += ["--duration", str(duration)]
        resp = Child("responder", argv, self.logs)
        try:
            resp.expect("ready", 20)
            lg.send("connect")
            conn = lg.expect("connected", 180)
            resp.send("warm")
            warm = resp.expect("warm", 60)
            w0, m0, c0 = time.monotonic(), machine_busy_s(), cpu_s(srv.pid)
            resp.send("go")
            done = resp.expect("done", duration + 60)
            w1, m1, c1 = time.monotonic(), machine_busy_s(), cpu_s(srv.pid)
            lg.send("go")
            lg.send("close")
            closed = lg.expect("closed", 60)
        finally:
            resp.stop()
            lg.stop()
        return {
            "connected": conn["connected"],
            "warm_missing": warm["missing"],
            **{k: v for k, v in done.items() if k != "event"},
            "cpu_us_per_rtt": round((c1 - c0) / done["replies"] * 1e6, 1)
            if done["replies"]
            else None,
            "cp_answered": closed["answered"],
            "server_cpu_pct": round((c1 - c0) / (w1 - w0) * 100, 1),
            "machine_cpu_pct": round((m1 - m0) / (w1 - w0) * 100, 1),
            "closed_by_server": closed["closed_by_server"],
        }

    def idle(self, srv, n: int, duration: float) -> dict:
        """RSS per idle connection and idle CPU; the server should be fresh (allocator state)."""
        self.settle()
        rss0 = rss(srv.pid)
        lg = self.loadgen(srv, "idle", n, ["--duration", str(duration), "--concurrency", "200"])
        try:
            lg.send("connect")
            conn = lg.expect("connected", 300)
            time.sleep(2.0)  # let per-connection start-up work (presence, log) finish
            rss1 = rss(srv.pid)
            w0, m0, c0 = time.monotonic(), machine_busy_s(), cpu_s(srv.pid)
            lg.send("go")
            done = lg.expect("done", duration + 60)
            w1, m1, c1 = time.monotonic(), machine_busy_s(), cpu_s(srv.pid)
            rss2 = rss(srv.pid)
            lg.send("close")
            lg.expect("closed", 120)
        finally:
            lg.stop()
        k = conn["connected"] or 1
        return {
            "connected": conn["connected"],
            "connect_failed": conn["failed"],
            "connect_s": round((conn["t_last_ns"] - conn["t_start_ns"]) / 1e9, 2),
            "rss_before": rss0,
            "rss_connected": rss1,
            "rss_after_idle": rss2,
            "kib_per_conn": round((rss1 - rss0) / k / 1024, 2),
            "idle_cpu_pct": round((c1 - c0) / ((done["t1_ns"] - done["t0_ns"]) / 1e9) * 100, 3),
            "machine_cpu_pct": round((m1 - m0) / (w1 - w0) * 100, 1),
        }

    def storm(self, srv, n: int, warm: bool) -> dict:
        """n CPs connecting at once (with warm: each has connected once before)."""
        extra = ["--workers", str(self.args.storm_workers)] + (["--warm"] if warm else [])
        self.settle()
        lg = self.loadgen(srv, "storm", n, extra)
        try:
            lg.send("connect")
            lg.expect("connected", 300)
            time.sleep(1.0)  # the disconnects of the warm-up settle
            m0, c0 = machine_busy_s(), cpu_s(srv.pid)
            lg.send("go")
            done = lg.expect("done", 120)
            m1, c1 = machine_busy_s(), cpu_s(srv.pid)
            lg.send("close")
            closed = lg.expect("closed", 120)
        finally:
            lg.stop()
        st = done["storm"]
        return {
            "connected": st["connected"],
            "failed": st["failed"],
            "errors": st["errors"],
            "all_connected_s": round((st["t_last_ns"] - st["t_start_ns"]) / 1e9, 3),
            "cpu_s": round(c1 - c0, 3),
            "machine_cpu_s": round(m1 - m0, 3),
            "closed_by_server": closed["closed_by_server"],
        }


# --- orchestration -----------------------------------------------------------------------------


def median_run(runs: list[dict], key: str) -> dict:
    """The run whose `key` is the median; every run stays in the JSON."""
    vals = [r for r in runs if r.get(key) is not None]
    if not vals:
        return runs[0] if runs else {}
    vals.sort(key=lambda r: r[key])
    return vals[len(vals) // 2]


def repeat(fn, times: int, key: str, label: str, **kw) -> dict:
    """Run a measure `times` times; median by key, loss summed over every run."""
    runs = []
    for i in range(times):
        t = time.monotonic()
        r = fn(**kw)
        runs.append(r)
        print(f"  {label} #{i + 1}: {key}={r.get(key)} ({time.monotonic() - t:.1f} s)", flush=True)
    out = dict(median_run(runs, key))
    for lost_key in ("lost", "failed", "duplicates", "late_at_drain_limit"):
        if lost_key in out:
            out[lost_key + "_all_runs"] = sum(r.get(lost_key) or 0 for r in runs)
    out["runs"] = runs
    return out


def measure_server(b: Bench, srv, args, port_factory) -> dict:
    """All measures for one server; returns {measure: result}."""
    res: dict = {}
    reps, dur = args.repeat, args.duration
    srv.start(port_factory())
    try:
        # idle first: a fresh process, so freed arenas from earlier load don't hide the cost
        print(f"[{srv.name}] idle {args.idle_n} CPs", flush=True)
        res["idle"] = b.idle(srv, args.idle_n, args.idle_duration)
        print(f"  idle: {res['idle']['kib_per_conn']} KiB/conn", flush=True)
        print(f"[{srv.name}] storm (reconnect, remembered)", flush=True)
        res["storm"] = repeat(
            b.storm, reps, "all_connected_s", "storm", srv=srv, n=args.storm_n, warm=True
        )
        print(f"[{srv.name}] fire", flush=True)
        res["fire"] = repeat(
            b.upstream, reps, "throughput", "fire", srv=srv, mode="fire", n=args.n, duration=dur
        )
        print(f"[{srv.name}] open 1000 msg/s", flush=True)
        res["open"] = repeat(
            b.upstream, reps, "cpu_us_per_msg", "open", srv=srv, mode="open", n=args.n,
            duration=dur, rate=1000,
        )  # fmt: skip
        res["sweep"] = []
        cap = res["fire"]["throughput"] or 0
        for rate in args.sweep:
            if rate > 2 * cap:  # far past capacity the backlog only measures the drain limit
                print(f"  sweep {rate}/s skipped (> 2x fire capacity {cap:.0f}/s)", flush=True)
                continue
            r = b.upstream(srv, "open", args.n, args.sweep_duration, rate)
            print(
                f"  sweep {rate}/s: {r['throughput']}/s p99 {r['latency_ms']['p99']} ms", flush=True
            )
            res["sweep"].append(r)
        print(f"[{srv.name}] rtt", flush=True)
        res["rtt"] = repeat(b.rtt, reps, "rtt_per_s", "rtt", srv=srv, n=args.n, duration=dur)
        res["settings"] = srv.settings()
    finally:
        srv.stop()
    # T6c: right after a start nothing is remembered (only meaningful with auth: ocppgw)
    if srv.name == "ocppgw":
        runs = []
        for i in range(reps):
            srv.start(port_factory())
            try:
                runs.append(b.storm(srv, args.storm_n, warm=False))
                print(f"  cold storm #{i + 1}: {runs[-1]['all_connected_s']} s", flush=True)
            finally:
                srv.stop()
        res["storm_cold"] = median_run(runs, "all_connected_s") | {"runs": runs}
        res["storm_cold"]["failed_all_runs"] = sum(r["failed"] for r in runs)
        if gw.supports_processes():
            srv.start(port_factory(), processes=2)
            try:
                print("[ocppgw] 2 processes: fire, then open 1000 msg/s", flush=True)
                # fire first: it also warms both processes as the earlier measures warmed the
                # single one (each compiles the OCPP schemas, ~3.4 s of CPU, after it starts)
                res["fire_2p"] = b.upstream(srv, "fire", args.n, dur)
                res["open_2p"] = repeat(
                    b.upstream, reps, "cpu_us_per_msg", "open-2p", srv=srv, mode="open",
                    n=args.n, duration=dur, rate=1000,
                )  # fmt: skip
                res["settings_2p"] = srv.settings()
            finally:
                srv.stop()
    return res


def main() -> None:
    """Parse options, run bare, bare-paho, then ocppgw, print and save the report."""
    ap = argparse.ArgumentParser(description="ocppgw benchmark (docs/performance.md)")
    ap.add_argument(
        "--only", choices=["bare", "bare-paho", "ocppgw"], help="measure one server only"
    )
    ap.add_argument("--quick", action="store_true", help="1 repetition, 3 s windows")
    ap.add_argument("--repeat", type=int, default=3, help="repetitions (median reported)")
    ap.add_argument("--duration", type=float, default=5.0, help="window of fire/open/rtt, s")
    ap.add_argument("-n", type=int, default=1000, help="CPs for fire/open/rtt")
    ap.add_argument("--idle-n", type=int, default=5000)
    # one whole ping interval (30 s on both servers): every idle socket is pinged once in it
    ap.add_argument("--idle-duration", type=float, default=30.0)
    ap.add_argument("--storm-n", type=int, default=2000)
    ap.add_argument("--sweep", type=float, nargs="*", default=[500, 2000, 4000, 8000])
    ap.add_argument("--sweep-duration", type=float, default=4.0)
    ap.add_argument("--workers", type=int, default=1, help="load generator processes")
    ap.add_argument("--storm-workers", type=int, default=2, help="load generator processes")
    ap.add_argument("--max-inflight", type=int, default=10000, help="fire: frames in flight")
    ap.add_argument("--mqtt-url", help="use this broker instead of a private Mosquitto")
    ap.add_argument("--db", choices=["postgres", "sqlite"], default="postgres")
    ap.add_argument("--redis-url", default="redis://127.0.0.1:6379/15")
    ap.add_argument("--scale", action="store_true", help="T9 only: the scale run (scale.py)")
    ap.add_argument("--scale-stations", type=int, default=50000)
    ap.add_argument("--scale-duration", type=float, default=300.0, help="traffic window, s")
    ap.add_argument("--scale-rate", type=float, default=0.05, help="msg/s per station")
    ap.add_argument("--scale-idle", type=float, default=30.0, help="idle window, s")
    ap.add_argument("--scale-workers", type=int, default=2, help="load generator processes")
    ap.add_argument("--scale-processes", type=int, default=2, help="rungateway --processes")
    # 5x the remembered storm's 60 s target: a storm that has not made it by then has failed,
    # and how far it got is the figure (the rest are counted as failed)
    ap.add_argument("--scale-storm-limit", type=float, default=300.0, help="storm give-up, s")
    args = ap.parse_args()
    if args.scale:
        import scale

        if args.only == "bare-paho":
            ap.error("--scale runs bare and ocppgw")
        scale.main(sys.modules[__name__], args)
        return
    if args.quick:
        args.repeat, args.duration, args.sweep_duration = 1, 3.0, 3.0

    started = time.strftime("%Y%m%d-%H%M%S")
    RESULTS.mkdir(exist_ok=True)
    logs = RESULTS / f"{started}-logs"
    logs.mkdir()
    t_start = time.monotonic()
    broker = Broker(logs, args.mqtt_url)
    data: dict = {
        "started": started,
        "machine": {
            "cpus": os.cpu_count(),
            "mem_gib": round(psutil.virtual_memory().total / 2**30, 1),
            "python": sys.version.split()[0],
            "mosquitto": subprocess.run(
                ["mosquitto", "-h"], capture_output=True, text=True
            ).stdout.split("\n")[0],
        },
        "options": vars(args),
        "broker": broker.url,
        "servers": {},
    }
    b = Bench(args, broker, logs)
    try:
        for name in ("bare", "bare-paho"):
            if args.only in (None, name):
                print(f"== {name}", flush=True)
                baseline = Bare(logs, broker, name)
                data["servers"][name] = measure_server(b, baseline, args, free_port)
        ok, why = gw.available()
        if args.only in (None, "ocppgw") and ok:
            print("== ocppgw", flush=True)
            g = gw.Gateway(logs, broker.url, args.db, args.redis_url)
            n_st = max(args.idle_n, args.storm_n, args.n)
            print("  " + g.prepare(n_st, PREFIX), flush=True)
            data["servers"]["ocppgw"] = measure_server(b, g, args, free_port)
        elif args.only in (None, "ocppgw"):
            data["ocppgw_skipped"] = why
            print(f"== ocppgw skipped: {why}", flush=True)
    finally:
        broker.stop()
    data["elapsed_s"] = round(time.monotonic() - t_start, 1)
    servers = data["servers"]
    data["table"] = rows(servers.get("bare", {}), servers.get("ocppgw"), servers.get("bare-paho"))
    png = RESULTS / f"{started}.png"
    note = plots(data, png)
    data["plot"] = note or png.name
    (RESULTS / f"{started}.json").write_text(json.dumps(data, indent=1))
    print()
    print(table(data["table"]))
    for name, res in data["servers"].items():
        print(f"\n{name} ran as: {json.dumps(res.get('settings', {}))}")
        if "settings_2p" in res:
            print(f"{name} (T8) ran as: {json.dumps(res['settings_2p'])}")
    print(f"\nbroker: {broker.url} (private Mosquitto unless --mqtt-url)")
    print(f"results: {RESULTS / (started + '.json')}; plot: {data['plot']}")
    print(f"elapsed: {data['elapsed_s']} s")


if __name__ == "__main__":
    main()
