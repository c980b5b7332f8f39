"""Checks/s of stations.validation.check() against the ocpp package's own jsonschema validation.

Run: python bench/validators.py [seconds-per-measurement]. Both validators get the same payloads
(valid and invalid, CALLs and CALLRESULTs of several actions, per version); the script prints
throughput, the speed-up and how many decisions disagree (must be 0).
"""

import copy
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ocpp.messages import Call, CallResult, _validate_payload

from stations import validation

TS = "2025-01-01T00:00:00Z"
# Frames a busy site sees most, per version: (action, kind, payload)
MIX = {
    "1.6": [
        ("BootNotification", "call", {"chargePointVendor": "Acme", "chargePointModel": "M1"}),
        ("BootNotification", "result", {"status": "Accepted", "currentTime": TS, "interval": 300}),
        ("Heartbeat", "call", {}),
        ("StatusNotification", "call", {"connectorId": 1, "errorCode": "NoError", "status": "Charging"}),
        ("MeterValues", "call", {"connectorId": 1, "transactionId": 7, "meterValue": [
            {"timestamp": TS, "sampledValue": [
                {"value": "1234.5", "measurand": "Energy.Active.Import.Register", "unit": "Wh"},
                {"value": "11000", "measurand": "Power.Active.Import", "unit": "W"},
            ]}]}),
        ("StartTransaction", "call", {"connectorId": 1, "idTag": "TAG1", "meterStart": 0,
                                      "timestamp": TS}),
        ("Authorize", "result", {"idTagInfo": {"status": "Accepted"}}),
    ],
    "2.0.1": [
        ("BootNotification", "call", {"reason": "PowerUp",
                                      "chargingStation": {"model": "M1", "vendorName": "Acme"}}),
        ("Heartbeat", "call", {}),
        ("StatusNotification", "call", {"timestamp": TS, "connectorStatus": "Occupied",
                                        "evseId": 1, "connectorId": 1}),
        ("TransactionEvent", "call", {"eventType": "Updated", "timestamp": TS,
                                      "triggerReason": "MeterValuePeriodic", "seqNo": 3,
                                      "transactionInfo": {"transactionId": "tx-1"},
                                      "evse": {"id": 1, "connectorId": 1},
                                      "meterValue": [{"timestamp": TS, "sampledValue": [
                                          {"value": 1234.5,
                                           "measurand": "Energy.Active.Import.Register"},
                                          {"value": 11000, "measurand": "Power.Active.Import"},
                                      ]}]}),
        ("Authorize", "result", {"idTokenInfo": {"status": "Accepted"}}),
        ("Reset", "call", {"type": "OnIdle"}),
    ],
}  # fmt: skip
MIX["2.1"] = MIX["2.0.1"]


def _invalid(payload):
    """Three broken variants: an unknown key, a wrong type, a missing key (when there is one)."""
    out = [{**payload, "unexpectedKey": 1}]
    if payload:
        key = next(iter(payload))
        out.append({**payload, key: 12345 if isinstance(payload[key], str) else "x"})
        out.append({k: x for k, x in payload.items() if k != key})
    return out


def package_check(version, action, kind, payload):
    """The ocpp package's path (synchronously: validate_payload only adds an executor hop)."""
    message = Call("1", action, payload) if kind == "call" else CallResult("1", payload, action)
    try:
        _validate_payload(message, version)
    except Exception:  # one OCPPError subclass per rule
        return False
    return True


def ours(version, action, kind, payload):
    return validation.check(version, action, kind, payload) is None


def rate(fn, version, frames, seconds):
    for frame in frames:  # compile and cache outside the timing
        fn(version, *frame)
    done, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        for frame in frames:
            fn(version, *frame)
        done += len(frames)
    return done / elapsed


def main(seconds=1.0):
    print(f"{'validator':<25}{'version':<9}{'payloads':<12}{'checks/s':>12}{'speed-up':>10}")
    disagreements = 0
    for version, mix in MIX.items():
        valid = list(mix)
        invalid = [(a, k, bad) for a, k, p in mix for bad in _invalid(p)]
        for frame in valid + invalid:
            disagreements += ours(version, *frame) != package_check(version, *copy.deepcopy(frame))
        for label, frames in (("valid", valid), ("invalid", invalid), ("all", valid + invalid)):
            theirs = rate(package_check, version, frames, seconds)
            mine = rate(ours, version, frames, seconds)
            what = f"{label} ({len(frames)})"
            print(f"{'ocpp 2.1.0 (jsonschema)':<25}{version:<9}{what:<12}{theirs:>12,.0f}{'':>10}")
            speed_up = f"{mine / theirs:.1f}x"
            print(
                f"{'ocppgw (fastjsonschema)':<25}{version:<9}{what:<12}{mine:>12,.0f}{speed_up:>10}"
            )
    print(f"disagreeing decisions: {disagreements}")
    return disagreements


if __name__ == "__main__":
    sys.exit(1 if main(float(sys.argv[1]) if len(sys.argv) > 1 else 1.0) else 0)
