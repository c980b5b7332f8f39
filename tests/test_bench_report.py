"""bench/report.py: the targets of docs/performance.md are checked on the right figures."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
report = pytest.importorskip("report")


def _server(**overrides) -> dict:
    result = {
        "fire": {"throughput": 8000.0, "lost_all_runs": 0, "rss_peak_ratio": 1.1},
        "open": {"cpu_us_per_msg": 500.0, "latency_ms": {"p50": 0.9, "p99": 4.0}},
        "rtt": {"rtt_per_s": 2000.0, "lost_all_runs": 0},
        "idle": {"kib_per_conn": 26.0, "rss_connected": 260 * 2**20, "idle_cpu_pct": 1.5},
        "storm": {"all_connected_s": 2.5, "failed_all_runs": 0},
        "storm_cold": {"all_connected_s": 3.0, "failed_all_runs": 0},
        "open_2p": {"cpu_us_per_msg": 550.0, "lost_all_runs": 0},
        "fire_2p": {"lost": 0},
    }
    for path, value in overrides.items():
        *parents, leaf = path.split(".")
        node = result
        for key in parents:
            node = node[key]
        node[leaf] = value
    return result


BARE = {
    "fire": {"throughput": 5000.0, "lost_all_runs": 0, "rss_peak_ratio": 1.0},
    "open": {"cpu_us_per_msg": 330.0, "latency_ms": {"p50": 0.5, "p99": 2.8}},
    "rtt": {"rtt_per_s": 2900.0, "lost_all_runs": 0},
    "idle": {"kib_per_conn": 15.8, "rss_connected": 105 * 2**20, "idle_cpu_pct": 0.8},
    "storm": {"all_connected_s": 1.3, "failed_all_runs": 0},
}


def _verdict(ocppgw: dict, measure: str) -> bool | None:
    (row,) = [r for r in report.rows(BARE, ocppgw) if r["measure"].startswith(measure)]
    return row["pass"]


def test_a_run_within_every_target_passes_every_row():
    rows = report.rows(BARE, _server())
    assert [r for r in rows if r["pass"] is False] == []
    t8 = next(r for r in rows if r["measure"].startswith("T8"))
    assert t8["ratio"] == pytest.approx(1.1, abs=0.001)  # against one process, not bare


@pytest.mark.parametrize(
    ("override", "row"),
    [
        ({"fire.throughput": 1200.0}, "T1 upstream"),  # under 25% of bare
        ({"fire.lost_all_runs": 1}, "T1 frames lost"),
        ({"open.cpu_us_per_msg": 830.0}, "T2"),  # 2.52x bare
        ({"open.latency_ms": {"p50": 0.9, "p99": 15.5}}, "T3 latency p99"),
        ({"rtt.rtt_per_s": 860.0}, "T4 downstream"),
        ({"idle.idle_cpu_pct": 2.1}, "T5 idle CPU"),
        ({"storm.failed_all_runs": 1}, "T6 2000"),
        ({"storm_cold.all_connected_s": 10.5}, "T6c"),  # 8.08x bare
        ({"fire.rss_peak_ratio": 1.51}, "T7 RSS"),
        ({"open_2p.cpu_us_per_msg": 605.0}, "T8"),  # 1.21x one process
        ({"fire_2p.lost": 3}, "T8"),
    ],
)
def test_a_run_past_one_target_fails_that_row(override, row):
    assert _verdict(_server(), row) is True
    assert _verdict(_server(**override), row) is False


def test_table_prints_every_row_with_its_verdict():
    text = report.table(report.rows(BARE, _server(**{"idle.idle_cpu_pct": 2.5})))
    lines = text.splitlines()
    assert len(lines) == 2 + len(report.rows(BARE, _server()))
    (t5,) = [line for line in lines if line.startswith("| T5 idle CPU")]
    assert t5.split("|")[-2].strip() == "NO"


PAHO = {**BARE, "fire": {"throughput": 30000.0, "lost_all_runs": 0, "rss_peak_ratio": 1.0}}


@pytest.mark.parametrize(("throughput", "passes"), [(10500.0, True), (9000.0, False)])
def test_capacity_is_judged_against_bare_paho_too(throughput, passes):
    rows = report.rows(BARE, _server(**{"fire.throughput": throughput}), PAHO)
    (share,) = [r for r in rows if r["measure"] == "T1 capacity as a share of bare-paho"]
    assert share["ocppgw"] == pytest.approx(throughput / 30000.0, abs=0.001)
    assert share["pass"] is passes  # 33% of bare-paho
    t1 = next(r for r in rows if r["measure"].startswith("T1 upstream"))
    assert t1["bare-paho"] == 30000.0 and t1["ratio (paho)"] == pytest.approx(
        throughput / 30000.0, abs=0.001
    )
    assert "bare-paho" in report.table(rows).splitlines()[0]


def test_a_run_without_bare_paho_still_reports():
    rows = report.rows(BARE, _server())
    share = next(r for r in rows if r["measure"] == "T1 capacity as a share of bare-paho")
    assert share["pass"] is None and share["bare-paho"] is None
    assert "n/a" in report.table(rows)
