"""T9, the scale run (`make bench BENCH_ARGS=--scale`): tens of thousands of stations on one node.

For ocppgw (`rungateway --processes 2`, auth, validation and message log on) and `bare`, in one
run: N stations connect (RSS and CPU sampled against the connected count), stay idle for one
ping interval (idle CPU), send 0.05 msg/s each for --scale-duration s (p99 upstream latency at
the broker, lost frames, and one well-behaved station's backend round trip every 0.25 s), then
all drop and reconnect at once (passwords remembered), then the server is restarted and all
reconnect again (nothing remembered). The load generator (scale_loadgen.py) reports its own CPU
per phase; a phase where one of its processes used more than 90% of a core is marked invalid.

The table and plots are bench/scale_report.py's; the pure parts of both files are unit-tested in
tests/test_bench_scale.py.
"""

import base64
import contextlib
import copy
import json
import math
import os
import queue
import resource
import socket
import threading
import time
import urllib.request
from pathlib import Path

from scale_report import MIB, generator_share, rows, slow_seconds, table, write_plots

PROBE_EVERY_S = 0.25


def percentile(values: list[float], p: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, int(len(s) * p / 100))]


# --- the run -----------------------------------------------------------------------------------


class Probe(threading.Thread):
    """Backend round trips to one station: a Reset CALL every PROBE_EVERY_S, reply matched."""

    def __init__(self, host: str, port: int, cid: str) -> None:
        super().__init__(daemon=True)
        import paho.mqtt.client as paho
        from paho.mqtt.enums import CallbackAPIVersion

        self.cid, self.rtts, self.out, self.lost, self.seq = cid, [], {}, 0, 0
        self.stop_ev, self.lock = threading.Event(), threading.Lock()
        self.c = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"scale-probe-{os.getpid()}")
        self.c.on_message = self.on_message
        self.c.connect(host, port)
        # paho leaves Nagle on: a CALL written while the previous segment is unacknowledged
        # would wait for the broker's delayed ACK (~40 ms)
        self.c.socket().setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.c.subscribe(f"ocpp/cp/Reply/{cid}", qos=1)
        self.c.loop_start()

    def on_message(self, _c, _u, msg) -> None:
        now = time.monotonic_ns()
        with contextlib.suppress(ValueError, KeyError, TypeError):
            uid = json.loads(msg.payload)["UniqueId"]
            with self.lock:
                t = self.out.pop(uid, None)
            if t is not None:
                self.rtts.append((now - t) / 1e6)

    def run(self) -> None:
        while not self.stop_ev.wait(PROBE_EVERY_S):
            self.seq += 1
            uid = f"probe{self.seq}"
            env = {
                "MessageTypeId": 2,
                "UniqueId": uid,
                "Action": "Reset",
                "Payload": {"type": "Soft"},
            }
            with self.lock:
                self.out[uid] = time.monotonic_ns()
            self.c.publish(f"ocpp/cs/{self.cid}/Reset", json.dumps(env), qos=1)

    def finish(self) -> dict:
        self.stop_ev.set()
        self.join()
        time.sleep(3)  # the last replies
        self.c.loop_stop()
        with self.lock:
            self.lost = len(self.out)
        return {
            "sent": self.seq,
            "p50": percentile(self.rtts, 50),
            "p99": percentile(self.rtts, 99),
            "max": max(self.rtts, default=None),
            "lost": self.lost,
        }


FD_MARGIN = 1024  # descriptors a process needs besides its station sockets


def plan(n: int, nofile: int, workers: int, processes: int) -> dict:
    """Fit the run in the per-process fd limit (a sandbox may cap the hard limit, e.g. 20,000
    without CAP_SYS_RESOURCE): enough load generator workers and gateway processes for n
    sockets, and the stations a one-process baseline can hold."""
    per = max(1, nofile - FD_MARGIN)
    return {
        "per_process": per,
        "workers": max(workers, math.ceil(n / per)),
        "processes": max(processes, math.ceil(n / per)),
        "bare_stations": min(n, per),
    }


def raise_nofile(want: int) -> int:
    """This process's fd limit (inherited by the servers and generators it starts)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < want:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, max(hard, want)))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def collect(lg, final: str, timeout: float, srv_pid: int, run) -> tuple[dict, list]:
    """Wait for `final`, sampling the server (RSS, CPU) at each progress event, >= 1 s apart."""
    samples, deadline = [], time.monotonic() + timeout
    t0 = last_t = time.monotonic()
    last_c = run.cpu_s(srv_pid)
    last_gen = None  # the generator's workers' CPU seconds at the last sample
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"no {final} within {timeout} s")
        try:
            ev = lg.events.get(timeout=min(left, 1))
        except queue.Empty:
            continue
        if ev.get("event") == final:
            return ev, samples
        if ev.get("event") == "exit":
            raise RuntimeError(f"load generator ended before {final}, see {lg.log.name}")
        if ev.get("event") == "progress" and time.monotonic() - last_t >= 1.0:
            now, c = time.monotonic(), run.cpu_s(srv_pid)
            sample = {
                "t": round(now - t0, 2),
                "connected": ev["connected"],
                "rss": run.rss(srv_pid),
                "cpu_pct": round((c - last_c) / (now - last_t) * 100, 1),
            }
            gen = ev.get("cpu")
            if gen and last_gen and None not in gen + last_gen and len(gen) == len(last_gen):
                per = [(a - b) / (now - last_t) * 100 for a, b in zip(gen, last_gen, strict=True)]
                sample["gen_pct"], sample["gen_max_pct"] = round(sum(per), 1), round(max(per), 1)
            samples.append(sample)
            last_t, last_c, last_gen = now, c, gen


def _failed(st: dict, n: int) -> int:
    """Stations not back after a storm plus failed attempts of those that are ("gave up" is
    counted once, as a station not back)."""
    attempts = sum(v for k, v in st["errors"].items() if k != "gave up")
    return attempts + (n - st["connected"])


def capacity_refusal(g, run, port: int) -> dict:
    """Past capacity as a station sees it: ocppgw (one process, same database, no Redis) with
    OCPPGW_MAX_STATIONS=1 holds station 0; station 1 must get HTTP 503 with Retry-After, and
    /metrics must count it as ocppgw_auth_refusals_total{reason="capacity"}."""
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    probe = copy.copy(g)
    probe.env = {**g.env, "OCPPGW_MAX_STATIONS": "1", "REDIS_URL": ""}
    out = {"status": None, "retry_after": None, "counted": 0.0, "ok": False}

    def open_(i: int):
        cid = f"{run.PREFIX}{i:05d}"
        token = base64.b64encode(f"{cid}:{SCALE_PASSWORD}".encode()).decode()
        return connect(
            f"ws://127.0.0.1:{port}/ocpp/{cid}",
            subprotocols=["ocpp1.6"],
            additional_headers={"Authorization": f"Basic {token}"},
            open_timeout=30,
        )

    probe.start(port, 1)
    try:
        with open_(0):
            try:
                open_(1).close()
                out["status"] = 101
            except InvalidStatus as exc:
                out["status"] = exc.response.status_code
                out["retry_after"] = exc.response.headers.get("Retry-After")
            out["counted"] = metrics_refusals(port).get("capacity", 0.0)
    finally:
        probe.stop()
    out["ok"] = out["status"] == 503 and bool(out["retry_after"]) and out["counted"] >= 1
    return out


def metrics_refusals(port: int) -> dict:
    """ocppgw_auth_refusals_total by reason, from /metrics."""
    out = {}
    with contextlib.suppress(OSError):
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            for line in r.read().decode().splitlines():
                if line.startswith("ocppgw_auth_refusals_total{"):
                    label, v = line.rsplit(" ", 1)
                    out[label.split('"')[1]] = float(v)
    return out


def measure(run, srv, name: str, args, broker, logs: Path, port: int, n: int, pl: dict,
            save=lambda res: None) -> dict:  # fmt: skip
    """One server through every T9 phase; `save(res)` after each (a stopped run keeps them)."""
    res = {"name": name, "stations": n}
    gen_pct: dict = {}
    res["generator_pct"] = gen_pct
    processes = pl["processes"] if name == "ocppgw" else 1
    res["processes"] = processes
    srv.start(port, processes)
    res["settings"] = srv.settings()
    argv = [
        "scale_loadgen.py",
        "--url",
        f"ws://127.0.0.1:{port}/ocpp/",
        "-n",
        str(n),
        "--workers",
        str(pl["workers"]),
        "--prefix",
        run.PREFIX,
        "--password",
        SCALE_PASSWORD,
        "--per-station-rate",
        str(args.scale_rate),
    ]
    lg = run.Child(f"scale-loadgen-{name}", argv, logs)
    try:
        ready = lg.expect("ready", 60)
        res["generator_nofile"], res["source_addresses"] = ready["nofile"], ready["addresses"]
        rss0 = run.rss(srv.pid)
        print(f"[{name}] connecting {n} stations", flush=True)
        lg.send("connect")
        conn, res["connect_samples"] = collect(lg, "connected", 1200, srv.pid, run)
        gen_pct["connect"] = conn.get("cpu_pct_max_worker")
        res["connected"] = conn["connected"]
        res["connect_s"] = round(conn["t_last"] - conn["t_start"], 1)
        res["connect_errors"] = conn.get("errors", {})
        failed = sum(conn.get("errors", {}).values())
        res["refused"] = sum(conn.get("refused", {}).values())
        res["rss_before"] = rss0
        time.sleep(5)  # per-connection start-up work settles
        res["rss_connected"] = run.rss(srv.pid)
        save(res)
        print(
            f"[{name}] {conn['connected']} in after {res['connect_s']} s; idle {args.scale_idle} s",
            flush=True,
        )
        c0, w0 = run.cpu_s(srv.pid), time.monotonic()
        g0 = run.cpu_s(lg.p.pid)
        time.sleep(args.scale_idle)
        c1, w1 = run.cpu_s(srv.pid), time.monotonic()
        res["idle_cpu_pct"] = round((c1 - c0) / (w1 - w0) * 100, 1)
        # whole generator tree over the idle window (it only answers pings)
        gen_pct["idle"] = round((run.cpu_s(lg.p.pid) - g0) / (w1 - w0) * 100, 1)
        save(res)
        # traffic
        tag = f"s{time.time_ns() // 1_000_000 % 10**7:07d}:"
        b = run.Bench(args, broker, logs)
        counter = b.counter(tag=tag)
        probe = Probe(broker.host, broker.port, f"{run.PREFIX}00000")
        probe.start()
        sampler = run.Sampler(srv.pid)
        print(
            f"[{name}] traffic {n * args.scale_rate:g} msg/s for {args.scale_duration} s",
            flush=True,
        )
        c0, w0 = run.cpu_s(srv.pid), time.monotonic()
        lg.send(f"traffic {args.scale_duration} {tag}")
        done = lg.expect("done", args.scale_duration + 300)
        c1, w1 = run.cpu_s(srv.pid), time.monotonic()
        pr = probe.finish()
        counter.send(f"stop {done['sent']}")
        rep = counter.expect("report", 120)
        counter.stop()
        res["rss_peak_mib"] = round(sampler.stop() / MIB, 1)
        gen_pct["traffic"] = done.get("cpu_pct_max_worker")
        # how far behind its schedule a worker fell: frames it sent late went out in a burst
        res["generator_lag_max_s"] = done.get("lag_max_s")
        res["offered"] = round(n * args.scale_rate, 1)
        res["sent"] = done["sent"]
        res["published"] = rep["kinds"].get("call", 0)
        res["lost"] = max(0, done["sent"] - res["published"])
        failed += done.get("send_errors", 0)
        res["latency_p50"] = rep["latency_ms"]["p50"]
        res["latency_p99"] = rep["latency_ms"]["p99"]
        res["latency_by_s"] = rep.get("latency_by_s") or []
        res["slow_seconds"] = slow_seconds(res["latency_by_s"], 50.0)
        res["traffic_cpu_pct"] = round((c1 - c0) / (w1 - w0) * 100, 1)
        res["probe"] = pr
        res["probe_p99"] = round(pr["p99"], 2) if pr["p99"] is not None else None
        res["probe_lost"] = pr["lost"] if pr["sent"] else None
        res["failed"] = failed
        save(res)
        # storm, passwords remembered; stations not back within the limit are given up on
        limit = args.scale_storm_limit
        print(f"[{name}] storm (remembered), at most {limit:g} s", flush=True)
        lg.send(f"storm {limit}")
        st, res["storm_samples"] = collect(lg, "stormed", limit + 120, srv.pid, run)
        res["closed_by_server"] = sum(st.get("closed_by_server", {}).values()) or 0
        gen_pct["storm"] = st.get("cpu_pct_max_worker")
        res["storm_s"] = round(st["t_last"] - st["t_start"], 1)
        res["storm_failed"] = _failed(st, n)
        res["storm_errors"], res["storm_refused"] = st["errors"], st["refused"]
        res["storm_generator"] = generator_share(res["storm_samples"])
        res["rss_after_storm_mib"] = round(run.rss(srv.pid) / MIB, 1)
        save(res)
        # restart, nothing remembered
        print(f"[{name}] restart, storm (nothing remembered)", flush=True)
        srv.stop()
        if name == "ocppgw":
            srv.forget_verified()  # nothing remembered: not in Redis either
        srv.start(port, processes)
        lg.send(f"storm {limit}")
        st, res["cold_samples"] = collect(lg, "stormed", limit + 120, srv.pid, run)
        gen_pct["cold"] = st.get("cpu_pct_max_worker")
        res["cold_s"] = round(st["t_last"] - st["t_start"], 1)
        res["cold_failed"] = _failed(st, n)
        res["cold_errors"], res["cold_refused"] = st["errors"], st["refused"]
        res["cold_generator"] = generator_share(res["cold_samples"])
        if name == "ocppgw":
            res["metrics_refusals"] = metrics_refusals(port)
        save(res)
        lg.send("close")
        with contextlib.suppress(Exception):
            lg.expect("closed", 120)
    finally:
        lg.stop()
        srv.stop()
    if name == "ocppgw":
        res["capacity_probe"] = capacity_refusal(srv, run, port)
        res["capacity_refusal"] = res["capacity_probe"]["ok"]
    res["generator_max_pct"] = max((v for v in gen_pct.values() if v is not None), default=None)
    return res


SCALE_PASSWORD = "bench-scale-secret"

# One hash for every station (the same password, so 50,000 stations are created in seconds
# instead of ~4 CPU-minutes of PBKDF2); the gateway still verifies each station's password.
CREATE_SCALE_STATIONS = """
import time
from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import make_password
from stations import auth, identity
from stations.models import Station
N, PREFIX, PW = {n}, {prefix!r}, {pw!r}
t = time.monotonic()
cids = [f"{{PREFIX}}{{i:05d}}" for i in range(N)]
User = get_user_model()
h = make_password(PW, hasher=auth.STATION_HASHER)
User.objects.bulk_create([User(username=c, password=h) for c in cids], batch_size=5000)
ids = dict(User.objects.filter(username__in=cids).values_list("username", "id"))
Station.objects.bulk_create(
    [Station(cid=c, cid_key=identity.key(c), user_id=ids[c]) for c in cids], batch_size=5000
)
print(f"created {{N}} stations in {{time.monotonic() - t:.1f}} s")
"""


def main(run, args) -> None:
    """The whole scale run: bare, then ocppgw; table, JSON and SVG plots under bench/results/."""
    import procs

    n = args.scale_stations
    started = time.strftime("%Y%m%d-%H%M%S")
    run.RESULTS.mkdir(exist_ok=True)
    logs = run.RESULTS / f"scale-{started}-logs"
    logs.mkdir()
    nofile = raise_nofile(2 * n + 16384)
    pl = plan(n, nofile, args.scale_workers, args.scale_processes)
    with procs.listen_queues() as kernel:
        _main(run, args, n, started, logs, nofile, pl, kernel)


def _main(run, args, n, started, logs, nofile, pl, kernel) -> None:
    import gateway as gw

    broker = run.Broker(logs, args.mqtt_url)
    data = {
        "started": started,
        "options": vars(args),
        "nofile": nofile,
        "kernel": kernel,
        "plan": pl,
        "machine": {"cpus": os.cpu_count(), "python": os.sys.version.split()[0]},
        "servers": {},
    }
    t_start = time.monotonic()
    partial = run.RESULTS / f"scale-{started}.json"

    def save(res: dict) -> None:
        """The run so far, rewritten after every phase (the final JSON replaces it)."""
        data["servers"][res["name"]] = res
        partial.write_text(json.dumps({**data, "partial": True}, indent=1))

    try:
        if args.only in (None, "bare"):
            print(f"== bare, {pl['bare_stations']} stations", flush=True)
            data["servers"]["bare"] = measure(
                run,
                run.Bare(logs, broker),
                "bare",
                args,
                broker,
                logs,
                run.free_port(),
                pl["bare_stations"],
                pl,
                save,
            )
        if args.only in (None, "ocppgw"):
            print(f"== ocppgw, {n} stations", flush=True)
            g = gw.Gateway(logs, broker.url, args.db, args.redis_url)
            g.create_stations_code = CREATE_SCALE_STATIONS.format(
                n=n, prefix=run.PREFIX, pw=SCALE_PASSWORD
            )
            print("  " + g.prepare(n, run.PREFIX), flush=True)
            data["servers"]["ocppgw"] = measure(
                run, g, "ocppgw", args, broker, logs, run.free_port(), n, pl, save
            )
    finally:
        broker.stop()
    data["elapsed_s"] = round(time.monotonic() - t_start, 1)
    data["table"] = rows(data["servers"], n)
    data["plots"] = [p.name for p in write_plots(data["servers"], run.RESULTS, f"scale-{started}")]
    (run.RESULTS / f"scale-{started}.json").write_text(json.dumps(data, indent=1))
    print()
    print(table(data["table"]))
    print(
        f"\n{n} stations, {args.scale_duration} s traffic at {args.scale_rate} msg/s each; "
        f"elapsed {data['elapsed_s']} s; fd limit {nofile} per process; plan {pl}; {kernel}"
    )
    for name, res in data["servers"].items():
        print(
            f"{name}: {json.dumps(res.get('settings', {}))}; generator CPU by phase "
            f"{res.get('generator_pct')}, most behind its traffic schedule "
            f"{res.get('generator_lag_max_s')} s; storm errors {res.get('storm_errors')}, "
            f"after restart {res.get('cold_errors')}; /metrics refusals "
            f"{res.get('metrics_refusals')}"
        )
    print(f"results: {run.RESULTS / ('scale-' + started + '.json')}; plots: {data['plots']}")
