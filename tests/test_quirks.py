"""The lenient policy's quirk table: each quirk x strict / lenient / log, on OCPP 1.6 and 2.0.1."""

import copy

import pytest

from stations import quirks, validation

STATUS_16 = {"connectorId": 1, "errorCode": "NoError", "status": "Available"}
STATUS_201 = {
    "timestamp": "2025-01-01T10:00:00Z",
    "connectorStatus": "Available",
    "evseId": 1,
    "connectorId": 1,
}
PROFILE_16 = {
    "connectorId": 1,
    "csChargingProfiles": {
        "chargingProfileId": 1,
        "stackLevel": 0,
        "chargingProfilePurpose": "TxDefaultProfile",
        "chargingProfileKind": "Absolute",
        "chargingSchedule": {
            "chargingRateUnit": "A",
            "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 10.100000000000001}],
        },
    },
}


def _with(base, **changes):
    payload = copy.deepcopy(base)
    for key, value in changes.items():
        if value is None:
            payload.pop(key)
        else:
            payload[key] = value
    return payload


# (name, version, action, kind, payload, the rule of the first violation)
QUIRKS = [
    ("date-time without offset", "1.6", "StatusNotification", "call",
     _with(STATUS_16, timestamp="2025-01-01T10:00:00"), "format"),
    ("date-time with a space", "1.6", "StatusNotification", "call",
     _with(STATUS_16, timestamp="2025-01-01 10:00:00.123Z"), "format"),
    ("numeric string", "1.6", "StatusNotification", "call",
     _with(STATUS_16, connectorId="1"), "type"),
    ("additionalProperties", "1.6", "StatusNotification", "call",
     _with(STATUS_16, acmeTemperature=41), "additionalProperties"),
    ("multipleOf float noise", "1.6", "SetChargingProfile", "call", PROFILE_16, "multipleOf"),
    ("date-time without offset", "2.0.1", "Heartbeat", "result",
     {"currentTime": "2025-01-01T00:00:00"}, "format"),
    ("date-time with a space", "2.0.1", "StatusNotification", "call",
     _with(STATUS_201, timestamp="2025-01-01 10:00:00+01:00"), "format"),
    ("numeric string", "2.0.1", "StatusNotification", "call",
     _with(STATUS_201, evseId="1"), "type"),
    ("additionalProperties", "2.0.1", "StatusNotification", "call",
     _with(STATUS_201, acmeTemperature=41), "additionalProperties"),
    ("several quirks at once", "2.0.1", "StatusNotification", "call",
     _with(STATUS_201, evseId="1", timestamp="2025-01-01 10:00:00", vendor={"x": 1}), None),
]  # fmt: skip
# 2.0.1's schemas have no multipleOf: that quirk exists only on 1.6

# structural errors lenient still refuses (and the quirk that hides one does not excuse it)
STRUCTURAL = [
    ("required missing", "1.6", "StatusNotification", "call", _with(STATUS_16, status=None)),
    ("enum", "1.6", "StatusNotification", "call", _with(STATUS_16, status="Sideways")),
    ("quirk + required", "1.6", "StatusNotification", "call",
     _with(STATUS_16, connectorId="1", status=None)),
    ("not a date", "1.6", "StatusNotification", "call", _with(STATUS_16, timestamp="yesterday")),
    ("non-numeric string", "1.6", "StatusNotification", "call", _with(STATUS_16, connectorId="one")),
    ("fraction for an integer", "2.0.1", "StatusNotification", "call",
     _with(STATUS_201, evseId="1.5")),
    ("far off multipleOf", "1.6", "SetChargingProfile", "call",
     {**PROFILE_16, "csChargingProfiles": {**PROFILE_16["csChargingProfiles"], "chargingSchedule": {
         "chargingRateUnit": "A", "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 10.15}]}}}),
    ("required missing", "2.0.1", "StatusNotification", "call", _with(STATUS_201, evseId=None)),
    ("wrong type", "2.0.1", "Heartbeat", "result", {"currentTime": 5}),
]  # fmt: skip


def judge(policy, version, action, kind, payload):
    def check(p):
        return validation.check(version, action, kind, p)

    return quirks.judge(policy, check(payload), check, payload)


@pytest.mark.parametrize("policy", quirks.POLICIES)
@pytest.mark.parametrize(("name", "version", "action", "kind", "payload", "rule"), QUIRKS)
def test_each_quirk_under_each_policy(policy, name, version, action, kind, payload, rule):
    original = copy.deepcopy(payload)
    first = validation.check(version, action, kind, payload)
    assert first is not None, "the quirk must fail the official schema"
    if rule:
        assert first.rule == rule
    outcome = judge(policy, version, action, kind, payload)
    assert payload == original  # forwarded unchanged
    if policy == "strict":
        assert outcome.stop == first and outcome.marker is None and not outcome.lenient
    else:
        assert outcome.stop is None
        assert outcome.marker == {"path": first.path, "rule": first.rule, "policy": policy}
        assert outcome.lenient is (policy == "lenient")


@pytest.mark.parametrize("policy", quirks.POLICIES)
@pytest.mark.parametrize(("name", "version", "action", "kind", "payload"), STRUCTURAL)
def test_structural_errors_are_refused_unless_logging(policy, name, version, action, kind, payload):
    outcome = judge(policy, version, action, kind, payload)
    if policy == "log":
        assert outcome.stop is None and outcome.marker["policy"] == "log"
    else:
        assert outcome.stop is not None and outcome.marker is None and not outcome.lenient


def test_a_valid_payload_passes_without_a_marker():
    for policy in quirks.POLICIES:
        assert judge(policy, "1.6", "StatusNotification", "call", STATUS_16) == quirks.PASSED


@pytest.mark.parametrize(
    ("station", "mode", "expected"),
    [("", "reject", "strict"), ("", "log", "log"), ("lenient", "reject", "lenient"),
     ("strict", "log", "strict"), (None, "reject", "strict")],
)  # fmt: skip
def test_a_station_policy_overrides_the_gateway_failure_mode(station, mode, expected):
    assert quirks.policy_for(station, mode) == expected
