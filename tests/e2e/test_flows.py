"""Charge points of the `ocpp` package (1.6, 2.0.1, 2.1) through a real gateway and broker."""

import asyncio
import datetime

import pytest
from ocpp.routing import on
from ocpp.v16 import ChargePoint as CP16
from ocpp.v16 import call as call16
from ocpp.v16 import call_result as result16
from ocpp.v21 import ChargePoint as CP21
from ocpp.v21 import call as call21
from ocpp.v21 import call_result as result21
from ocpp.v201 import ChargePoint as CP201
from ocpp.v201 import call as call201
from ocpp.v201 import call_result as result201
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from tests.conftest import PASSWORD, basic
from tests.e2e.conftest import backend_topics, connected, open_socket

pytestmark = pytest.mark.e2e

NOW = "2025-01-01T00:00:00Z"

# what a backend answers to each station CALL, per version (valid against the official schemas)
ANSWERS = {
    "1.6": {
        "BootNotification": {"status": "Accepted", "currentTime": NOW, "interval": 300},
        "Heartbeat": {"currentTime": NOW},
        "StatusNotification": {},
        "Authorize": {"idTagInfo": {"status": "Accepted"}},
        "StartTransaction": {"transactionId": 77, "idTagInfo": {"status": "Accepted"}},
        "MeterValues": {},
        "StopTransaction": {"idTagInfo": {"status": "Accepted"}},
    },
    "2.0.1": {
        "BootNotification": {"status": "Accepted", "currentTime": NOW, "interval": 300},
        "Heartbeat": {"currentTime": NOW},
        "StatusNotification": {},
        "TransactionEvent": {},
    },
}
ANSWERS["2.1"] = ANSWERS["2.0.1"]


def responder(version: str, replies: list | None = None):
    """A backend: answers every CALL on the seed's reply topic ocpp/cs/<cid>/Reply/<Action>."""

    def respond(topic, body):
        parts = topic.split("/")
        if parts[:2] != ["ocpp", "cp"] or body.get("MessageTypeId") != 2:
            return None
        action = body["Action"]
        if replies is not None:
            replies.append(action)
        return (
            f"ocpp/cs/{parts[2]}/Reply/{action}",
            {
                "MessageTypeId": 3,
                "UniqueId": body["UniqueId"],
                "Action": action,
                "Payload": ANSWERS[version][action],
            },
        )

    return respond


class Station16(CP16):
    resets: list

    @on("Reset")
    def on_reset(self, type, **kwargs):
        self.resets = [*getattr(self, "resets", []), type]
        return result16.Reset(status="Accepted")


class Station201(CP201):
    @on("Reset")
    def on_reset(self, type, **kwargs):
        return result201.Reset(status="Accepted")


class Station21(CP21):
    @on("Reset")
    def on_reset(self, type, **kwargs):
        return result21.Reset(status="Scheduled")


async def test_boot_notification_arrives_as_the_seed_envelope_and_the_reply_completes_it(
    shared_gateway, pool, mqtt_probe, ocpp_station
):
    cid = pool.take()
    probe = mqtt_probe(backend_topics(cid), respond=responder("1.6"))
    cp = await ocpp_station(shared_gateway, cid, Station16)
    await connected(probe, cid)
    answer = await cp.call(
        call16.BootNotification(charge_point_model="M1", charge_point_vendor="V1")
    )
    assert answer.status == "Accepted" and answer.interval == 300
    [(_topic, envelope)] = probe.snapshot(f"ocpp/cp/{cid}/BootNotification")
    assert envelope == {
        "MessageTypeId": 2,
        "UniqueId": envelope["UniqueId"],
        "Action": "BootNotification",
        "Payload": {"chargePointModel": "M1", "chargePointVendor": "V1"},
    }
    assert list(envelope) == ["MessageTypeId", "UniqueId", "Action", "Payload"]


@pytest.mark.parametrize(
    ("version", "cls", "reset", "status"),
    [
        ("1.6", Station16, {"type": "Soft"}, "Accepted"),
        ("2.0.1", Station201, {"type": "Immediate"}, "Accepted"),
        ("2.1", Station21, {"type": "OnIdle"}, "Scheduled"),
    ],
)
async def test_backend_reset_reaches_the_station_and_its_answer_the_reply_topic(
    shared_gateway, pool, mqtt_probe, ocpp_station, version, cls, reset, status
):
    cid = pool.take()
    probe = mqtt_probe(backend_topics(cid))
    await ocpp_station(shared_gateway, cid, cls, version)
    await connected(probe, cid)
    probe.publish(
        f"ocpp/cs/{cid}/Reset",
        {"MessageTypeId": 2, "UniqueId": "reset-1", "Action": "Reset", "Payload": reset},
    )
    reply = await probe.arrival(f"ocpp/cp/Reply/{cid}")
    assert reply == {
        "MessageTypeId": 3,
        "UniqueId": "reset-1",
        "Action": "Reset",
        "Payload": {"status": status},
    }


async def test_charging_session_messages_flow_on_16(shared_gateway, pool, mqtt_probe, ocpp_station):
    cid = pool.take()
    replies: list[str] = []
    probe = mqtt_probe(backend_topics(cid), respond=responder("1.6", replies))
    cp = await ocpp_station(shared_gateway, cid, Station16)
    await connected(probe, cid)
    boot = await cp.call(call16.BootNotification(charge_point_model="M", charge_point_vendor="V"))
    assert boot.status == "Accepted"
    assert (await cp.call(call16.Heartbeat())).current_time == NOW
    await cp.call(
        call16.StatusNotification(connector_id=1, error_code="NoError", status="Preparing")
    )
    assert (await cp.call(call16.Authorize(id_tag="TAG1"))).id_tag_info["status"] == "Accepted"
    started = await cp.call(
        call16.StartTransaction(connector_id=1, id_tag="TAG1", meter_start=100, timestamp=NOW)
    )
    assert started.transaction_id == 77
    sample = {"timestamp": NOW, "sampledValue": [{"value": "1234", "measurand": "Energy.Active.Import.Register"}]}  # fmt: skip
    await cp.call(call16.MeterValues(connector_id=1, transaction_id=77, meter_value=[sample]))
    stopped = await cp.call(
        call16.StopTransaction(meter_stop=1334, timestamp=NOW, transaction_id=77, id_tag="TAG1")
    )
    assert stopped.id_tag_info["status"] == "Accepted"
    assert replies == list(ANSWERS["1.6"])  # every CALL reached the backend, in order
    meter = probe.snapshot(f"ocpp/cp/{cid}/MeterValues")[0][1]
    assert meter["Payload"]["meterValue"] == [sample]


async def test_boot_and_transaction_events_flow_on_201(
    shared_gateway, pool, mqtt_probe, ocpp_station
):
    cid = pool.take()
    replies: list[str] = []
    probe = mqtt_probe(backend_topics(cid), respond=responder("2.0.1", replies))
    cp = await ocpp_station(shared_gateway, cid, Station201, "2.0.1")
    await connected(probe, cid)
    boot = await cp.call(
        call201.BootNotification(
            charging_station={"model": "M", "vendor_name": "V"}, reason="PowerUp"
        )
    )
    assert boot.status == "Accepted"
    await cp.call(call201.Heartbeat())
    await cp.call(
        call201.StatusNotification(
            timestamp=NOW, connector_status="Occupied", evse_id=1, connector_id=1
        )
    )
    for seq, (event, trigger) in enumerate(
        [("Started", "CablePluggedIn"), ("Ended", "EVDeparted")]
    ):
        await cp.call(
            call201.TransactionEvent(
                event_type=event,
                timestamp=NOW,
                trigger_reason=trigger,
                seq_no=seq,
                transaction_info={"transaction_id": "tx-1"},
            )
        )
    assert (
        replies
        == ["BootNotification", "Heartbeat", "StatusNotification"] + ["TransactionEvent"] * 2
    )
    events = [b["Payload"]["eventType"] for _, b in probe.snapshot(f"ocpp/cp/{cid}/TransactionEvent")]  # fmt: skip
    assert events == ["Started", "Ended"]


async def test_boot_on_21(shared_gateway, pool, mqtt_probe, ocpp_station):
    cid = pool.take()
    probe = mqtt_probe(backend_topics(cid), respond=responder("2.1"))
    cp = await ocpp_station(shared_gateway, cid, Station21, "2.1")
    presence = await connected(probe, cid)
    assert presence["version"] == "2.1"
    boot = await cp.call(
        call21.BootNotification(
            charging_station={"model": "M", "vendor_name": "V"}, reason="PowerUp"
        )
    )
    assert boot.status == "Accepted"


@pytest.mark.parametrize("wrong", ["password", "cid", "username"])
async def test_refused_station_gets_http_403(shared_gateway, pool, wrong):
    cid = pool.take()
    path_cid, user, password = cid, cid, PASSWORD
    if wrong == "password":
        password = "wrong-password-0000000"
    elif wrong == "cid":
        path_cid = user = cid + "nobody"
    else:
        user = pool.take()
    with pytest.raises(InvalidStatus) as refused:
        async with connect(
            shared_gateway.url(path_cid),
            subprotocols=["ocpp1.6"],
            additional_headers={"Authorization": basic(user, password)},
            open_timeout=10,
        ):
            pass
    assert refused.value.response.status_code == 403


async def test_station_offering_no_enabled_subprotocol_is_closed_1002(shared_gateway, pool):
    cid = pool.take()
    async with connect(
        shared_gateway.url(cid),
        subprotocols=["ocpp1.5"],
        additional_headers={"Authorization": basic(cid, PASSWORD)},
        open_timeout=10,
    ) as ws:
        assert ws.subprotocol is None
        await asyncio.wait_for(ws.wait_closed(), 5)
        assert ws.close_code == 1002


async def test_second_stations_traffic_never_reaches_the_first(
    shared_gateway, pool, mqtt_probe, raw_station
):
    first, second = pool.take(), pool.take()
    probe = mqtt_probe(backend_topics(first) + backend_topics(second))
    a = await raw_station(shared_gateway, first)
    b = await raw_station(shared_gateway, second)
    await connected(probe, first)
    await connected(probe, second)
    for n in range(3):
        probe.publish(
            f"ocpp/cs/{second}/Reset",
            {
                "MessageTypeId": 2,
                "UniqueId": f"r{n}",
                "Action": "Reset",
                "Payload": {"type": "Soft"},
            },
        )
        assert await b.next() == [2, f"r{n}", "Reset", {"type": "Soft"}]
        await b.send([3, f"r{n}", {"status": "Accepted"}])
    await b.send([2, "hb", "Heartbeat", {}])
    await probe.arrival(f"ocpp/cp/{second}/Heartbeat")
    # the first station got nothing: its next frame is the answer to its own marker CALL
    await a.send([2, "marker", "Heartbeat", []])
    assert (await a.next())[:2] == [4, "marker"]
    assert probe.snapshot(f"ocpp/cp/{first}/Heartbeat") == []
    replies = [body["UniqueId"] for _, body in probe.snapshot(f"ocpp/cp/Reply/{second}")]
    assert replies == ["r0", "r1", "r2"]
    assert probe.snapshot(f"ocpp/cp/Reply/{first}") == []


async def test_presence_is_retained_connected_then_disconnected(shared_gateway, pool, mqtt_probe):
    cid = pool.take()
    probe = mqtt_probe([f"ocpp/presence/{cid}"])
    ws = await open_socket(shared_gateway, cid)
    up = await connected(probe, cid)
    await ws.close()
    down = await probe.arrival(f"ocpp/presence/{cid}", lambda b: b["status"] == "disconnected")
    assert up["connection"] == down["connection"]
    assert (up["node"], up["version"]) == (shared_gateway.node, "1.6")
    assert datetime.datetime.fromisoformat(down["at"]) >= datetime.datetime.fromisoformat(up["at"])
    # retained: a backend that subscribes later still learns the last state
    late = mqtt_probe([f"ocpp/presence/{cid}"])
    retained = await late.arrival(f"ocpp/presence/{cid}")
    assert retained["status"] == "disconnected"


@pytest.mark.parametrize("path", ["/ocpp", "/ocpp/", "/ocpp/a%2Fb"])
async def test_path_without_a_valid_cid_is_refused_403(shared_gateway, path):
    with pytest.raises(InvalidStatus) as refused:
        async with connect(
            f"ws://127.0.0.1:{shared_gateway.port}{path}", subprotocols=["ocpp1.6"], open_timeout=10
        ):
            pass
    assert refused.value.response.status_code == 403
