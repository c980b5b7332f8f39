"""The benchmark's report: one row per measure with its target checked, the table, the plots.

Pure functions of run.py's result dict (plots aside, which only write a PNG). A saved run's table
again: `python bench/report.py bench/results/<run>.json`.
"""

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple


def _get(d: dict | None, *path):
    for p in path:
        if d is None:
            return None
        d = d.get(p)
    return d


class Measure(NamedTuple):
    """One row: where its figure sits in a server's result and how the gateway's is judged."""

    name: str
    unit: str
    path: tuple  # keys into a server's result
    target: str
    check: Callable  # (bare, ocppgw, ratio, ocppgw's whole result) -> bool | None
    ratio: bool = True  # whether ocppgw/bare means anything for this row
    scale: float = 1.0  # divide the raw figure by this (bytes -> MiB)
    gateway_path: tuple | None = None  # where ocppgw's figure sits, when not at `path`


def _ratio_at_least(x):
    return lambda b, g, r, o: r is not None and r >= x


def _ratio_at_most(x, failed_at=None):
    """Ratio to bare within x, and no failed connections where `failed_at` is given."""
    return lambda b, g, r, o: (
        r is not None and r <= x and (failed_at is None or _get(o, *failed_at) == 0)
    )


def _at_most(x):
    return lambda b, g, r, o: g <= x


def _none(b, g, r, o):
    return g == 0


MEASURES = (
    Measure("T1 upstream capacity (1000 CPs)", "msg/s", ("fire", "throughput"),
            ">= 25% of bare", _ratio_at_least(0.25)),
    Measure("T1 frames lost (all fire runs)", "frames", ("fire", "lost_all_runs"),
            "0", _none, ratio=False),
    Measure("T1 frames still coming at the 30 s drain limit", "frames",
            ("fire", "late_at_drain_limit_all_runs"), "(info: backlog, not loss)",
            lambda b, g, r, o: None, ratio=False),
    Measure("T2 server CPU per msg @1000 msg/s", "us", ("open", "cpu_us_per_msg"),
            "<= 2.5x bare", _ratio_at_most(2.5)),
    Measure("T3 latency p50 @1000 msg/s", "ms", ("open", "latency_ms", "p50"),
            "<= 2 ms", _at_most(2)),
    Measure("T3 latency p99 @1000 msg/s", "ms", ("open", "latency_ms", "p99"),
            "<= 15 ms", _at_most(15)),
    Measure("T4 downstream round trips (1000 CPs)", "rt/s", ("rtt", "rtt_per_s"),
            ">= 30% of bare", _ratio_at_least(0.3)),
    Measure("T4 lost replies (all rtt runs)", "replies", ("rtt", "lost_all_runs"),
            "0", _none, ratio=False),
    Measure("T5 memory per idle CP", "KiB", ("idle", "kib_per_conn"),
            "<= 2.5x bare", _ratio_at_most(2.5)),
    Measure("T5 RSS with idle CPs connected", "MiB", ("idle", "rss_connected"),
            "<= 300 MiB (5000 CPs)", _at_most(300), scale=2**20),
    Measure("T5 idle CPU", "%", ("idle", "idle_cpu_pct"), "<= 2%", _at_most(2), ratio=False),
    Measure("T6 2000 CPs reconnecting, all in", "s", ("storm", "all_connected_s"),
            "<= 4x bare, 0 failed", _ratio_at_most(4, failed_at=("storm", "failed_all_runs"))),
    Measure("T6 failed connections (all runs)", "conns", ("storm", "failed_all_runs"),
            "0", _none, ratio=False),
    Measure("T6c same storm after restart", "s", ("storm", "all_connected_s"),
            "<= 8x bare, 0 failed",
            _ratio_at_most(8, failed_at=("storm_cold", "failed_all_runs")),
            gateway_path=("storm_cold", "all_connected_s")),
    Measure("T7 RSS peak / idle RSS under fire", "x", ("fire", "rss_peak_ratio"),
            "<= 1.5", _at_most(1.5), ratio=False),
    Measure("T7 accepted but neither published nor answered", "frames",
            ("fire", "lost_all_runs"), "0", _none, ratio=False),
)  # fmt: skip


def _figure(result: dict | None, path: tuple, scale: float):
    v = _get(result, *path)
    return round(v / scale, 1) if v and scale != 1.0 else v


# the honest baseline (bench/bare_paho.py): ocppgw's upstream capacity as a share of it
PAHO_CAPACITY_TARGET = 0.33


def rows(bare: dict, ocpp: dict | None, paho: dict | None = None) -> list[dict]:
    """The table: one row per measure, target checked on the gateway (ratio where relative).

    Targets stay ratios to `bare` (continuity with earlier runs); every row also shows
    `bare-paho` and ocppgw's ratio to it, and one row checks capacity against bare-paho."""
    o = ocpp or {}
    out = []
    for m in MEASURES:
        b = _figure(bare, m.path, m.scale)
        g = _figure(o, m.gateway_path or m.path, m.scale)
        p = _figure(paho, m.path, m.scale)
        r = round(g / b, 3) if m.ratio and b and g is not None else None
        rp = round(g / p, 3) if m.ratio and p and g is not None else None
        out.append(
            {"measure": m.name, "unit": m.unit, "bare": b, "ocppgw": g, "ratio": r}
            | {"bare-paho": p, "ratio (paho)": rp}
            | {"target": m.target, "pass": None if g is None else m.check(b, g, r, o)}
        )
    g, p = _get(o, "fire", "throughput"), _get(paho, "fire", "throughput")
    share = round(g / p, 3) if g and p else None
    out.append({
        "measure": "T1 capacity as a share of bare-paho", "unit": "x",
        "bare": None, "ocppgw": share, "ratio": None, "bare-paho": p, "ratio (paho)": share,
        "target": f">= {PAHO_CAPACITY_TARGET:.0%} of bare-paho",
        "pass": None if share is None else share >= PAHO_CAPACITY_TARGET,
    })  # fmt: skip
    # T8 compares the gateway with itself (two processes against one), not with bare
    one, two = _get(o, "open", "cpu_us_per_msg"), _get(o, "open_2p", "cpu_us_per_msg")
    out.append({
        "measure": "T8 CPU/msg 2 processes vs 1 @1000 msg/s", "unit": "us",
        "bare": None, "ocppgw": two, "ratio": round(two / one, 3) if one and two else None,
        "bare-paho": None, "ratio (paho)": None,
        "target": "<= 1.2x one process, 0 lost",
        "pass": None if two is None else bool(
            one and two / one <= 1.2 and _get(o, "open_2p", "lost_all_runs") == 0
            and _get(o, "fire_2p", "lost") == 0
        ),
    })  # fmt: skip
    return out


def fmt(v) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, bool):
        return "yes" if v else "NO"
    if isinstance(v, float):
        return f"{v:,.3f}".rstrip("0").rstrip(".") if abs(v) < 10 else f"{v:,.1f}"
    return f"{v:,}" if isinstance(v, int) else str(v)


def table(rs: list[dict]) -> str:
    """Markdown table (also readable in a terminal)."""
    head = ["measure", "unit", "bare", "bare-paho", "ocppgw", "ratio", "ratio (paho)", "target"]
    head.append("pass")
    return markdown(head, rs, fmt)  # older runs lack bare-paho: n/a


def markdown(head: list[str], rs: list[dict], fmt: Callable) -> str:
    """The rows' `head` columns as an aligned markdown table, each cell through `fmt`."""
    lines = [head] + [[fmt(r.get(h)) for h in head] for r in rs]
    w = [max(len(line[i]) for line in lines) for i in range(len(head))]
    out = ["| " + " | ".join(c.ljust(w[i]) for i, c in enumerate(line)) + " |" for line in lines]
    out.insert(1, "|" + "|".join("-" * (x + 2) for x in w) + "|")
    return "\n".join(out)


def plots(data: dict, path: Path) -> str | None:
    """Throughput and p50/p99 latency vs offered load, ocppgw beside bare."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib not installed: no plots (pip install matplotlib)"
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    for name, color in (("bare", "tab:blue"), ("bare-paho", "tab:green"), ("ocppgw", "tab:orange")):
        res = data["servers"].get(name)
        if not res or not res.get("sweep"):
            continue
        pts = sorted([*res["sweep"], res["open"]], key=lambda r: r["offered"])
        x = [r["offered"] for r in pts]
        ax1.plot(x, [r["throughput"] for r in pts], "o-", color=color, label=name)
        cap = _get(res, "fire", "throughput")
        if cap:
            ax1.axhline(cap, color=color, ls=":", label=f"{name} fire capacity {cap:,.0f}/s")
        p50 = [r["latency_ms"]["p50"] for r in pts]
        p99 = [r["latency_ms"]["p99"] for r in pts]
        ax2.plot(x, p50, "o-", color=color, label=f"{name} p50")
        ax2.plot(x, p99, "s--", color=color, label=f"{name} p99")
    offered = sorted(
        {r["offered"] for res in data["servers"].values() for r in res.get("sweep", [])} | {1000.0}
    )
    ax1.plot(offered, offered, color="grey", lw=0.5, label="published = offered")
    ax1.set(xlabel="offered load, msg/s", ylabel="published, msg/s", title="Throughput (1000 CPs)")
    ax2.set(xlabel="offered load, msg/s", ylabel="ms", yscale="log", title="Publish latency")
    for ax in (ax1, ax2):
        ax.set_xscale("log")
        ax.set_xticks(offered, [f"{x:g}" for x in offered])
        ax.minorticks_off()
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"ocppgw vs bare, {data['started']}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return None


if __name__ == "__main__":
    print(table(json.loads(Path(sys.argv[1]).read_text())["table"]))
