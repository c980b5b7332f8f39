"""stations.validation: schema decisions, error codes per version, examples, directions."""

import copy
import random

import fastjsonschema
import pytest
from jsonschema import Draft4Validator
from ocpp.messages import Call, CallResult, _validate_payload

from stations import validation as v
from stations.ocpp_actions import INITIATED_BY

TS = "2025-01-01T00:00:00Z"
OCCURRENCE = {
    "1.6": "OccurenceConstraintViolation",
    "2.0.1": "OccurenceConstraintViolation",
    "2.1": "OccurrenceConstraintViolation",
}
BOOT_2X = {"reason": "PowerUp", "chargingStation": {"model": "M1", "vendorName": "Acme"}}
STATUS_2X = {"timestamp": TS, "connectorStatus": "Available", "evseId": 1, "connectorId": 1}
VALID = {
    "1.6": [
        ("BootNotification", "call", {"chargePointVendor": "Acme", "chargePointModel": "M1"}),
        ("BootNotification", "result", {"status": "Accepted", "currentTime": TS, "interval": 300}),
        ("Heartbeat", "call", {}),
        ("Heartbeat", "result", {"currentTime": TS}),
        (
            "StatusNotification",
            "call",
            {"connectorId": 1, "errorCode": "NoError", "status": "Available"},
        ),
        ("Reset", "call", {"type": "Soft"}),
        ("Reset", "result", {"status": "Accepted"}),
    ],
    "2.0.1": [
        ("BootNotification", "call", BOOT_2X),
        ("BootNotification", "result", {"currentTime": TS, "interval": 300, "status": "Accepted"}),
        ("Heartbeat", "call", {}),
        ("Heartbeat", "result", {"currentTime": TS}),
        ("StatusNotification", "call", STATUS_2X),
        ("Reset", "call", {"type": "OnIdle", "evseId": 1}),
        ("Reset", "result", {"status": "Scheduled"}),
    ],
}
VALID["2.1"] = [*VALID["2.0.1"], ("Reset", "call", {"type": "ImmediateAndResume"})]

# (action, payload, expected path, expected rule)
INVALID_16 = [
    ("BootNotification", {"chargePointModel": "M1"}, "chargePointVendor", "required"),
    ("BootNotification", {"chargePointVendor": "x" * 21, "chargePointModel": "M1"},
     "chargePointVendor", "maxLength"),
    ("StatusNotification", {"connectorId": "1", "errorCode": "NoError", "status": "Available"},
     "connectorId", "type"),
]  # fmt: skip
INVALID_2X = [
    ("BootNotification", {"reason": "PowerUp"}, "chargingStation", "required"),
    ("BootNotification", {**BOOT_2X, "chargingStation": {"vendorName": "A"}},
     "chargingStation.model", "required"),
    ("BootNotification", {**BOOT_2X, "chargingStation": {"model": "M", "vendorName": "x" * 51}},
     "chargingStation.vendorName", "maxLength"),
    ("BootNotification", {**BOOT_2X, "chargingStation": {"model": 1, "vendorName": "A"}},
     "chargingStation.model", "type"),
    ("StatusNotification", {**STATUS_2X, "evseId": "1"}, "evseId", "type"),
    ("StatusNotification", {**STATUS_2X, "timestamp": "yesterday"}, "timestamp", "format"),
    ("MeterValues", {"evseId": 1, "meterValue": []}, "meterValue", "minItems"),
]  # fmt: skip
INVALID_ANY = [
    ("Heartbeat", {"foo": 1}, "foo", "additionalProperties"),
    ("Reset", {"type": "Sometimes"}, "type", "enum"),
]
INVALID = [
    (ver, *case)
    for ver in v.VERSIONS
    for case in (INVALID_16 if ver == "1.6" else INVALID_2X) + INVALID_ANY
]
EXPECTED_CODE = {
    "required": OCCURRENCE,
    "minItems": OCCURRENCE,
    "type": dict.fromkeys(v.VERSIONS, "TypeConstraintViolation"),
}


@pytest.mark.parametrize(
    ("version", "action", "kind", "payload"),
    [(ver, *case) for ver, cases in VALID.items() for case in cases],
)
def test_valid_payloads_pass(version, action, kind, payload):
    assert v.check(version, action, kind, payload) is None


@pytest.mark.parametrize(("version", "action", "payload", "path", "rule"), INVALID)
def test_invalid_payloads(version, action, payload, path, rule):
    found = v.check(version, action, "call", payload)
    expected = EXPECTED_CODE.get(rule, dict.fromkeys(v.VERSIONS, "PropertyConstraintViolation"))
    assert found == v.Violation(expected[version], path, rule, found.description)
    assert found.description.startswith(f"{path}: ")
    assert rule in found.description or rule == "required"
    assert len(found.description) < 255


@pytest.mark.parametrize("version", v.VERSIONS)
def test_description_is_bounded_but_names_the_path(version):
    found = v.check(version, "Heartbeat", "call", {"k" * 1000: 1})
    assert found.rule == "additionalProperties"
    assert found.description.startswith("kkkk") and len(found.description) < 255
    assert len(found.path) < 255


@pytest.mark.parametrize("version", v.VERSIONS)
@pytest.mark.parametrize("payload", [[], "x", 1, None, [{"a": 1}]])
def test_payload_that_is_not_an_object(version, payload):
    found = v.check(version, "Heartbeat", "call", payload)
    assert (found.code, found.path, found.rule) == ("TypeConstraintViolation", "", "type")


@pytest.mark.parametrize("version", v.VERSIONS)
def test_unknown_action_is_left_to_the_caller(version):
    assert not v.is_known(version, "AcmeVendorThing")
    assert v.check(version, "AcmeVendorThing", "call", {"anything": 1}) is None
    assert v.check(version, "AcmeVendorThing", "result", []) is None
    assert v.is_known(version, "Heartbeat")
    assert "AcmeVendorThing" not in {key[1] for key in v._compiled}, "vendor names leak into cache"


def test_unknown_version_or_kind_is_a_programming_error():
    with pytest.raises(ValueError):
        v.check("2.0", "Heartbeat", "call", {})
    with pytest.raises(ValueError):
        v.check("1.6", "Heartbeat", "request", {})


def test_21_send_schema():
    assert v.is_known("2.1", "NotifyPeriodicEventStream")
    assert "NotifyPeriodicEventStream" in v.actions("2.1", "cp")
    found = v.check("2.1", "NotifyPeriodicEventStream", "send", {})
    assert (found.code, found.rule) == ("OccurrenceConstraintViolation", "required")
    payload = v.example("2.1", "NotifyPeriodicEventStream")
    assert v.check("2.1", "NotifyPeriodicEventStream", "send", payload) is None
    # a SEND of an ordinary action is checked against its request schema
    assert v.check("2.1", "Heartbeat", "send", {"x": 1}).rule == "additionalProperties"


def test_defaults_are_not_written_into_the_payload():
    payload = v.example("2.0.1", "NotifyEvent")  # NotifyEventRequest.tbc has "default": false
    before = copy.deepcopy(payload)
    assert v.check("2.0.1", "NotifyEvent", "call", payload) is None
    assert payload == before


def test_remote_refs_are_never_fetched():
    with pytest.raises(fastjsonschema.JsonSchemaDefinitionException):
        fastjsonschema.compile({"$ref": "http://127.0.0.1:9/x.json"}, handlers=v._NoFetch())


def test_codes_per_version():
    assert [v.generic_code(ver) for ver in v.VERSIONS] == [
        "FormationViolation",
        "FormatViolation",
        "FormatViolation",
    ]
    for ver in v.VERSIONS:
        for code in ("OccurenceConstraintViolation", "OccurrenceConstraintViolation"):
            assert v.spell(code, ver) == OCCURRENCE[ver]
        assert v.spell("FormationViolation", ver) == v.generic_code(ver)
        assert v.spell("TypeConstraintViolation", ver) == "TypeConstraintViolation"
    assert v.normalize_code("OccurenceConstraintViolation") == "OccurrenceConstraintViolation"
    assert v.normalize_code("GenericError") == "GenericError"
    assert v.spell("RpcFrameworkError", "1.6") == "FormationViolation"
    assert v.spell("RpcFrameworkError", "2.1") == "RpcFrameworkError"
    # rules outside the table of docs/contract.md fall back to the generic code
    assert [v._code(ver, "uniqueItems") for ver in v.VERSIONS] == [
        "FormationViolation",
        "FormatViolation",
        "FormatViolation",
    ]


def test_directions():
    csms = v.actions("1.6", "csms")
    assert {"Reset", "RemoteStartTransaction", "DataTransfer"} <= set(csms)
    assert "BootNotification" not in csms
    assert "BootNotification" in v.actions("1.6", "cp")
    assert "RequestStartTransaction" in v.actions("2.0.1", "csms")
    assert "TransactionEvent" in v.actions("2.1", "cp")
    for ver in v.VERSIONS:
        everything = v.actions(ver)
        assert everything == sorted(everything)
        tables = INITIATED_BY[ver]
        # the hand-written direction tables name exactly the actions the package has schemas for
        assert set(everything) == tables["cp"] | tables["csms"]
        assert tables["cp"] & tables["csms"] == {"DataTransfer"}


@pytest.mark.parametrize("version", v.VERSIONS)
def test_every_schema_compiles(version):
    v.warm(version)
    keys = [key for key in v._schema_index() if key[0] == version]
    assert keys and all(v._compiled[key] is not v._passes for key in keys)


EVERY_ACTION = [(ver, action) for ver in v.VERSIONS for action in v.actions(ver)]


@pytest.mark.parametrize(("version", "action"), EVERY_ACTION)
def test_example_is_valid(version, action):
    payload = v.example(version, action)
    kind = "call" if (version, action, "call") in v._schema_index() else "send"
    assert isinstance(payload, dict)
    assert v.check(version, action, kind, payload) is None
    if (version, action, "result") in v._schema_index():
        assert v.check(version, action, "result", v.example(version, action, "result")) is None


# --- agreement with the ocpp package's own (jsonschema) validation -----------------------------


def _full(node, root, name, depth=0):
    """Like example(), but with every optional property and one array item, to reach deep."""
    while "$ref" in node:
        node = root["definitions"][node["$ref"].rsplit("/", 1)[1]]
    if node.get("type") == "object" and depth < 6:
        props = node.get("properties", {})
        return {k: _full(s, root, k, depth + 1) for k, s in props.items()}
    if node.get("type") == "array" and depth < 6:
        count = max(node.get("minItems", 0), min(node.get("maxItems", 1), 1))
        return [_full(node.get("items", {}), root, name, depth + 1) for _ in range(count)]
    return v._build(node, root, name, depth)


def _other_type(value):
    # never an integral float: draft-06 counts 1.0 as an integer, the package's Draft4 does not
    if isinstance(value, bool | int | float):
        return "x"
    return 7 if isinstance(value, str) else "x"


def _mutations(payload):
    """Drop each key, change each value's type, add an unknown key, at every object level."""
    out = []

    def walk(node, rebuild):
        if isinstance(node, dict):
            out.append(rebuild({**node, "unexpectedKey": 1}))
            for key, value in node.items():
                out.append(rebuild({k: x for k, x in node.items() if k != key}))
                out.append(rebuild({**node, key: _other_type(value)}))
                walk(value, lambda new, key=key: rebuild({**node, key: new}))
        elif isinstance(node, list) and node:
            walk(node[0], lambda new: rebuild([new, *node[1:]]))

    walk(payload, lambda new: new)
    return out


def _package_says_valid(version, action, kind, payload):
    payload = copy.deepcopy(payload)
    if kind == "send":  # the package has no SEND frames; validate like it does, with Draft4
        return Draft4Validator(v._schema(version, action, kind)).is_valid(payload)
    message = Call("1", action, payload) if kind == "call" else CallResult("1", payload, action)
    try:
        _validate_payload(message, version)
    except Exception:  # the package raises a different OCPPError per rule
        return False
    return True


def _probes(version):
    rng = random.Random(version)
    probes = []
    for action in v.actions(version):
        for kind in ("call", "result", "send"):
            if (version, action, kind) not in v._schema_index():
                continue
            if kind == "send" and action != "NotifyPeriodicEventStream":
                continue
            schema = v._schema(version, action, kind)
            bases = [v.example(version, action, kind), _full(schema, schema, "")]
            mutations = _mutations(bases[0]) + _mutations(bases[1])
            picked = rng.sample(mutations, min(4, len(mutations)))
            probes += [(action, kind, p) for p in bases + picked]
    return probes


@pytest.mark.parametrize("version", v.VERSIONS)
def test_decisions_agree_with_the_ocpp_package(version):
    probes = _probes(version)
    valid = disagree = 0
    for action, kind, payload in probes:
        ours = v.check(version, action, kind, copy.deepcopy(payload)) is None
        theirs = _package_says_valid(version, action, kind, payload)
        valid += ours
        if ours != theirs:
            disagree += 1
            print("disagree", version, action, kind, ours, payload)
    assert len(probes) >= 300
    assert 100 <= valid <= len(probes) - 100
    assert disagree == 0


def test_known_differences_from_the_ocpp_package():
    # The package validates with Draft4Validator and no format checker; the schemas say draft-06
    # and declare "format": "date-time", which fastjsonschema enforces.
    late = {**STATUS_2X, "timestamp": "2025-01-01T00:00:00"}  # no UTC offset
    assert v.check("2.0.1", "StatusNotification", "call", late).rule == "format"
    assert _package_says_valid("2.0.1", "StatusNotification", "call", late)
    whole = {**STATUS_2X, "evseId": 1.0}
    assert v.check("2.0.1", "StatusNotification", "call", whole) is None
    assert not _package_says_valid("2.0.1", "StatusNotification", "call", whole)


@pytest.mark.parametrize("version", v.VERSIONS)
def test_station_path_compiled_up_front(version):
    # ocppgw/edge/serve.py compiles these before listening: a station's Boot and the answer to it
    assert v.warm_boot_path(version) == 16
    for kind in ("call", "result"):
        assert (version, "BootNotification", kind) in v._compiled
        assert (version, "Heartbeat", kind) in v._compiled
