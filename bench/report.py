"""The benchmark's report: one row per measure with its target checked, the table, the plots.

Pure functions of run.py's result dict (plots aside, which only write a PNG). A saved run's table
again: `python bench/report.py bench/results/<run>.json`.
"""

import json
import sys
from pathlib import Path


def _get(d: dict | None, *path):
    for p in path:
        if d is None:
            return None
        d = d.get(p)
    return d


def rows(bare: dict, ocpp: dict | None) -> list[dict]:
    """The table: one row per measure, target checked on the gateway (ratio where relative)."""
    out = []

    def row(measure, unit, b, g, target, check, ratio=True):
        r = round(g / b, 3) if ratio and b and g is not None else None
        ok = None if g is None else check(b, g, r)
        out.append(
            {"measure": measure, "unit": unit, "bare": b, "ocppgw": g, "ratio": r}
            | {"target": target, "pass": ok}
        )

    o = ocpp or {}
    row(
        "T1 upstream capacity (1000 CPs)",
        "msg/s",
        _get(bare, "fire", "throughput"),
        _get(o, "fire", "throughput"),
        ">= 25% of bare",
        lambda b, g, r: r is not None and r >= 0.25,
    )
    row(
        "T1 frames lost (all fire runs)",
        "frames",
        _get(bare, "fire", "lost_all_runs"),
        _get(o, "fire", "lost_all_runs"),
        "0",
        lambda b, g, r: g == 0,
        ratio=False,
    )
    row(
        "T1 frames still coming at the 30 s drain limit",
        "frames",
        _get(bare, "fire", "late_at_drain_limit_all_runs"),
        _get(o, "fire", "late_at_drain_limit_all_runs"),
        "(info: backlog, not loss)",
        lambda b, g, r: None,
        ratio=False,
    )
    row(
        "T2 server CPU per msg @1000 msg/s",
        "us",
        _get(bare, "open", "cpu_us_per_msg"),
        _get(o, "open", "cpu_us_per_msg"),
        "<= 2.5x bare",
        lambda b, g, r: r is not None and r <= 2.5,
    )
    row(
        "T3 latency p50 @1000 msg/s",
        "ms",
        _get(bare, "open", "latency_ms", "p50"),
        _get(o, "open", "latency_ms", "p50"),
        "<= 2 ms",
        lambda b, g, r: g <= 2,
    )
    row(
        "T3 latency p99 @1000 msg/s",
        "ms",
        _get(bare, "open", "latency_ms", "p99"),
        _get(o, "open", "latency_ms", "p99"),
        "<= 15 ms",
        lambda b, g, r: g <= 15,
    )
    row(
        "T4 downstream round trips (1000 CPs)",
        "rt/s",
        _get(bare, "rtt", "rtt_per_s"),
        _get(o, "rtt", "rtt_per_s"),
        ">= 30% of bare",
        lambda b, g, r: r is not None and r >= 0.3,
    )
    row(
        "T4 lost replies (all rtt runs)",
        "replies",
        _get(bare, "rtt", "lost_all_runs"),
        _get(o, "rtt", "lost_all_runs"),
        "0",
        lambda b, g, r: g == 0,
        ratio=False,
    )
    row(
        "T5 memory per idle CP",
        "KiB",
        _get(bare, "idle", "kib_per_conn"),
        _get(o, "idle", "kib_per_conn"),
        "<= 2.5x bare",
        lambda b, g, r: r is not None and r <= 2.5,
    )
    mib = lambda v: round(v / 2**20, 1) if v else None  # noqa: E731
    row(
        "T5 RSS with idle CPs connected",
        "MiB",
        mib(_get(bare, "idle", "rss_connected")),
        mib(_get(o, "idle", "rss_connected")),
        "<= 300 MiB (5000 CPs)",
        lambda b, g, r: g <= 300,
    )
    row(
        "T5 idle CPU",
        "%",
        _get(bare, "idle", "idle_cpu_pct"),
        _get(o, "idle", "idle_cpu_pct"),
        "<= 2%",
        lambda b, g, r: g <= 2,
        ratio=False,
    )
    row(
        "T6 2000 CPs reconnecting, all in",
        "s",
        _get(bare, "storm", "all_connected_s"),
        _get(o, "storm", "all_connected_s"),
        "<= 4x bare, 0 failed",
        lambda b, g, r: r is not None and r <= 4 and _get(o, "storm", "failed_all_runs") == 0,
    )
    row(
        "T6 failed connections (all runs)",
        "conns",
        _get(bare, "storm", "failed_all_runs"),
        _get(o, "storm", "failed_all_runs"),
        "0",
        lambda b, g, r: g == 0,
        ratio=False,
    )
    cold = _get(o, "storm_cold", "all_connected_s")
    row(
        "T6c same storm after restart",
        "s",
        _get(bare, "storm", "all_connected_s"),
        cold,
        "<= 8x bare, 0 failed",
        lambda b, g, r: r is not None and r <= 8 and _get(o, "storm_cold", "failed_all_runs") == 0,
    )
    row(
        "T7 RSS peak / idle RSS under fire",
        "x",
        _get(bare, "fire", "rss_peak_ratio"),
        _get(o, "fire", "rss_peak_ratio"),
        "<= 1.5",
        lambda b, g, r: g <= 1.5,
        ratio=False,
    )
    row(
        "T7 accepted but neither published nor answered",
        "frames",
        _get(bare, "fire", "lost_all_runs"),
        _get(o, "fire", "lost_all_runs"),
        "0",
        lambda b, g, r: g == 0,
        ratio=False,
    )
    one, two = _get(o, "open", "cpu_us_per_msg"), _get(o, "open_2p", "cpu_us_per_msg")
    out.append({
        "measure": "T8 CPU/msg 2 processes vs 1 @1000 msg/s", "unit": "us",
        "bare": None, "ocppgw": two, "ratio": round(two / one, 3) if one and two else None,
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
    head = ["measure", "unit", "bare", "ocppgw", "ratio", "target", "pass"]
    lines = [head] + [[fmt(r[h]) for h in head] for r in rs]
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
    for name, color in (("bare", "tab:blue"), ("ocppgw", "tab:orange")):
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
