"""A station's invalid answer to a backend CALL, and log mode's marker, through a real gateway."""

import pytest

from tests.e2e.conftest import backend_topics, connected

pytestmark = pytest.mark.e2e

# (version, the station's invalid answer to Reset, the path and rule the backend is told)
INVALID_RESET_ANSWERS = [
    ("1.6", {"status": "OK"}, "status", "enum"),
    ("2.0.1", {"status": "accepted"}, "status", "enum"),
]


@pytest.mark.parametrize(("version", "answer", "path", "rule"), INVALID_RESET_ANSWERS)
async def test_invalid_answer_to_a_backend_call_is_answered_on_the_error_topic(
    shared_gateway, pool, mqtt_probe, raw_station, version, answer, path, rule
):
    cid = pool.take()
    probe = mqtt_probe(backend_topics(cid))
    station = await raw_station(shared_gateway, cid, version)
    await connected(probe, cid)
    reset = {"type": "Soft"} if version == "1.6" else {"type": "Immediate"}
    probe.publish(
        f"ocpp/cs/{cid}",
        {"MessageTypeId": 2, "UniqueId": "inv-1", "Action": "Reset", "Payload": reset},
    )
    assert (await station.next())[:2] == [2, "inv-1"]
    await station.send([3, "inv-1", answer])
    # well before the 3 s call timeout: the backend learns the answer was invalid
    error = await probe.arrival(f"ocpp/cp/Error/{cid}", timeout_s=2)
    assert (error["UniqueId"], error["Action"]) == ("inv-1", "Reset")
    assert error["ErrorCode"] == "PropertyConstraintViolation"
    details = error["ErrorDetails"]
    assert (details["origin"], details["reason"]) == ("gateway", "invalid")
    assert (details["path"], details["rule"]) == (path, rule)
    # once, on the error topic: the backend's own CALL is answered, not noticed twice
    assert probe.snapshot(f"ocpp/gw/Notice/{cid}") == []
    assert probe.snapshot(f"ocpp/cp/Reply/{cid}") == []  # never forwarded as a reply
