"""T9's table and plots: the rows with their targets and pass/fail per server, the markdown table,
and the SVG plots (bench/svgplot.py). Pure: bench/scale.py measures, this reports
(tests/test_bench_scale.py)."""

from pathlib import Path

import report
import svgplot

GENERATOR_LIMIT_PCT = 90.0
MIB = 2**20

# row: (name, unit, key in a server's result, target text, check, phase whose generator CPU
# must stay under GENERATOR_LIMIT_PCT for the figure to be the server's)
ROWS = (
    ("T9 stations (N; bare: what one process's fd limit holds)", "conns", "stations", "(info)",
     None, None),
    ("T9 stations connected", "conns", "connected", "= N", "all", "connect"),
    ("T9 failed connection attempts (connect + run)", "conns", "failed", "0", "zero", "connect"),
    ("T9 retryable refusals (503/1013), retried", "conns", "refused", "(info)", None, "connect"),
    ("T9 time to connect all (100-200 handshakes at a time)", "s", "connect_s", "(info)",
     None, "connect"),
    ("T9 RSS of the server's processes (peak)", "MiB", "rss_peak_mib", "<= 2048 MiB",
     ("max", 2048), None),
    ("T9 idle CPU (connected, no traffic)", "% core", "idle_cpu_pct", "<= 25%",
     ("max", 25), "idle"),
    ("T9 CPU at 0.05 msg/s per station", "% core", "traffic_cpu_pct", "(info)", None, "traffic"),
    ("T9 upstream rate offered", "msg/s", "offered", "(info: N x 0.05)", None, "traffic"),
    ("T9 upstream latency p50", "ms", "latency_p50", "(info)", None, "traffic"),
    ("T9 upstream latency p99", "ms", "latency_p99", "<= 50 ms", ("max", 50), "traffic"),
    ("T9 upstream latency: seconds whose p99 passed 50 ms / seconds of traffic", "s",
     "slow_seconds", "(info)", None, "traffic"),
    ("T9 frames lost", "frames", "lost", "0", "zero", "traffic"),
    ("T9 sockets closed by the server during the run", "conns", "closed_by_server", "0",
     "zero", None),
    ("T9 backend round trip to one station p99", "ms", "probe_p99", "<= 100 ms",
     ("max", 100), "traffic"),
    ("T9 backend round trips unanswered", "calls", "probe_lost", "0", "zero", "traffic"),
    ("T9 reconnect storm, all in (remembered)", "s", "storm_s", "<= 60 s, 0 failed",
     ("storm", 60, "storm_failed"), "storm"),
    ("T9 storm failed attempts (remembered)", "conns", "storm_failed", "0", "zero", "storm"),
    ("T9 storm after restart, all in", "s", "cold_s", "<= 120 s, 0 failed",
     ("storm", 120, "cold_failed"), "cold"),
    ("T9 storm failed attempts (after restart)", "conns", "cold_failed", "0", "zero", "cold"),
    # on one machine the generator's reconnects take cores the server then lacks (its
    # connect() calls, and a retry for every refusal): how much, while the storms ran
    ("T9 generator CPU in the storm (remembered): all workers, mean / first 30 s",
     "% core", "storm_generator", "(info)", None, None),
    ("T9 generator CPU in the storm after restart: all workers, mean / first 30 s",
     "% core", "cold_generator", "(info)", None, None),
    ("T9 past-capacity refusal 1013/503 counted in /metrics", "", "capacity_refusal",
     "exists", "true", None),
    ("T9 load generator CPU, busiest process, worst phase", "% core", "generator_max_pct",
     "<= 90% (else run invalid)", ("max", GENERATOR_LIMIT_PCT), None),
)  # fmt: skip


def check(rule, value, result: dict, n: int):
    """Pass/fail of one figure (None: info row or no figure)."""
    if rule is None or value is None:
        return None
    if rule == "all":
        return value == n
    if rule == "zero":
        return value == 0
    if rule == "true":
        return bool(value)
    if rule[0] == "max":
        return value <= rule[1]
    if rule[0] == "storm":
        return value <= rule[1] and result.get(rule[2]) == 0
    raise ValueError(rule)


def slow_seconds(by_second: list, limit_ms: float) -> str | None:
    """How many seconds of a latency series (counter.by_second rows) had their p99 past
    `limit_ms`, of how many: "k / n", or None without a series."""
    if not by_second:
        return None
    return f"{sum(1 for row in by_second if row[3] > limit_ms)} / {len(by_second)}"


def generator_share(samples: list[dict], first_s: float = 30.0) -> str | None:
    """The generator's CPU over a storm's samples (all workers, % of one core): "mean / mean of
    the first `first_s` s", or None when the samples do not carry it."""
    pcts = [(s["t"], s["gen_pct"]) for s in samples if "gen_pct" in s]
    if not pcts:
        return None
    first = [p for t, p in pcts if t <= first_s] or [pcts[0][1]]
    mean = sum(p for _, p in pcts) / len(pcts)
    return f"{mean:.0f} / {sum(first) / len(first):.0f}"


def generator_ok(result: dict, phase: str | None) -> bool:
    """Whether the generator stayed under its limit in the phase a figure comes from."""
    if phase is None:
        return True
    pct = (result.get("generator_pct") or {}).get(phase)
    return pct is None or pct <= GENERATOR_LIMIT_PCT


def rows(servers: dict, n: int) -> list[dict]:
    """One row per figure: target, and per server its value and pass ("invalid" when the load
    generator was saturated in the phase the figure comes from)."""
    out = []
    for name, unit, key, target, rule, phase in ROWS:
        row = {"measure": name, "unit": unit, "target": target}
        for srv in ("bare", "ocppgw"):
            res = servers.get(srv)
            v = None if res is None else res.get(key)
            ok = None if res is None else check(rule, v, res, res.get("stations", n))
            if ok is not None and not generator_ok(res, phase):
                ok = "invalid"
            row[srv], row[f"{srv} pass"] = v, ok
        out.append(row)
    return out


def fmt(v) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, bool):
        return "yes" if v else "NO"
    if isinstance(v, float):
        return f"{v:,.2f}" if abs(v) < 100 else f"{v:,.0f}"
    return f"{v:,}" if isinstance(v, int) else str(v)


def table(rs: list[dict]) -> str:
    """Markdown table of rows(): per server its figure and pass."""
    head = ["measure", "unit", "target", "bare", "bare pass", "ocppgw", "ocppgw pass"]
    return report.markdown(head, rs, fmt)


# --- plots (bench/svgplot.py draws them) ---------------------------------------------------


def write_plots(servers: dict, out: Path, stem: str) -> list[Path]:
    """RSS and CPU against connected stations, latency p99 per second of traffic, and the storms
    (connected over time)."""
    files = []
    spec = (
        (
            "rss",
            "RSS against connected stations",
            "MiB",
            lambda s: [(p["connected"], p["rss"] / MIB) for p in s.get("connect_samples", [])],
            {"target 2 GiB": 2048},
        ),
        (
            "cpu",
            "CPU while connecting, against connected stations",
            "% of one core",
            lambda s: [(p["connected"], p["cpu_pct"]) for p in s.get("connect_samples", [])],
            None,
        ),
    )
    for key, title, ylabel, pick, hl in spec:
        series = {name: pick(res) for name, res in servers.items()}
        path = out / f"{stem}-{key}.svg"
        path.write_text(svgplot.svg_plot(title, "connected stations", ylabel, series, hl))
        files.append(path)
    series = {}
    for name, res in servers.items():
        for phase, label in (("storm_samples", "remembered"), ("cold_samples", "after restart")):
            s = res.get(phase) or []
            if s:
                series[f"{name} {label}"] = [(p["t"], p["connected"]) for p in s]
    path = out / f"{stem}-latency.svg"
    path.write_text(
        svgplot.svg_plot(
            "Upstream latency p99 per second of traffic",
            "s since the counter started",
            "ms",
            {
                name: [(r[0], r[3]) for r in res.get("latency_by_s") or []]
                for name, res in servers.items()
            },
            {"target 50 ms": 50},
        )
    )
    files.append(path)
    path = out / f"{stem}-storm.svg"
    path.write_text(
        svgplot.svg_plot(
            "Reconnect storm: connected over time", "s since the drop", "connected stations", series
        )
    )
    files.append(path)
    return files
