"""OCPP-J frames: every row of the §1 bad-frame table of docs/contract.md, per version."""

import orjson
import pytest

from stations import frames
from stations.frames import Frame, FrameError, Ignored

VERSIONS = ("1.6", "2.0.1", "2.1")
RPC = {"1.6": "FormationViolation", "2.0.1": "RpcFrameworkError", "2.1": "RpcFrameworkError"}
LONG_ID = "x" * 37

# (frame text, UniqueId of the answer) for frames that cannot be classified: every version
# answers them with its "cannot be classified" code (FormationViolation on 1.6)
UNCLASSIFIABLE = [
    ("not json at all", "-1"),
    ("", "-1"),
    ("[2, 'single quotes']", "-1"),
    ('{"MessageTypeId": 2}', "-1"),
    ("null", "-1"),
    ('"a string"', "-1"),
    ("[]", "-1"),
    ("[2]", "-1"),
    ('[2, "abc"]', "abc"),  # too short: the UniqueId is readable, so it is used
    (f'[2, "{LONG_ID}"]', "-1"),
    ('[2, 17, "Heartbeat", {}]', "-1"),  # UniqueId not a string
    ('[2, null, "Heartbeat", {}]', "-1"),
    ('[2, "", "Heartbeat", {}]', "-1"),  # UniqueId empty
    (f'[2, "{LONG_ID}", "Heartbeat", {{}}]', "-1"),  # UniqueId longer than 36
    ('[true, "u1", "Heartbeat", {}]', "u1"),  # MessageTypeId not an integer
    ('["2", "u1", "Heartbeat", {}]', "u1"),
    ('[2.0, "u1", "Heartbeat", {}]', "u1"),
]

# a CALL with the wrong shape is answered on every version with the same code
MALFORMED_CALLS = [
    '[2, "u1", "Heartbeat"]',
    '[2, "u1", "Heartbeat", {}, "extra"]',
    '[2, "u1", 42, {}]',
    '[2, "u1", "", {}]',
    '[2, "u1", null, {}]',
    f'[2, "u1", "{"A" * 65}", {{}}]',
]

# malformed answers are never answered (a CALLERROR answers only a CALL, 2.0.1 §4.2.3)
MALFORMED_ANSWERS = [
    '[3, "u1", {}, "extra"]',
    '[3, "u1", "not an object"]',
    '[3, "u1", []]',
    '[4, "u1", "GenericError"]',
    '[4, "u1", "GenericError", "desc", {}, "extra"]',
    '[4, "u1", 5, "desc", {}]',
    '[4, "u1", "GenericError", 5, {}]',
    '[4, "u1", "GenericError", "desc", []]',
    '[3, "u1"]',  # too short, but classified by its MessageTypeId: still no CALLERROR
    '[4, "u1"]',
    "[3, 17, {}]",
    '[4, 17, "GenericError", "desc", {}]',
    f'[3, "{LONG_ID}", {{}}]',
]


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize(("text", "unique_id"), UNCLASSIFIABLE)
def test_unclassifiable_frame_gets_the_versions_rpc_error(version, text, unique_id):
    with pytest.raises(FrameError) as caught:
        frames.parse(text, version)
    assert caught.value.code == RPC[version]
    assert caught.value.unique_id == unique_id
    assert 0 < len(caught.value.description) < 255


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("text", MALFORMED_CALLS)
def test_call_with_wrong_shape_is_answered_with_its_unique_id(version, text):
    with pytest.raises(FrameError) as caught:
        frames.parse(text, version)
    assert (caught.value.code, caught.value.unique_id) == (RPC[version], "u1")


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("text", MALFORMED_ANSWERS)
def test_malformed_callresult_and_callerror_are_ignored_never_answered(version, text):
    with pytest.raises(Ignored) as caught:
        frames.parse(text, version)
    assert caught.value.reason


@pytest.mark.parametrize(
    ("version", "text", "outcome"),
    [
        # unknown MessageTypeId: ignored on 1.6 (1.6J §4.1.3) and 2.1, answered on 2.0.1
        ("1.6", '[7, "u1", {}]', "ignored"),
        ("2.0.1", '[7, "u1", {}]', "MessageTypeNotSupported"),
        ("2.1", '[7, "u1", {}]', "ignored"),
        ("1.6", '[0, "u1", "Heartbeat", {}]', "ignored"),
        ("2.0.1", '[0, "u1", "Heartbeat", {}]', "MessageTypeNotSupported"),
        ("2.1", '[-2, "u1", "Heartbeat", {}]', "ignored"),
        # 5 and 6 exist only in 2.1
        ("1.6", '[5, "u1", "GenericError", "desc", {}]', "ignored"),
        ("1.6", '[6, "u1", "Heartbeat", {}]', "ignored"),
        ("2.0.1", '[5, "u1", "GenericError", "desc", {}]', "MessageTypeNotSupported"),
        ("2.0.1", '[6, "u1", "Heartbeat", {}]', "MessageTypeNotSupported"),
    ],
)
def test_unknown_message_type(version, text, outcome):
    if outcome == "ignored":
        with pytest.raises(Ignored) as ignored:
            frames.parse(text, version)
        assert "MessageTypeId" in ignored.value.reason
        return
    with pytest.raises(FrameError) as caught:
        frames.parse(text, version)
    assert (caught.value.code, caught.value.unique_id) == (outcome, "u1")


@pytest.mark.parametrize(
    "text",
    [
        '[6, "u1", "Heartbeat"]',
        '[6, "u1", "Heartbeat", {}, "extra"]',
        '[6, "u1", 42, {}]',
        '[6, "u1", "", {}]',
        '[6, "u1"]',
        '[6, 17, "Heartbeat", {}]',
        '[5, "u1", "GenericError"]',
        '[5, "u1", "GenericError", "desc", []]',
        '[5, "u1"]',
    ],
)
def test_malformed_send_and_callresulterror_on_21_are_ignored_never_frame_errors(text):
    with pytest.raises(Ignored):
        frames.parse(text, "2.1")


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            '[2, "42", "BootNotification", {"a": 1}]',
            Frame(2, "42", action="BootNotification", payload={"a": 1}),
        ),
        ('[3, "42", {"status": "Accepted"}]', Frame(3, "42", payload={"status": "Accepted"})),
        (
            '[4, "42", "NotImplemented", "no", {"x": 1}]',
            Frame(4, "42", code="NotImplemented", description="no", details={"x": 1}),
        ),
        # ErrorDetails omitted: tolerated, read as {}
        ('[4, "42", "GenericError", ""]', Frame(4, "42", code="GenericError", description="")),
        (f'[2, "{"i" * 36}", "Heartbeat", {{}}]', Frame(2, "i" * 36, "Heartbeat", {})),
    ],
)
def test_well_formed_frames_parse(version, text, expected):
    assert frames.parse(text, version) == expected


def test_call_payload_is_not_judged_here():
    # a non-object payload is the schema check's business (TypeConstraintViolation), not framing
    assert frames.parse('[2, "1", "Heartbeat", []]', "1.6").payload == []


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('[6, "9", "NotifyPeriodicEventStream", {"id": 1}]', Frame(6, "9", "NotifyPeriodicEventStream", {"id": 1})),
        (
            '[5, "9", "FormatViolation", "bad", {}]',
            Frame(5, "9", code="FormatViolation", description="bad"),
        ),
    ],
)  # fmt: skip
def test_send_and_callresulterror_parse_on_21(text, expected):
    frame = frames.parse(text, "2.1")
    assert frame == expected
    assert frame.is_error == (frame.type == 5)


def test_bytes_are_accepted_like_text():
    assert frames.parse(b'[2, "1", "Heartbeat", {}]', "1.6").action == "Heartbeat"


def test_description_is_cut_below_255_characters():
    assert len(FrameError("GenericError", "x" * 1000).description) < 255
    text = frames.call_error("1", "GenericError", "y" * 1000)
    assert len(orjson.loads(text)[3]) < 255


@pytest.mark.parametrize(
    "frame",
    [
        Frame(2, "1", action="Reset", payload={"type": "Soft"}),
        Frame(3, "1", payload={"status": "Accepted"}),
        Frame(4, "1", code="GenericError", description="d", details={"k": "v"}),
        Frame(5, "1", code="FormatViolation", description="d"),
        Frame(6, "1", action="NotifyPeriodicEventStream", payload={}),
    ],
)
def test_encode_round_trips(frame):
    assert frames.parse(frames.encode(frame), "2.1") == frame


def test_encode_writes_the_ocpp_j_arrays():
    assert (
        frames.encode(Frame(2, "1", "Reset", {"type": "Soft"})) == '[2,"1","Reset",{"type":"Soft"}]'
    )
    assert frames.encode(Frame(3, "1", payload={})) == '[3,"1",{}]'
    assert frames.call_error("7", "NotImplemented", "nope") == '[4,"7","NotImplemented","nope",{}]'  # fmt: skip
