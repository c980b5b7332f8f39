"""stations/metrics.py and the /metrics view: bounded labels, sampled depths, Prometheus text."""

import collections
import types

from prometheus_client import REGISTRY

from stations import metrics


def value(name, **labels) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_frames_are_counted_by_direction_type_and_known_action():
    before = value("ocppgw_frames_total", direction="in", type="CALL", action="Heartbeat")
    metrics.frame("in", 2, "Heartbeat")
    assert (
        value("ocppgw_frames_total", direction="in", type="CALL", action="Heartbeat") == before + 1
    )


def test_unknown_actions_share_one_label_so_cardinality_stays_bounded():
    before = value("ocppgw_frames_total", direction="in", type="CALL", action="other")
    for i in range(50):
        metrics.frame("in", 2, f"VendorThing{i}")
    assert value("ocppgw_frames_total", direction="in", type="CALL", action="other") == before + 50
    assert value("ocppgw_frames_total", direction="in", type="CALL", action="VendorThing1") == 0


def test_unparsable_frames_and_gateway_rows_are_labelled_or_skipped():
    before = value("ocppgw_frames_total", direction="in", type="unparsed", action="none")
    metrics.frame("in", None, "")
    metrics.frame("gw", 4, "Reset")  # gateway-written rows are no station frames
    assert (
        value("ocppgw_frames_total", direction="in", type="unparsed", action="none") == before + 1
    )
    assert value("ocppgw_frames_total", direction="gw", type="CALLERROR", action="Reset") == 0


def test_callerrors_are_counted_by_their_ocpp_error_code():
    before = value("ocppgw_callerrors_sent_total", code="FormationViolation")
    metrics.callerror_sent('[4,"1","FormationViolation","bad",{}]')
    metrics.callerror_sent('[4,"1","MadeUpCode","bad",{}]')
    assert value("ocppgw_callerrors_sent_total", code="FormationViolation") == before + 1
    assert value("ocppgw_callerrors_sent_total", code="MadeUpCode") == 0
    assert value("ocppgw_callerrors_sent_total", code="other") >= 1


def test_refusals_are_counted_by_the_label_given_where_they_are_made():
    from stations.refusals import Refusal

    cases = [
        (Refusal("wrong_password", "wrong password"), "wrong_password"),
        (Refusal("bad_id", "the charge point id is empty"), "bad_id"),
        ("a plain reason with no label", "other"),
    ]
    for reason, label in cases:
        before = value("ocppgw_auth_refusals_total", reason=label)
        metrics.refused(reason)
        assert value("ocppgw_auth_refusals_total", reason=label) == before + 1, reason


def test_publish_latency_is_observed_now_or_when_a_buffered_publish_goes_out():
    before = value("ocppgw_publish_latency_seconds_count")
    sent = types.SimpleNamespace(sent=True, received=None)
    metrics.published(sent, received_at=0.0)
    buffered = types.SimpleNamespace(sent=False, received=None)
    metrics.published(buffered, received_at=1.0)
    assert buffered.received == 1.0
    assert value("ocppgw_publish_latency_seconds_count") == before + 1
    metrics.handed_over(buffered)
    assert value("ocppgw_publish_latency_seconds_count") == before + 2


class _Held(list):
    """The registry as metrics.sample sees it: a length and a snapshot of conversations."""

    def all(self):
        return list(self)


def _gateway(**counts):
    queued, idle = (types.SimpleNamespace(queue=collections.deque(q)) for q in ([1, 2, 3], []))
    return types.SimpleNamespace(
        registry=_Held(types.SimpleNamespace(backend_calls=c) for c in (queued, idle)),
        bridge=types.SimpleNamespace(buffered=lambda: 7, connected=True, dropped=counts["dropped"]),
        writer=types.SimpleNamespace(
            rows=[1, 2], written=counts["written"], dropped=counts["log_dropped"], failures=0
        ),
        gatekeeper=types.SimpleNamespace(
            cache=types.SimpleNamespace(hits=counts["hits"]),
            shared=types.SimpleNamespace(hits=counts.get("shared", 0)),
            checks=counts.get("checks", 1),
            pending=counts.get("pending", 0),
        ),
        edge_handshakes=counts.get("edge"),
        handshaking=counts.get("handshaking", 0),
    )


def test_sample_copies_depths_and_moves_counters_by_their_growth():
    metrics.sample(_gateway(dropped=0, written=0, log_dropped=0, hits=0))
    written = value("ocppgw_log_rows_written_total")
    hits = value("ocppgw_auth_cache_hits_total")
    metrics.sample(_gateway(dropped=2, written=10, log_dropped=3, hits=5))
    assert value("ocppgw_connections") == 2
    assert value("ocppgw_backend_calls_queued") == 3
    assert value("ocppgw_mqtt_buffered") == 7
    assert value("ocppgw_log_queued") == 2
    assert value("ocppgw_broker_connected") == 1
    assert value("ocppgw_log_rows_written_total") == written + 10
    assert value("ocppgw_auth_cache_hits_total") == hits + 5
    metrics.sample(_gateway(dropped=0, written=4, log_dropped=0, hits=0))  # a new Gateway
    assert value("ocppgw_log_rows_written_total") == written + 14


def test_a_storm_shows_as_handshakes_under_way_and_checks_pending():
    metrics.sample(_gateway(dropped=0, written=0, log_dropped=0, hits=0, pending=40,
                            edge=lambda: 900, handshaking=3))  # fmt: skip
    assert value("ocppgw_handshakes_in_progress") == 900  # the edge's count where it keeps one
    assert value("ocppgw_auth_checks_pending") == 40
    metrics.sample(_gateway(dropped=0, written=0, log_dropped=0, hits=0, handshaking=3))
    assert value("ocppgw_handshakes_in_progress") == 3  # else the consumers' own
    assert value("ocppgw_auth_checks_pending") == 0


def test_shared_hits_and_hashed_checks_are_counted_apart():
    metrics.sample(_gateway(dropped=0, written=0, log_dropped=0, hits=0, checks=0))
    misses = value("ocppgw_auth_cache_misses_total")
    shared = value("ocppgw_auth_cache_shared_hits_total")
    metrics.sample(_gateway(dropped=0, written=0, log_dropped=0, hits=0, checks=3, shared=7))
    assert value("ocppgw_auth_cache_shared_hits_total") == shared + 7
    assert value("ocppgw_auth_cache_misses_total") == misses + 3


def test_metrics_view_serves_prometheus_text_without_login(client):
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    assert b"# TYPE ocppgw_frames_total counter" in response.content
