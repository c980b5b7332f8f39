"""One station's conversation against a recording stand-in for the gateway's port.

The broker is not involved here (tests/test_broker_path.py and tests/e2e/ cover it): the stand-in
records what the conversation publishes and sends, and a manual clock moves time, so queueing,
timers and matching are exact and nothing sleeps.
"""

import json
import time
from types import SimpleNamespace

import pytest

from stations import validation
from stations.bridge import Pending
from stations.conversation import Conversation
from stations.limits import TokenBucket
from stations.port import StationInfo
from tests.clock import ManualClock

TIMEOUT_S = 30


class RecordingGateway:
    """The port (stations/port.py) a conversation acts through; publishes are recorded."""

    def __init__(self, **settings):
        self.settings = SimpleNamespace(
            OCPPGW_CALL_TIMEOUT_S=TIMEOUT_S,
            OCPPGW_QUEUE_LEN=100,
            OCPPGW_VALIDATION_FAILURE="reject",
            OCPPGW_UNKNOWN_ACTIONS="forward",
            OCPPGW_ROTATION_GRACE_S=60,
        )
        for name, value in settings.items():
            setattr(self.settings, name, value)
        self.node = "test-node"
        self.published: list[tuple[str, dict]] = []
        self.lenient: list = []
        self.writer = SimpleNamespace(
            add=lambda **row: None,
            count=lambda *a, **k: None,
            disconnected=lambda *a: None,
            lenient=self.lenient.append,
            facts=lambda *a: None,
        )
        self.passwords: list[str] = []

    def new_bucket(self):
        return TokenBucket(0, 1, time.monotonic())

    def check(self, direction, version, action, kind, payload):
        return validation.check(version, action, kind, payload)

    def publish(self, direction, station, action, frame, body):
        self.published.append((direction, json.loads(body)))
        pending = Pending(direction, body, 1, False, None)
        pending.sent = True  # as if the broker took it at once
        return pending, direction

    def publish_raw(self, kind, station, action, unique_id, body):
        self.published.append((kind, json.loads(body)))
        return kind

    def respond(self, topic, correlation, body):
        self.published.append(("response:" + topic, json.loads(body)))

    def publish_presence(self, cid, status, connection_id, version, reason):
        self.published.append(("presence", {"status": status, "reason": reason}))

    def store_password(self, station, secret):
        self.passwords.append(secret)

    def unregister(self, conversation):
        return True

    def on(self, kind):
        return [body for k, body in self.published if k == kind]


class RecordingLink:
    def __init__(self):
        self.sent: list[list] = []
        self.closed: list[tuple] = []

    def send(self, text):
        self.sent.append(json.loads(text))

    def close(self, code, reason=None):
        self.closed.append((code, reason))


@pytest.fixture
def clock():
    return ManualClock(1000.0)


@pytest.fixture
def make_session(clock):
    def make(version="1.6", policy="", **settings):
        gw = RecordingGateway(**settings)
        link = RecordingLink()
        station = StationInfo(
            "CP1", "cp1", 7, version, connection_id="c1", validation_policy=policy
        )
        return Conversation(gw, station, link, clock), gw, link.sent

    return make


def backend(session, body):
    session.on_downstream(json.dumps(body).encode(), None)


def reset(unique_id, version="1.6"):
    kind = {"1.6": "Soft", "2.0.1": "Immediate", "2.1": "Immediate"}[version]
    return {"MessageTypeId": 2, "UniqueId": unique_id, "Action": "Reset", "Payload": {"type": kind}}


async def test_backend_calls_go_to_the_station_one_at_a_time(make_session):
    session, gw, sent = make_session()
    for n in range(3):
        backend(session, reset(f"b{n}"))
    assert [f[1] for f in sent] == ["b0"]
    session.on_text('[3, "b0", {"status": "Accepted"}]')
    assert [f[1] for f in sent] == ["b0", "b1"]
    session.on_text('[4, "b1", "NotSupported", "no", {}]')
    assert [f[1] for f in sent] == ["b0", "b1", "b2"]
    assert gw.on("reply") == [
        {"MessageTypeId": 3, "UniqueId": "b0", "Action": "Reset", "Payload": {"status": "Accepted"}}
    ]
    assert gw.on("error")[0]["Action"] == "Reset" and gw.on("error")[0]["ErrorCode"] == "NotSupported"  # fmt: skip


async def test_queue_full_is_answered_on_the_error_topic(make_session):
    session, gw, sent = make_session(OCPPGW_QUEUE_LEN=1)
    for n in range(3):
        backend(session, reset(f"b{n}"))  # one in flight, one waiting, one too many
    [error] = gw.on("error")
    assert (error["UniqueId"], error["ErrorCode"]) == ("b2", "GenericError")
    assert error["ErrorDetails"]["reason"] == "queue_full"
    assert len(sent) == 1


async def test_unanswered_backend_call_times_out_and_the_next_one_goes(make_session, clock):
    session, gw, sent = make_session()
    backend(session, reset("b0"))
    clock.advance(TIMEOUT_S * 0.5)
    backend(session, reset("b1"))
    clock.advance(TIMEOUT_S * 0.7)
    [error] = gw.on("error")
    assert (error["UniqueId"], error["ErrorDetails"]["reason"]) == ("b0", "timeout")
    assert [f[1] for f in sent] == ["b0", "b1"]
    # the station answers b0 late: forwarded marked Late, and noticed; b1 is still in flight
    session.on_text('[3, "b0", {"status": "Accepted"}]')
    assert gw.on("reply")[-1]["Late"] is True
    assert gw.on("notice")[-1]["ErrorDetails"]["reason"] == "late"
    assert session.backend_calls.inflight.frame.id == "b1"


async def test_queued_call_with_almost_no_time_left_is_never_sent(make_session, clock):
    session, gw, sent = make_session()
    backend(session, reset("b0"))
    clock.advance(TIMEOUT_S * 0.02)
    backend(session, reset("b1"))  # b0's timeout frees the station when b1 has ~2% left
    clock.advance(TIMEOUT_S * 1.1)
    assert [f[1] for f in sent] == ["b0"]
    errors = {e["UniqueId"]: e["ErrorDetails"]["reason"] for e in gw.on("error")}
    assert errors == {"b0": "timeout", "b1": "timeout"}


async def test_station_call_unanswered_by_the_backend_gets_internal_error(make_session, clock):
    session, gw, sent = make_session()
    session.on_text('[2, "c1", "Heartbeat", {}]')
    session.on_text('[2, "c2", "Heartbeat", {}]')  # pipelined: not punished
    assert [b["UniqueId"] for b in gw.on("upstream")] == ["c1", "c2"]
    backend(session, {"MessageTypeId": 3, "UniqueId": "c2", "Payload": {"currentTime": "2025-01-01T00:00:00Z"}})  # fmt: skip
    assert sent == [[3, "c2", {"currentTime": "2025-01-01T00:00:00Z"}]]
    clock.advance(TIMEOUT_S * 1.5)
    assert sent[1] == [4, "c1", "InternalError", "no answer from the backend", {}]
    # the backend answers after the timeout: a notice, never a second answer to the station
    backend(session, {"MessageTypeId": 3, "UniqueId": "c1", "Payload": {}})
    assert len(sent) == 2
    assert gw.on("notice")[-1]["ErrorDetails"]["reason"] == "late"


async def test_answer_for_no_outstanding_call_is_an_unmatched_notice(make_session):
    session, gw, sent = make_session()
    backend(session, {"MessageTypeId": 3, "UniqueId": "nobody", "Payload": {}})
    [notice] = gw.on("notice")
    assert (notice["UniqueId"], notice["ErrorDetails"]["reason"]) == ("nobody", "unmatched")
    assert sent == [] and gw.on("error") == []


async def test_duplicate_id_of_an_outstanding_station_call_is_refused(make_session):
    session, gw, sent = make_session("2.0.1")
    session.on_text('[2, "d1", "Heartbeat", {}]')
    session.on_text('[2, "d1", "Heartbeat", {}]')
    assert sent[0][:3] == [4, "d1", "RpcFrameworkError"]
    assert len(gw.on("upstream")) == 1


@pytest.mark.parametrize(
    ("version", "backend_code", "station_code"),
    [
        ("1.6", "FormatViolation", "FormationViolation"),
        ("1.6", "OccurrenceConstraintViolation", "OccurenceConstraintViolation"),
        ("2.0.1", "FormationViolation", "FormatViolation"),
        ("2.1", "OccurenceConstraintViolation", "OccurrenceConstraintViolation"),
        ("2.0.1", "GenericError", "GenericError"),
    ],
)
async def test_backend_callerror_code_is_spelled_for_the_stations_version(
    make_session, version, backend_code, station_code
):
    session, _gw, sent = make_session(version)
    session.on_text('[2, "e1", "Heartbeat", {}]')
    backend(
        session,
        {"MessageTypeId": 4, "UniqueId": "e1", "ErrorCode": backend_code, "ErrorDescription": "d"},
    )
    assert sent == [[4, "e1", station_code, "d", {}]]


async def test_invalid_callresult_on_21_gets_a_callresulterror(make_session):
    session, gw, sent = make_session("2.1")
    backend(session, reset("r1", "2.1"))
    session.on_text('[3, "r1", {"status": "Maybe"}]')
    assert sent[-1][:3] == [5, "r1", "PropertyConstraintViolation"]
    [error] = gw.on("error")  # the backend's own CALL: answered on its error topic
    assert (error["UniqueId"], error["ErrorDetails"]["reason"], error["ErrorDetails"]["path"]) == ("r1", "invalid", "status")  # fmt: skip
    assert gw.on("reply") == []


async def test_invalid_callresult_on_16_is_not_answered(make_session):
    session, gw, sent = make_session("1.6")
    backend(session, reset("r1"))
    session.on_text('[3, "r1", {"status": "Maybe"}]')
    assert len(sent) == 1  # only the Reset itself
    [error] = gw.on("error")
    assert (error["UniqueId"], error["ErrorDetails"]["reason"]) == ("r1", "invalid")
    assert error["ErrorDetails"]["rule"] == "enum"


async def test_callresulterror_from_the_station_names_the_action_it_answered(make_session):
    session, gw, _sent = make_session("2.1")
    session.on_text('[2, "h1", "Heartbeat", {}]')
    now = "2025-01-01T00:00:00Z"
    backend(session, {"MessageTypeId": 3, "UniqueId": "h1", "Payload": {"currentTime": now}})
    session.on_text('[5, "h1", "PropertyConstraintViolation", "currentTime is in the past", {}]')
    [error] = gw.on("error")
    assert (error["MessageTypeId"], error["UniqueId"], error["Action"]) == (5, "h1", "Heartbeat")


async def test_send_to_a_16_station_is_refused_as_a_notice(make_session):
    session, gw, sent = make_session("1.6")
    backend(session, {"MessageTypeId": 6, "UniqueId": "s1", "Action": "X", "Payload": {}})
    assert sent == []
    assert gw.on("notice")[0]["ErrorCode"] == "MessageTypeNotSupported"


async def test_send_to_a_21_station_is_sent_without_waiting_for_an_answer(make_session):
    session, _gw, sent = make_session("2.1")
    body = {"MessageTypeId": 6, "UniqueId": "s1", "Action": "NotifyPeriodicEventStream"}
    backend(session, {**body, "Payload": {"id": 1, "pending": 0, "basetime": "2025-01-01T00:00:00Z", "data": [{"t": 0, "v": "1"}]}})  # fmt: skip
    backend(session, reset("r1", "2.1"))
    assert [f[0] for f in sent] == [6, 2]  # not queued behind anything, no timer


async def test_disconnect_answers_every_waiting_backend_call_offline(make_session, clock):
    session, gw, _sent = make_session()
    for n in range(3):
        backend(session, reset(f"b{n}"))
    session.finish("closed (1006)")
    errors = gw.on("error")
    assert [e["UniqueId"] for e in errors] == ["b0", "b1", "b2"]
    assert {e["ErrorDetails"]["reason"] for e in errors} == {"offline"}
    assert gw.on("presence") == [{"status": "disconnected", "reason": "closed (1006)"}]
    clock.advance(TIMEOUT_S * 1.5)  # and no timer fires afterwards
    assert len(gw.on("error")) == 3


def _held_by_conversations(before, after) -> int:
    stats = after.compare_to(before, "filename")
    return sum(st.size_diff for st in stats if "/stations/" in st.traceback[0].filename)


async def _answered_calls(session, gw, sent, first: int, count: int) -> int:
    """Heartbeats answered by the backend; returns how many answers reached the station."""
    now, answers = "2025-01-01T00:00:00Z", 0
    for n in range(first, first + count):
        session.on_text(f'[2, "call-{n:06d}", "Heartbeat", {{}}]')
        backend(session, {"MessageTypeId": 3, "UniqueId": f"call-{n:06d}", "Payload": {"currentTime": now}})  # fmt: skip
        answers += sum(1 for frame in sent if frame[:2] == [3, f"call-{n:06d}"])
        del gw.published[:], sent[:]  # the stand-in's records, not the conversation's memory
        session.clock.advance(0)  # as the loop drops cancelled timers as it runs
    return answers


@pytest.mark.parametrize(("version", "warm_up"), [("1.6", 10), ("2.0.1", 10), ("2.1", 200)])
async def test_a_station_answered_for_hours_holds_no_more_memory(make_session, version, warm_up):
    """A soak of 1,000 stations grew ~1 MB/min: each kept its last 256 answered ids."""
    import gc
    import tracemalloc

    session, gw, sent = make_session(version)
    tracemalloc.start()
    try:
        # 2.1 remembers a window of recent answers: fill it, traced, so its turnover nets to 0
        await _answered_calls(session, gw, sent, 0, warm_up)
        gc.collect()
        before = tracemalloc.take_snapshot()
        answers = await _answered_calls(session, gw, sent, warm_up, 2000)
        gc.collect()
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    assert answers == 2000
    assert _held_by_conversations(before, after) < 8 * 1024


async def test_callresulterror_names_an_action_answered_dozens_of_calls_before(make_session):
    session, gw, sent = make_session("2.1")
    session.on_text('[2, "old", "BootNotification", {"reason": "PowerUp", "chargingStation": {"model": "m", "vendorName": "v"}}]')  # fmt: skip
    backend(session, {"MessageTypeId": 3, "UniqueId": "old", "Payload": {"currentTime": "2025-01-01T00:00:00Z", "interval": 60, "status": "Accepted"}})  # fmt: skip
    await _answered_calls(session, gw, sent, 0, 50)
    session.on_text('[5, "old", "GenericError", "could not apply", {}]')
    assert gw.on("error")[-1]["Action"] == "BootNotification"


# a StatusNotification whose timestamp lacks its offset: a quirk lenient accepts
QUIRKY_STATUS = (
    '[2, "s1", "StatusNotification", {"connectorId": 1, "errorCode": "NoError", '
    '"status": "Available", "timestamp": "2026-12-06T10:00:00"}]'
)


@pytest.mark.parametrize(
    ("policy", "failure_mode", "published", "counted"),
    [
        ("", "reject", False, False),  # the gateway's default: refused
        ("lenient", "reject", True, True),  # the station's own policy wins
        ("log", "reject", True, False),
        ("strict", "log", False, False),  # strict even where the gateway logs
    ],
)
async def test_the_station_policy_decides_a_quirky_frame(
    make_session, policy, failure_mode, published, counted
):
    session, gw, sent = make_session(policy=policy, OCPPGW_VALIDATION_FAILURE=failure_mode)
    session.on_text(QUIRKY_STATUS)
    upstream = gw.on("upstream")
    assert bool(upstream) == published
    if published:
        assert upstream[0]["Validation"]["policy"] == policy
        assert upstream[0]["Payload"]["timestamp"] == "2026-12-06T10:00:00"  # unchanged
    else:
        assert sent[0][:3] == [4, "s1", "PropertyConstraintViolation"]
    assert gw.lenient == ([7] if counted else [])


def test_a_backend_message_leaves_no_station_name_on_the_callers_log_context(clock):
    """The bridge reads every broker message in one context: its own log lines must not name
    the last station a message went to."""
    from ocppgw import logs

    class NamingLink(RecordingLink):
        def send(self, text):
            super().send(text)
            self.sent[-1] = [logs.cid_var.get(), *self.sent[-1]]

    link = NamingLink()
    session = Conversation(RecordingGateway(), StationInfo("CP1", "cp1", 7, "1.6"), link, clock)
    backend(session, reset("b0"))
    assert link.sent[0][:3] == ["CP1", 2, "b0"]  # lines logged handling it carry the station's cid
    assert logs.cid_var.get() == ""


async def test_a_redelivered_call_is_sent_once(make_session):
    # stations/inbox.py publishes a CALL again for a station's new connection, marked; the
    # connection that got the backend's own copy already must not send it twice
    session, gw, sent = make_session()
    backend(session, reset("r1"))
    backend(session, {**reset("r1"), "Redelivered": 1})  # while r1 is in flight
    assert [f[1] for f in sent] == ["r1"]
    session.on_text('[3,"r1",{"status":"Accepted"}]')
    backend(session, {**reset("r1"), "Redelivered": 2})  # after r1 was answered
    backend(session, {**reset("r2"), "Redelivered": 1})  # one it never got: it is sent
    assert [f[1] for f in sent] == ["r1", "r2"]
    assert [b["UniqueId"] for b in gw.on("reply")] == ["r1"]
    assert not gw.on("error")
