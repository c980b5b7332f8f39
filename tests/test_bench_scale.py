"""bench/scale.py, scale_report.py and scale_loadgen.py: the pure parts of T9 (no benchmark runs)."""

import os
import resource
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
scale = pytest.importorskip("scale")
scale_report = pytest.importorskip("scale_report")
lg = pytest.importorskip("scale_loadgen")
svgplot = pytest.importorskip("svgplot")

N = 50000


def _good(**over) -> dict:
    res = {
        "connected": N,
        "failed": 0,
        "refused": 3,
        "connect_s": 90.0,
        "rss_peak_mib": 1500.0,
        "idle_cpu_pct": 12.0,
        "traffic_cpu_pct": 60.0,
        "offered": 2500.0,
        "latency_p50": 2.0,
        "latency_p99": 20.0,
        "lost": 0,
        "closed_by_server": 0,
        "probe_p99": 30.0,
        "probe_lost": 0,
        "storm_s": 40.0,
        "storm_failed": 0,
        "cold_s": 100.0,
        "cold_failed": 0,
        "capacity_refusal": True,
        "generator_max_pct": 70.0,
        "generator_pct": {"connect": 70.0, "idle": 2.0, "traffic": 20.0, "storm": 60.0},
    }
    return res | over


def _row(rows, start: str) -> dict:
    (row,) = [r for r in rows if r["measure"].startswith(start)]
    return row


def test_every_target_passes_on_good_figures():
    rows = scale_report.rows({"ocppgw": _good(), "bare": _good()}, N)
    judged = [r for r in rows if r["ocppgw pass"] is not None]
    assert judged and all(r["ocppgw pass"] is True for r in judged)
    assert len(rows) == len(scale_report.ROWS)


@pytest.mark.parametrize(
    ("start", "key", "value"),
    [
        ("T9 RSS", "rss_peak_mib", 2049.0),
        ("T9 idle CPU", "idle_cpu_pct", 25.5),
        ("T9 upstream latency p99", "latency_p99", 50.1),
        ("T9 frames lost", "lost", 1),
        ("T9 failed connection", "failed", 1),
        ("T9 stations connected", "connected", N - 1),
        ("T9 backend round trip to", "probe_p99", 100.5),
        ("T9 reconnect storm", "storm_s", 61.0),
        ("T9 storm after restart", "cold_s", 121.0),
        ("T9 past-capacity", "capacity_refusal", False),
    ],
)
def test_each_target_fails_past_its_limit(start, key, value):
    row = _row(scale_report.rows({"ocppgw": _good(**{key: value})}, N), start)
    assert row["ocppgw pass"] is False
    assert row["bare"] is None and row["bare pass"] is None  # bare not run: n/a, not a fail


def test_storm_time_fails_with_failures_even_when_fast():
    row = _row(scale_report.rows({"ocppgw": _good(storm_failed=2)}, N), "T9 reconnect storm")
    assert row["ocppgw pass"] is False


def test_saturated_generator_marks_the_phase_invalid_not_failed():
    res = _good(storm_s=80.0, generator_max_pct=97.0)
    res["generator_pct"] = {"connect": 50.0, "traffic": 20.0, "storm": 97.0}
    rows = scale_report.rows({"ocppgw": res}, N)
    assert _row(rows, "T9 reconnect storm")["ocppgw pass"] == "invalid"
    assert _row(rows, "T9 load generator")["ocppgw pass"] is False
    assert _row(rows, "T9 upstream latency p99")["ocppgw pass"] is True  # another phase


def test_info_rows_have_no_verdict_and_table_prints_both_servers():
    rows = scale_report.rows({"ocppgw": _good(), "bare": _good(capacity_refusal=None)}, N)
    assert _row(rows, "T9 CPU at 0.05")["ocppgw pass"] is None
    text = scale_report.table(rows)
    assert "bare pass" in text and "ocppgw pass" in text and "n/a" in text
    assert text.count("\n") == len(rows) + 1


def test_source_addresses_spread_clients_within_the_port_range():
    assert lg.source_address(0) == "127.0.0.2"
    assert lg.source_address(lg.PORTS_PER_ADDRESS - 1) == "127.0.0.2"
    assert lg.source_address(lg.PORTS_PER_ADDRESS) == "127.0.0.3"
    assert lg.source_address(49999, per_address=25000) == "127.0.0.3"
    assert lg.addresses_needed(50000, 25000) == 2 and lg.addresses_needed(50001, 25000) == 3
    assert lg.addresses_needed(1) == 1
    # each address stays under the ~28,000 ephemeral ports loopback gives towards one port
    assert lg.PORTS_PER_ADDRESS < 28000
    with pytest.raises(ValueError):
        lg.source_address(253 * 1000, per_address=1000)
    # each storm reconnects from the next block: 50,000 stations and both storms fit
    block = lg.addresses_needed(50000)
    assert lg.source_address(0, first=2 + block) == f"127.0.0.{2 + block}"
    assert lg.source_address(49999, first=2 + 2 * block) == f"127.0.0.{1 + 3 * block}"
    assert 1 + 3 * block < 255


def test_deal_gives_every_station_to_exactly_one_worker():
    parts = lg.deal(10, 3)
    assert sorted(i for p in parts for i in p) == list(range(10))
    assert [len(p) for p in parts] == [4, 3, 3]


def test_backoff_grows_and_is_capped():
    for attempt in range(1, 12):
        assert 0 <= lg.backoff(attempt, base=0.5, cap=8.0) <= min(8.0, 0.5 * 2 ** (attempt - 1))


def test_raise_nofile_never_lowers_the_limit():
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert lg.raise_nofile(16) == soft


def test_merge_sums_counts_and_keeps_the_busiest_worker():
    out = lg.merge(
        [
            {"event": "connected", "connected": 10, "t_start": 5.0, "t_last": 9.0,
             "cpu_s": 1.0, "wall_s": 4.0, "errors": {"TimeoutError": 1}},
            {"event": "connected", "connected": 12, "t_start": 4.0, "t_last": 8.0,
             "cpu_s": 3.0, "wall_s": 4.0, "errors": {"TimeoutError": 2, "http 403": 1}},
        ]
    )  # fmt: skip
    assert out["connected"] == 22 and out["t_start"] == 4.0 and out["t_last"] == 9.0
    assert out["errors"] == {"TimeoutError": 3, "http 403": 1}
    assert out["cpu_pct_max_worker"] == 75.0


def test_svg_plot_is_a_document_with_every_series():
    svg = svgplot.svg_plot("t", "x", "y", {"a": [(0, 1), (5000, 2)], "b": [(0, 0.5)]}, {"lim": 3})
    assert svg.startswith("<svg") and svg.rstrip().endswith("</svg>")
    assert svg.count("<polyline") == 2 and ">lim<" in svg


def test_ticks_are_round():
    assert svgplot.ticks(0, 50000) == [0, 10000, 20000, 30000, 40000, 50000]
    assert svgplot.ticks(0, 1.0)[:3] == [0, 0.2, 0.4]


def test_profile_layers_charge_stdlib_leaves_to_their_caller():
    prof = pytest.importorskip("profile_t1")
    raw = "\n".join(
        [
            "run (twisted/internet/epollreactor.py:1);dataReceived (autobahn/x.py:2) 30",
            "handle (stations/conversation.py:9);dumps (json/encoder.py:3) 20",
            "x (stations/bridge.py:4);publish (paho/mqtt/client.py:5) 25",
            "w (stations/msglog.py:1);execute (psycopg/cursor.py:2) 15",
            "a (daphne/ws_protocol.py:1) 5",
            "b (channels/consumer.py:1);c (asgiref/sync.py:2) 5",
            "select (selectors.py:1) 0",
        ]
    )
    shares = prof.summarise(raw)
    assert shares == {
        "Twisted/autobahn": 30.0,
        "bridge/paho": 25.0,
        "session/validation/envelope": 20.0,
        "log/DB": 15.0,
        "Daphne": 5.0,
        "Channels": 5.0,
    }
    assert prof.layer_of("f (threading.py:1)") == "other (stdlib, interpreter)"


def test_storm_profile_charges_a_handshake_to_the_code_that_was_entered():
    prof = pytest.importorskip("profile_storm")
    db = "execute (psycopg/cursor.py:2)"
    stacks = {
        f"w (stations/msglog.py:1);{db}": "presence/log rows",
        f"c (stations/gatekeeper.py:1);load_many (stations/auth.py:9);{db}": ("credential DB load"),
        "c (stations/gatekeeper.py:1);verify (django/contrib/auth/hashers.py:3)": "PBKDF2",
        "r (twisted/internet/tcp.py:1);claim (stations/cluster.py:4)": "Redis claim",
        "r (twisted/internet/tcp.py:1);_flush (stations/bridge.py:4);send (paho/x.py:1)": (
            "MQTT subscribe"
        ),
        "r (twisted/internet/tcp.py:1);admit (stations/admission.py:3)": "admission/gateway",
        "r (twisted/internet/tcp.py:1);sendData (ocppgw/edge/wsprotocol.py:3)": "Twisted/autobahn",
        "r (twisted/internet/tcp.py:1);process (daphne/http_protocol.py:3)": "Daphne",
        "f (threading.py:1)": "other (stdlib, interpreter)",
    }
    for stack, layer in stacks.items():
        assert prof.layer_of(stack) == layer, stack
    assert prof.summarise(f"w (stations/msglog.py:1);{db} 3\nf (threading.py:1) 1") == {
        "presence/log rows": 75.0,
        "other (stdlib, interpreter)": 25.0,
    }


def test_plan_fits_the_run_in_a_capped_fd_limit():
    # this sandbox: hard RLIMIT_NOFILE 20,000 and no CAP_SYS_RESOURCE to raise it
    pl = scale.plan(50000, 20000, workers=2, processes=2)
    assert pl["workers"] == 3 and pl["processes"] == 3
    assert pl["bare_stations"] == 20000 - scale.FD_MARGIN
    assert scale.plan(5000, 20000, 2, 2) == {
        "per_process": 20000 - scale.FD_MARGIN, "workers": 2, "processes": 2,
        "bare_stations": 5000,
    }  # fmt: skip


def test_connected_is_judged_against_each_servers_own_station_count():
    bare = _good(stations=18976, connected=18976)
    rows = scale_report.rows({"ocppgw": _good(stations=N), "bare": bare}, N)
    row = _row(rows, "T9 stations connected")
    assert row["bare pass"] is True and row["ocppgw pass"] is True


def test_a_storm_counts_each_station_not_back_once():
    # 3 stations gave up at the limit (one "gave up" each) and 2 attempts failed on the way
    st = {"connected": N - 3, "errors": {"gave up": 3, "TimeoutError": 2}}
    assert scale._failed(st, N) == 5
    assert scale._failed({"connected": N, "errors": {}}, N) == 0


def test_generator_share_is_the_mean_and_the_first_seconds_of_a_storm():
    samples = [{"t": 1, "gen_pct": 150.0}, {"t": 20, "gen_pct": 90.0}, {"t": 40, "gen_pct": 0.0}]
    assert scale_report.generator_share(samples, first_s=30) == "80 / 120"
    assert scale_report.generator_share([{"t": 1, "cpu_pct": 5}]) is None


def test_process_cpu_is_read_from_proc():
    used = lg.process_cpu_s(os.getpid())
    assert used is not None and used > 0
    assert lg.process_cpu_s(2**22 + 12345) is None  # no such process


def test_latency_by_second_shows_when_the_slow_messages_came():
    counter = pytest.importorskip("counter")
    seconds = [0] * 100 + [1] * 100
    lat_us = [1000] * 100 + [1000] * 98 + [400_000, 900_000]
    rows = counter.by_second(seconds, lat_us)
    assert rows == [[0, 100, 1.0, 1.0, 1.0], [1, 100, 1.0, 900.0, 900.0]]
    assert scale_report.slow_seconds(rows, 50.0) == "1 / 2"
    assert scale_report.slow_seconds([], 50.0) is None
