"""`manage.py simulate`: a charge point built on the `ocpp` package, against a real gateway.

It boots, keeps sending heartbeats/meter values/status, answers an operator's commands, and goes
on when the backend leaves one of its CALLs unanswered.
"""

import asyncio
import threading

import pytest

from stations.management.commands import simulate
from tests.browser.conftest import STATION_PASSWORD, Gateway
from tests.conftest import unique_cid

pytestmark = pytest.mark.e2e


def _accepted(payload):
    return payload["status"] == "Accepted"


def _heartbeat_interval_16(payload):
    return payload["configurationKey"] == [
        {"key": "HeartbeatInterval", "readonly": True, "value": "10"}
    ] and payload["unknownKey"] == ["Nope"]


def _heartbeat_interval_2(payload):
    known, unknown = payload["getVariableResult"]
    return (known["attributeStatus"], known["attributeValue"]) == ("Accepted", "10") and unknown[
        "attributeStatus"
    ] == "UnknownVariable"


_GET_VARIABLES = {
    "getVariableData": [
        {"component": {"name": "OCPPCommCtrlr"}, "variable": {"name": "HeartbeatInterval"}},
        {"component": {"name": "OCPPCommCtrlr"}, "variable": {"name": "Nope"}},
    ]
}
_V2 = [
    ("Reset", {"type": "Immediate"}, _accepted),
    (
        "RequestStartTransaction",
        {"remoteStartId": 1, "idToken": {"idToken": "TAG1", "type": "Central"}},
        _accepted,
    ),
    ("GetVariables", _GET_VARIABLES, _heartbeat_interval_2),
]
COMMANDS = {
    "1.6": [
        ("Reset", {"type": "Soft"}, _accepted),
        ("RemoteStartTransaction", {"idTag": "TAG1"}, _accepted),
        ("GetConfiguration", {"key": ["HeartbeatInterval", "Nope"]}, _heartbeat_interval_16),
    ],
    "2.0.1": _V2,
    "2.1": _V2,
}


@pytest.mark.parametrize("version", ["1.6", "2.0.1", "2.1"])
def test_simulated_station_reports_answers_commands_and_survives_silence(
    tmp_path, mqtt_probe, version
):
    cid = unique_cid("SIM")
    gateway = Gateway(tmp_path, cid)

    def backend(topic, body):
        # answer everything but Heartbeat: that one the simulator must survive unanswered
        if body.get("MessageTypeId") != 2 or body["Action"] == "Heartbeat":
            return None
        payload = {"status": "Accepted", "currentTime": "2025-01-01T00:00:00Z", "interval": 60}
        if body["Action"] not in ("BootNotification",):
            payload = {}
        if body["Action"] == "Authorize":
            payload = {"idTagInfo": {"status": "Accepted"}}
        reply = {"MessageTypeId": 3, "UniqueId": body["UniqueId"], "Payload": payload}
        return f"ocpp/cs/{cid}/Reply/{body['Action']}", reply

    probe = mqtt_probe([f"ocpp/cp/{cid}/#", f"ocpp/cp/Reply/{cid}"], respond=backend)
    runner = threading.Thread(
        target=asyncio.run,
        args=(
            simulate.run(
                f"ws://127.0.0.1:{gateway.port}/ocpp",
                cid,
                STATION_PASSWORD,
                version,
                interval=0.3,
                count=4,
                call_timeout=0.5,
            ),
        ),
    )
    try:
        runner.start()
        probe.wait_for(f"ocpp/cp/{cid}/BootNotification", timeout_s=10)
        for i, (action, payload, check) in enumerate(COMMANDS[version]):
            command = {"MessageTypeId": 2, "UniqueId": f"op{i}", "Action": action}
            probe.publish(f"ocpp/cs/{cid}/{action}", {**command, "Payload": payload})
            answer = probe.wait_for(
                f"ocpp/cp/Reply/{cid}", lambda b, i=i: b["UniqueId"] == f"op{i}"
            )
            assert check(answer["Payload"]), answer
        runner.join(20)
        assert not runner.is_alive(), "the simulator stalled"
        heartbeats = probe.snapshot(f"ocpp/cp/{cid}/Heartbeat")
        meters = probe.snapshot(f"ocpp/cp/{cid}/MeterValues")
        # every round went out although no Heartbeat was ever answered
        assert len(heartbeats) == 4 and len(meters) == 4
        assert probe.snapshot(f"ocpp/cp/{cid}/StatusNotification")
    finally:
        runner.join(5)
        gateway.stop()
