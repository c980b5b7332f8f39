"""The MQTT envelope (the seed's JSON) both ways: exact upstream shapes, downstream errors."""

import datetime

import orjson
import pytest

from stations import envelopes
from stations.envelopes import EnvelopeError
from stations.frames import Frame


# --- upstream: exactly the seed's keys, in the seed's order ----------------------------------------
@pytest.mark.parametrize(
    ("frame", "action", "expected"),
    [
        (
            Frame(2, "42", action="BootNotification", payload={"chargePointVendor": "v"}),
            "BootNotification",
            b'{"MessageTypeId":2,"UniqueId":"42","Action":"BootNotification",'
            b'"Payload":{"chargePointVendor":"v"}}',
        ),
        (
            Frame(3, "42", payload={"status": "Accepted"}),
            "Reset",
            b'{"MessageTypeId":3,"UniqueId":"42","Action":"Reset","Payload":{"status":"Accepted"}}',
        ),
        (  # a reply nobody asked for: no Action key at all
            Frame(3, "42", payload={}),
            None,
            b'{"MessageTypeId":3,"UniqueId":"42","Payload":{}}',
        ),
        (
            Frame(4, "42", code="NotSupported", description="no", details={"k": 1}),
            "Reset",
            b'{"MessageTypeId":4,"UniqueId":"42","Action":"Reset","ErrorCode":"NotSupported",'
            b'"ErrorDescription":"no","ErrorDetails":{"k":1}}',
        ),
        (
            Frame(5, "42", code="FormatViolation", description="bad"),
            "Authorize",
            b'{"MessageTypeId":5,"UniqueId":"42","Action":"Authorize",'
            b'"ErrorCode":"FormatViolation","ErrorDescription":"bad","ErrorDetails":{}}',
        ),
        (
            Frame(6, "7", action="NotifyPeriodicEventStream", payload={"id": 1}),
            "NotifyPeriodicEventStream",
            b'{"MessageTypeId":6,"UniqueId":"7","Action":"NotifyPeriodicEventStream",'
            b'"Payload":{"id":1}}',
        ),
    ],
)
def test_upstream_envelope_is_the_seeds(frame, action, expected):
    assert envelopes.upstream(frame, action) == expected


def test_late_answer_is_marked():
    body = orjson.loads(envelopes.upstream(Frame(3, "1", payload={}), "Reset", late=True))
    assert body == {"MessageTypeId": 3, "UniqueId": "1", "Action": "Reset", "Payload": {}, "Late": True}  # fmt: skip


def test_gateway_error_envelope_carries_origin_reason_node_and_time():
    body = orjson.loads(
        envelopes.gateway_error(
            "b-1", "Reset", "GenericError", "x" * 400, "timeout", "node-a", {"path": "type"}
        )
    )
    details = body.pop("ErrorDetails")
    assert body == {
        "MessageTypeId": 4,
        "UniqueId": "b-1",
        "Action": "Reset",
        "ErrorCode": "GenericError",
        "ErrorDescription": "x" * 254,
    }
    assert details.pop("at").endswith("+00:00")
    assert details == {"origin": "gateway", "reason": "timeout", "node": "node-a", "path": "type"}


def test_gateway_error_without_action_has_no_action_key():
    body = orjson.loads(envelopes.gateway_error("-1", None, "FormatViolation", "d", "invalid", "n"))
    assert "Action" not in body and body["UniqueId"] == "-1"


def test_presence_event_has_the_contract_keys():
    body = orjson.loads(envelopes.presence("CP1", "connected", "c0ffee", "n1", "2.0.1", "why"))
    at = datetime.datetime.fromisoformat(body.pop("at"))
    assert at.tzinfo is not None
    assert body == {
        "cid": "CP1",
        "status": "connected",
        "connection": "c0ffee",
        "node": "n1",
        "version": "2.0.1",
        "reason": "why",
    }


# --- downstream: the backend's envelope becomes a frame -------------------------------------------
@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            {"MessageTypeId": 2, "UniqueId": "9", "Action": "Reset", "Payload": {"type": "Hard"}},
            Frame(2, "9", action="Reset", payload={"type": "Hard"}),
        ),
        (  # backends often number their calls
            {"MessageTypeId": 2, "UniqueId": 9, "Action": "Reset", "Payload": {}},
            Frame(2, "9", action="Reset", payload={}),
        ),
        (
            {"MessageTypeId": 3, "UniqueId": "9", "Payload": {"currentTime": "t"}},
            Frame(3, "9", payload={"currentTime": "t"}),
        ),
        (  # the seed's reply carries the Action too: tolerated
            {"MessageTypeId": 3, "UniqueId": "9", "Action": "BootNotification", "Payload": {}},
            Frame(3, "9", payload={}),
        ),
        (
            {
                "MessageTypeId": 4,
                "UniqueId": "9",
                "ErrorCode": "GenericError",
                "ErrorDescription": "d",
            },
            Frame(4, "9", code="GenericError", description="d", details={}),
        ),
        (
            {
                "MessageTypeId": 5,
                "UniqueId": "9",
                "ErrorCode": "FormatViolation",
                "ErrorDescription": "d",
                "ErrorDetails": {"a": 1},
            },
            Frame(5, "9", code="FormatViolation", description="d", details={"a": 1}),
        ),
        (
            {"MessageTypeId": 6, "UniqueId": "9", "Action": "X", "Payload": {}},
            Frame(6, "9", action="X", payload={}),
        ),
    ],
)
def test_downstream_envelope_becomes_a_frame(body, expected):
    assert envelopes.downstream(orjson.dumps(body)) == expected


@pytest.mark.parametrize(
    ("raw", "unique_id", "why"),
    [
        (b"not json", "-1", "not valid JSON"),
        (b"\xff\xfe", "-1", "not valid JSON"),
        (b"", "-1", "not valid JSON"),
        (b"[2, \"1\", \"Reset\", {}]", "-1", "not a JSON object"),
        (b'{"MessageTypeId": 2, "Action": "Reset", "Payload": {}}', "-1", "UniqueId"),
        (b'{"MessageTypeId": 2, "UniqueId": "", "Action": "Reset", "Payload": {}}', "-1", "UniqueId"),
        (b'{"MessageTypeId": 2, "UniqueId": true, "Action": "Reset", "Payload": {}}', "-1", "UniqueId"),
        (b'{"MessageTypeId": 2, "UniqueId": "%s", "Action": "Reset"}' % (b"x" * 37), "-1", "UniqueId"),
        (b'{"MessageTypeId": 2, "UniqueId": "u1", "Payload": {}}', "u1", "Action"),
        (b'{"MessageTypeId": 2, "UniqueId": "u1", "Action": 5, "Payload": {}}', "u1", "Action"),
        (b'{"MessageTypeId": 2, "UniqueId": "u1", "Action": "Reset", "Payload": []}', "u1", "Payload"),
        (b'{"MessageTypeId": 3, "UniqueId": "u1", "Payload": "ok"}', "u1", "Payload"),
        # docs/contract.md §2: each type needs its keys; nothing is filled in for the backend
        (b'{"MessageTypeId": 2, "UniqueId": "u1", "Action": "Reset"}', "u1", "Payload"),
        (b'{"MessageTypeId": 3, "UniqueId": "u1"}', "u1", "Payload"),
        (b'{"MessageTypeId": 4, "UniqueId": "u1", "ErrorCode": "E"}', "u1", "ErrorDescription"),
        (b'{"MessageTypeId": 4, "UniqueId": "u1", "ErrorDescription": "d"}', "u1", "ErrorCode"),
        (b'{"MessageTypeId": 4, "UniqueId": "u1", "ErrorCode": "", "ErrorDescription": "d"}', "u1", "ErrorCode"),
        (b'{"MessageTypeId": 4, "UniqueId": "u1", "ErrorCode": "E", "ErrorDescription": 1}', "u1", "ErrorDescription"),
        (b'{"MessageTypeId": 4, "UniqueId": "u1", "ErrorCode": "E", "ErrorDescription": "", "ErrorDetails": [1]}', "u1", "ErrorDetails"),
        (b'{"MessageTypeId": 7, "UniqueId": "u1"}', "u1", "MessageTypeId"),
        (b'{"UniqueId": "u1", "Action": "Reset", "Payload": {}}', "u1", "MessageTypeId"),
        (b'{"MessageTypeId": "2", "UniqueId": "u1", "Action": "Reset", "Payload": {}}', "u1", "MessageTypeId"),
    ],
)  # fmt: skip
def test_unusable_downstream_envelope_names_the_problem_and_the_readable_id(raw, unique_id, why):
    with pytest.raises(EnvelopeError) as caught:
        envelopes.downstream(raw)
    assert caught.value.unique_id == unique_id
    assert why in caught.value.why


def test_envelope_error_keeps_the_action_when_known():
    raw = b'{"MessageTypeId": 2, "UniqueId": "u1", "Action": "Reset", "Payload": 3}'
    with pytest.raises(EnvelopeError) as caught:
        envelopes.downstream(raw)
    assert caught.value.action == "Reset"


def test_excerpt_is_bounded_and_never_fails_on_bad_utf8():
    assert len(envelopes.excerpt(b"a" * 10000)) == envelopes.EXCERPT_CHARS
    assert envelopes.excerpt(b"\xff ok") == "\ufffd ok"


def test_redelivery_marks_a_call_and_stops_after_a_few():
    raw = b'{"MessageTypeId":2,"UniqueId":"r1","Action":"Reset","Payload":{"type":"Soft"}}'
    assert envelopes.downstream(raw).redelivered == 0
    for count in range(1, envelopes.MAX_REDELIVERIES + 1):
        raw, n = envelopes.redelivery(raw)
        assert n == count and envelopes.downstream(raw).redelivered == count
    assert envelopes.redelivery(raw) is None  # no endless loop between gateways
    assert envelopes.redelivery(b'{"MessageTypeId":3,"UniqueId":"r1","Payload":{}}') is None
    assert envelopes.redelivery(b"not json") is None
