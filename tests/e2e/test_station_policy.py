"""A station's own validation policy (strict / lenient / log), set as an operator would, through a
real gateway and broker: lenient forwards firmware quirks unchanged and marked, and a change
reaches the live connection without a reconnect."""

import asyncio
import json

import pytest

from stations.housekeeping import POLL_S
from tests.e2e.conftest import backend_topics, connected, manage

pytestmark = pytest.mark.e2e

_SET_POLICY = """
from stations.models import Station
station = Station.objects.get(cid={cid!r})
station.validation_policy = {policy!r}
station.save()  # as admin, portal and API do: the signal marks the change for the gateway
"""
# polls in the one shell process: each Django start costs seconds on a loaded CI machine, so
# polling by starting a shell per try left a 10 s deadline two or three looks
_COUNTS = """
import json, time
from stations.models import Station
deadline = time.monotonic() + {wait_s}
while True:
    counts = list(Station.objects.filter(cid={cid!r}).values_list("frames_lenient", flat=True))
    if counts == [{want}] or time.monotonic() > deadline:
        break
    time.sleep(0.2)
print(json.dumps(counts))
"""

# 1.6 StatusNotification whose timestamp has a space for T and no offset (a documented quirk)
QUIRKY = {
    "connectorId": 1,
    "errorCode": "NoError",
    "status": "Available",
    "timestamp": "2026-12-06 10:00:00",
}


def set_policy(gw, cid: str, policy: str) -> None:
    manage(gw.db_env, "shell", "-c", _SET_POLICY.format(cid=cid, policy=policy))


def lenient_count(gw, cid: str, want: int, wait_s: float) -> int:
    """The station's frames_lenient once it equals `want`, or as it stands after `wait_s`."""
    out = manage(gw.db_env, "shell", "-c", _COUNTS.format(cid=cid, want=want, wait_s=wait_s))
    return json.loads(out.strip().splitlines()[-1])[0]


async def test_lenient_station_forwards_quirks_marked_and_takes_a_policy_change_live(
    shared_gateway, pool, mqtt_probe, raw_station
):
    cid = pool.take()
    set_policy(shared_gateway, cid, "lenient")
    probe = mqtt_probe(backend_topics(cid))
    station = await raw_station(shared_gateway, cid)
    await connected(probe, cid)

    await station.send([2, "q-1", "StatusNotification", QUIRKY])
    envelope = await probe.arrival(f"ocpp/cp/{cid}/StatusNotification")
    assert envelope["Payload"] == QUIRKY  # forwarded unchanged: the backend sees what was sent
    assert envelope["Validation"] == {"path": "timestamp", "rule": "format", "policy": "lenient"}
    # the backend answers it, as it would any CALL
    probe.publish(
        f"ocpp/cs/{cid}/Reply/StatusNotification",
        {"MessageTypeId": 3, "UniqueId": "q-1", "Payload": {}},
    )
    assert await station.next() == [3, "q-1", {}]

    # a structural error is still refused under lenient
    await station.send([2, "q-2", "StatusNotification", {"connectorId": 1}])
    answer = await station.next()
    assert answer[:3] == [4, "q-2", "OccurenceConstraintViolation"]

    # the operator makes the station strict: the same quirk is now refused, no reconnect
    set_policy(shared_gateway, cid, "strict")
    await asyncio.sleep(2 * POLL_S + 0.5)  # the gateway's configuration poll takes it up
    await station.send([2, "q-3", "StatusNotification", QUIRKY])
    assert (await station.next())[:3] == [4, "q-3", "PropertyConstraintViolation"]

    # the portal's count of frames accepted only by leniency (written by the batched writer)
    count = await asyncio.to_thread(lenient_count, shared_gateway, cid, 1, 10.0)
    assert count == 1, f"frames_lenient is {count}, want 1"
