"""A station's conversation through the real Mosquitto: upstream, backend CALLs, answers, replacement.

Stations are driven in process (tests/asgi_station.py); tests/e2e/ covers what only Daphne does.
"""

import asyncio
import json

import pytest

from stations import gateway as gateway_module
from tests.asgi_station import MARKER, connect, probe_for
from tests.conftest import until

pytestmark = pytest.mark.django_db(transaction=True)


# --- through the broker ---------------------------------------------------------------------------
async def test_boot_notification_round_trip_through_the_broker(
    gateway, station_factory, mqtt_probe
):
    station = await station_factory()
    cid = station.cid
    probe = await probe_for(mqtt_probe, cid)
    ws = await connect(cid)
    connected = await probe.arrival(f"ocpp/presence/{cid}")
    assert connected["status"] == "connected" and connected["version"] == "1.6"
    boot = {"chargePointVendor": "V", "chargePointModel": "M"}
    await ws.send_to(text_data=json.dumps([2, "42", "BootNotification", boot]))
    envelope = await probe.arrival(f"ocpp/cp/{cid}/BootNotification")
    assert envelope == {
        "MessageTypeId": 2,
        "UniqueId": "42",
        "Action": "BootNotification",
        "Payload": boot,
    }
    reply = {"status": "Accepted", "currentTime": "2025-01-01T00:00:00Z", "interval": 300}
    probe.publish(
        f"ocpp/cs/{cid}/Reply/BootNotification",
        {"MessageTypeId": 3, "UniqueId": "42", "Action": "BootNotification", "Payload": reply},
    )
    assert await ws.answer(timeout_s=5) == [3, "42", reply]
    await ws.disconnect()
    gone = await probe.arrival(
        f"ocpp/presence/{cid}", lambda body: body["status"] == "disconnected"
    )
    assert gone["connection"] == connected["connection"]


async def test_backend_call_reaches_the_station_and_its_answer_the_reply_topic(
    gateway, station_factory, mqtt_probe
):
    station = await station_factory()
    cid = station.cid
    probe = await probe_for(mqtt_probe, cid)
    ws = await connect(cid)
    await probe.arrival(f"ocpp/presence/{cid}")
    probe.publish(
        f"ocpp/cs/{cid}",
        {"MessageTypeId": 2, "UniqueId": "b7", "Action": "Reset", "Payload": {"type": "Soft"}},
    )
    assert await ws.answer(timeout_s=5) == [2, "b7", "Reset", {"type": "Soft"}]
    await ws.send_to(text_data='[3, "b7", {"status": "Accepted"}]')
    reply = await probe.arrival(f"ocpp/cp/Reply/{cid}")
    assert reply == {
        "MessageTypeId": 3,
        "UniqueId": "b7",
        "Action": "Reset",
        "Payload": {"status": "Accepted"},
    }
    await ws.disconnect()


async def test_invalid_backend_call_is_answered_on_the_error_topic(
    gateway, station_factory, mqtt_probe
):
    station = await station_factory()
    cid = station.cid
    probe = await probe_for(mqtt_probe, cid)
    ws = await connect(cid)
    await probe.arrival(f"ocpp/presence/{cid}")
    probe.publish(
        f"ocpp/cs/{cid}/x",
        {"MessageTypeId": 2, "UniqueId": "b8", "Action": "Reset", "Payload": {"type": "Sideways"}},
    )
    error = await probe.arrival(f"ocpp/cp/Error/{cid}")
    assert error["UniqueId"] == "b8" and error["Action"] == "Reset"
    assert error["ErrorCode"] == "PropertyConstraintViolation"
    details = error["ErrorDetails"]
    assert (details["origin"], details["reason"], details["path"]) == ("gateway", "invalid", "type")
    await ws.send_to(text_data=MARKER)
    assert (await ws.answer())[:2] == [4, "marker"]  # the invalid CALL was never sent
    await ws.disconnect()


async def test_unreadable_backend_message_becomes_a_notice_not_an_error(
    gateway, station_factory, mqtt_probe
):
    station = await station_factory()
    cid = station.cid
    probe = await probe_for(mqtt_probe, cid)
    ws = await connect(cid)
    await probe.arrival(f"ocpp/presence/{cid}")
    probe.publish(f"ocpp/cs/{cid}", b"{not json")
    notice = await probe.arrival(f"ocpp/gw/Notice/{cid}")
    assert notice["UniqueId"] == "-1" and notice["ErrorCode"] == "FormatViolation"
    assert notice["ErrorDetails"]["message"] == "{not json"
    assert notice["ErrorDetails"]["origin"] == "gateway"
    probe.publish(f"ocpp/cs/{cid}", {"MessageTypeId": 3, "UniqueId": "nobody", "Payload": {}})
    unmatched = await probe.arrival(
        f"ocpp/gw/Notice/{cid}", lambda body: body["UniqueId"] == "nobody"
    )
    assert unmatched["ErrorDetails"]["reason"] == "unmatched"
    assert probe.snapshot(f"ocpp/cp/Error/{cid}") == []
    await ws.send_to(text_data=MARKER)
    assert (await ws.answer())[:2] == [4, "marker"]
    await ws.disconnect()


async def test_newest_connection_of_a_cid_replaces_the_older_one(
    gateway, station_factory, mqtt_probe
):
    station = await station_factory()
    cid = station.cid
    probe = await probe_for(mqtt_probe, cid)
    old = await connect(cid)
    first = await probe.arrival(f"ocpp/presence/{cid}")
    new = await connect(cid.lower())
    assert await old.close_code(timeout_s=1) == 1000
    second = await probe.arrival(
        f"ocpp/presence/{cid}", lambda body: body["connection"] != first["connection"]
    )
    assert second["status"] == "connected"
    await old.disconnect()
    await asyncio.sleep(0.3)
    # the replaced socket never marks the live station offline (a presence buffered before the
    # gateway's broker session was up is published again on connect: same connection, no harm)
    seen = [(b["connection"], b["status"]) for _, b in probe.snapshot(f"ocpp/presence/{cid}")]
    assert list(dict.fromkeys(seen)) == [
        (first["connection"], "connected"),
        (second["connection"], "connected"),
    ]
    await new.disconnect()


async def test_a_late_disconnect_of_another_connection_is_contradicted(
    gateway, station_factory, mqtt_probe
):
    """Another node's connection of this station, which lost the race, says "disconnected" after
    this one said "connected": the retained presence must end "connected" (this one)."""
    station = await station_factory()
    cid = station.cid
    probe = await probe_for(mqtt_probe, cid)
    ws = await connect(cid)
    live = await probe.arrival(f"ocpp/presence/{cid}")
    late = {**live, "status": "disconnected", "connection": "0123456789abcdef", "node": "other",
            "reason": "closed (1006)"}  # fmt: skip
    probe.publish(f"ocpp/presence/{cid}", late, retain=True)

    def after_late():
        seen = [b for _, b in probe.snapshot(f"ocpp/presence/{cid}")]
        return seen[seen.index(late) + 1 :] if late in seen else []

    await until(after_late, 5, "a presence after the late disconnect")
    assert after_late()[-1]["connection"] == live["connection"]
    assert after_late()[-1]["status"] == "connected"
    await ws.disconnect()
    gone = await probe.arrival(f"ocpp/presence/{cid}", lambda b: b["status"] == "disconnected"
                               and b["connection"] == live["connection"])  # fmt: skip
    assert gone["node"] == live["node"]


async def test_a_new_event_loop_gets_a_new_gateway(gateway, station_factory):
    # every test runs on its own loop: the gateway of an earlier loop must not be reused
    station = await station_factory()
    ws = await connect(station.cid)
    gw = gateway_module._gateway
    assert gw is not None and gw.loop is asyncio.get_running_loop()
    assert gateway_module.get_gateway() is gw
    await ws.disconnect()
