"""OcppConsumer on the real ASGI application, with the gateway's bridge on the real Mosquitto.

Stations are driven in process (tests/asgi_station.py); tests/e2e/ covers what only Daphne does.
"""

import asyncio
import json
import uuid

import pytest
from channels.db import database_sync_to_async
from prometheus_client import REGISTRY

from stations import gateway as gateway_module
from stations.models import MessageLog, Station
from tests.asgi_station import MARKER, ChargePoint, connect, probe_for
from tests.conftest import PASSWORD, basic, unique_cid

pytestmark = pytest.mark.django_db(transaction=True)

# fails its schema, so the gateway answers it at once with a CALLERROR
RPC = {"1.6": "FormationViolation", "2.0.1": "RpcFrameworkError", "2.1": "RpcFrameworkError"}


# --- subprotocols ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("enabled", "offered", "chosen"),
    [
        (["ocpp1.6", "ocpp2.0.1", "ocpp2.1"], ["ocpp2.0.1", "ocpp1.6"], "ocpp2.0.1"),
        (["ocpp1.6", "ocpp2.0.1", "ocpp2.1"], ["ocpp2.1", "ocpp2.0.1"], "ocpp2.1"),
        (["ocpp1.6", "ocpp2.0.1", "ocpp2.1"], ["ocpp1.5", "ocpp1.6"], "ocpp1.6"),
        (["ocpp1.6"], ["ocpp2.0.1", "ocpp1.6"], "ocpp1.6"),  # the station's order, among enabled
        (["ocpp2.1", "ocpp1.6"], ["ocpp1.6", "ocpp2.1"], "ocpp1.6"),
    ],
)
async def test_first_offered_enabled_subprotocol_is_echoed(
    gateway, settings, station_factory, enabled, offered, chosen
):
    settings.OCPPGW_SUBPROTOCOLS = enabled
    station = await station_factory()
    ws = ChargePoint(
        f"/ocpp/{station.cid}", auth=basic(station.cid, PASSWORD), subprotocols=offered
    )
    assert await ws.connect() == (True, chosen)
    await ws.disconnect()


@pytest.mark.parametrize(
    ("enabled", "offered"),
    [
        (["ocpp1.6", "ocpp2.0.1", "ocpp2.1"], ["ocpp1.5"]),
        (["ocpp1.6"], ["ocpp2.0.1", "ocpp2.1"]),
        (["ocpp1.6", "ocpp2.0.1", "ocpp2.1"], []),  # none offered, no default configured
    ],
)
async def test_no_acceptable_subprotocol_is_accepted_without_one_then_closed_1002(
    gateway, settings, station_factory, enabled, offered
):
    settings.OCPPGW_SUBPROTOCOLS = enabled
    station = await station_factory()
    ws = ChargePoint(
        f"/ocpp/{station.cid}", auth=basic(station.cid, PASSWORD), subprotocols=offered
    )
    before = refusals("no_subprotocol")
    assert await ws.connect() == (True, None)
    assert await ws.close_code() == 1002
    assert refusals("no_subprotocol") == before + 1
    await ws.disconnect()


@pytest.mark.parametrize("default", ["ocpp2.0.1", "ocpp1.6"])
async def test_no_subprotocol_offered_is_served_as_the_default_version(
    gateway, settings, station_factory, mqtt_probe, default
):
    settings.OCPPGW_DEFAULT_SUBPROTOCOL = default
    station = await station_factory()
    probe = await probe_for(mqtt_probe, station.cid)
    ws = ChargePoint(f"/ocpp/{station.cid}", auth=basic(station.cid, PASSWORD), subprotocols=[])
    assert await ws.connect() == (True, None)  # nothing echoed
    presence = await probe.arrival(f"ocpp/presence/{station.cid}")
    assert presence["version"] == default.removeprefix("ocpp")
    # frame type 6 tells the versions apart: 2.0.1 answers it, 1.6 ignores it
    await ws.send_to(text_data='[6, "s1", "Heartbeat", {}]')
    if default == "ocpp2.0.1":
        assert (await ws.answer())[:3] == [4, "s1", "MessageTypeNotSupported"]
    else:
        await ws.send_to(text_data=MARKER)
        assert (await ws.answer())[:2] == [4, "marker"]
    await ws.disconnect()


# --- identity and authentication ------------------------------------------------------------------
@pytest.mark.parametrize(
    "path",
    [
        "/ocpp",
        "/ocpp/",
        "/ocpp/a%2Fb",  # %2F decodes to a separator: one segment only
        "/ocpp/a/b",
        "/ocpp/CP%3A1",
        "/ocpp/CP%201",
        "/ocpp/CP%25",
        "/ocpp/" + "A" * 49,
    ],
)
async def test_bad_identity_is_refused_before_accept(gateway, path):
    ws = ChargePoint(path, auth=basic("A" * 49, PASSWORD))
    before = refusals("bad_id")
    connected, _ = await ws.connect()
    assert not connected
    assert refusals("bad_id") == before + 1
    await ws.disconnect()


def refusals(label: str) -> float:
    return REGISTRY.get_sample_value("ocppgw_auth_refusals_total", {"reason": label}) or 0.0


@pytest.mark.parametrize(
    ("station_kwargs", "user", "password", "header", "label"),
    [
        ({}, None, "wrong:password-000000", None, "wrong_password"),
        ({}, "someone-else", PASSWORD, None, "username_mismatch"),  # username must be the cid
        ({}, None, None, "Bearer abcdef", "no_credentials"),  # not Basic
        ({}, None, None, "Basic !!!", "no_credentials"),  # malformed base64
        ({}, None, None, "", "no_credentials"),
        ({"enabled": False}, None, PASSWORD, None, "station_disabled"),
        ({"user_active": False}, None, PASSWORD, None, "user_inactive"),
    ],
)
async def test_refused_credentials_close_before_accept_counted_by_reason(
    gateway, station_factory, station_kwargs, user, password, header, label
):
    station = await station_factory(**station_kwargs)
    auth = header if header is not None else basic(user or station.cid, password)
    ws = ChargePoint(f"/ocpp/{station.cid}", auth=auth or None)
    before = refusals(label)
    connected, _ = await ws.connect(timeout=5)
    assert not connected
    assert refusals(label) == before + 1
    await ws.disconnect()


async def test_unknown_cid_is_refused(gateway):
    cid = unique_cid()
    ws = ChargePoint(f"/ocpp/{cid}", auth=basic(cid, PASSWORD))
    before = refusals("unknown_station")
    connected, _ = await ws.connect(timeout=5)
    assert not connected
    assert refusals("unknown_station") == before + 1
    await ws.disconnect()


async def test_refusal_reason_is_kept_for_the_portal_and_the_log(gateway, station_factory):
    station = await station_factory()
    ws = ChargePoint(f"/ocpp/{station.cid}", auth=basic(station.cid, "wrong-password-00000"))
    assert (await ws.connect(timeout=5))[0] is False
    await ws.disconnect()
    await gateway_module._gateway.writer.flush()
    refused = await database_sync_to_async(
        lambda: Station.objects.values_list("last_refused_reason", flat=True).get(id=station.id)
    )()
    assert refused == "wrong password"
    logged = await database_sync_to_async(
        lambda: list(MessageLog.objects.filter(cid=station.cid).values_list("outcome", "reason"))
    )()
    assert ("refused", "wrong password") in logged


async def test_password_with_colons_is_accepted(gateway, station_factory):
    station = await station_factory(password="a:b:c:d:e:f:g:h:i:j:k")
    ws = await connect(station.cid, password="a:b:c:d:e:f:g:h:i:j:k")
    await ws.disconnect()


async def test_cid_is_case_insensitive_and_topics_use_it_as_created(
    gateway, station_factory, mqtt_probe
):
    cid = f"CaseMix-{uuid.uuid4().hex[:8]}"
    await station_factory(cid)
    probe = await probe_for(mqtt_probe, cid)
    ws = await connect(cid, user=cid.upper(), path_cid=cid.lower())
    presence = await probe.arrival(f"ocpp/presence/{cid}")
    assert presence["cid"] == cid and presence["status"] == "connected"
    await ws.send_to(text_data='[2, "b1", "Heartbeat", {}]')
    envelope = await probe.arrival(f"ocpp/cp/{cid}/Heartbeat")
    assert envelope == {"MessageTypeId": 2, "UniqueId": "b1", "Action": "Heartbeat", "Payload": {}}
    await ws.disconnect()


# --- frames ---------------------------------------------------------------------------------------
async def test_binary_frame_closes_1003(gateway, station_factory):
    station = await station_factory()
    ws = await connect(station.cid)
    await ws.send_to(bytes_data=b'[2, "1", "Heartbeat", {}]')
    assert await ws.close_code() == 1003
    await ws.disconnect()


async def test_frame_over_the_limit_closes_1009(gateway, settings, station_factory):
    settings.OCPPGW_MAX_FRAME_BYTES = 1024
    station = await station_factory()
    ws = await connect(station.cid)
    # multi-byte characters: the limit is on bytes, not characters
    await ws.send_to(text_data='[2, "1", "DataTransfer", {"vendorId": "' + "é" * 600 + '"}]')
    assert await ws.close_code() == 1009
    await ws.disconnect()


def _rows(version):
    """(frame text, expected answer prefix or None for silence) of the §1 table of docs/contract.md."""
    rpc = RPC[version]
    unknown = None if version in ("1.6", "2.1") else [4, "t1", "MessageTypeNotSupported"]
    rows = [
        ("not json", [4, "-1", rpc]),
        ('{"a": 1}', [4, "-1", rpc]),
        ('[2, "t1"]', [4, "t1", rpc]),
        ("[2]", [4, "-1", rpc]),
        ('[2, 5, "Heartbeat", {}]', [4, "-1", rpc]),
        ('[2, "' + "x" * 37 + '", "Heartbeat", {}]', [4, "-1", rpc]),
        ('[7, "t1", {}]', unknown),
        ('[2, "t1", "Heartbeat"]', [4, "t1", rpc]),
        ('[2, "t1", "Heartbeat", {}, 1]', [4, "t1", rpc]),
        ('[3, "t1", {}, 1]', None),
        ('[3, "t1"]', None),
        ('[4, "t1", "GenericError"]', None),
        ('[4, "t1", "GenericError", "d", {}]', None),  # a CALLERROR is never answered
        ('[3, "t1", {}]', None),  # an unmatched CALLRESULT neither
    ]
    if version == "2.1":
        rows += [
            ('[6, "t1", "Heartbeat"]', None),  # malformed SEND: ignored, never a FrameError
            ('[6, "t1", "Heartbeat", {}]', None),  # SEND: one-way
            ('[5, "t1", "FormatViolation", "d", {}]', None),
        ]
    else:
        rows += [
            ('[6, "t1", "Heartbeat", {}]', unknown),
            ('[5, "t1", "FormatViolation", "d", {}]', unknown),
        ]
    return [(version, text, expected) for text, expected in rows]


@pytest.mark.parametrize(
    ("version", "text", "expected"), _rows("1.6") + _rows("2.0.1") + _rows("2.1")
)
async def test_malformed_frame_gets_the_exact_callerror_or_silence(
    gateway, station_factory, version, text, expected
):
    station = await station_factory()
    ws = await connect(station.cid, version=version)
    await ws.send_to(text_data=text)
    # a CALL that is answered at once, in order: whatever arrives before its answer was sent
    # for the bad frame, so silence needs no waiting
    await ws.send_to(text_data=MARKER)
    if expected is not None:
        answer = await ws.answer()
        assert answer[:3] == expected
        assert isinstance(answer[3], str) and 0 < len(answer[3]) < 255
        assert answer[4] == {}
        assert len(answer) == 5
    assert (await ws.answer())[:2] == [4, "marker"]  # and the socket is still open
    await ws.disconnect()


async def test_empty_text_frame_gets_the_rpc_error(gateway, station_factory):
    station = await station_factory()
    ws = await connect(station.cid, version="2.0.1")
    await ws.send_input({"type": "websocket.receive", "text": ""})
    assert (await ws.answer())[:3] == [4, "-1", "RpcFrameworkError"]
    await ws.disconnect()


@pytest.mark.parametrize(
    ("version", "code"),
    [
        ("1.6", "OccurenceConstraintViolation"),
        ("2.0.1", "OccurenceConstraintViolation"),
        ("2.1", "OccurrenceConstraintViolation"),
    ],
)
async def test_call_failing_its_schema_gets_the_versions_code(
    gateway, station_factory, version, code
):
    station = await station_factory()
    ws = await connect(station.cid, version=version)
    await ws.send_to(text_data='[2, "v1", "BootNotification", {}]')
    answer = await ws.answer()
    assert answer[:3] == [4, "v1", code]
    assert len(answer[3]) < 255
    await ws.disconnect()


async def test_call_with_wrong_type_gets_type_constraint_violation(gateway, station_factory):
    station = await station_factory()
    ws = await connect(station.cid)
    await ws.send_to(text_data='[2, "v2", "Heartbeat", []]')
    assert (await ws.answer())[:3] == [4, "v2", "TypeConstraintViolation"]
    await ws.send_to(text_data='[2, "v3", "Authorize", {"idTag": 5}]')
    assert (await ws.answer())[:3] == [4, "v3", "TypeConstraintViolation"]
    await ws.disconnect()


async def test_call_with_unknown_action_gets_not_implemented_when_rejecting(
    gateway, settings, station_factory
):
    settings.OCPPGW_UNKNOWN_ACTIONS = "reject"
    station = await station_factory()
    ws = await connect(station.cid)
    await ws.send_to(text_data='[2, "u1", "VendorThing", {}]')
    assert (await ws.answer())[:3] == [4, "u1", "NotImplemented"]
    await ws.disconnect()


async def test_call_with_unknown_action_is_forwarded_by_default(
    gateway, station_factory, mqtt_probe
):
    station = await station_factory()
    probe = await probe_for(mqtt_probe, station.cid)
    ws = await connect(station.cid)
    await ws.send_to(text_data='[2, "u1", "VendorThing", {"any": ["thing"]}]')
    envelope = await probe.arrival(f"ocpp/cp/{station.cid}/VendorThing")
    assert envelope["Payload"] == {"any": ["thing"]}
    await ws.send_to(text_data=MARKER)
    assert (await ws.answer())[:2] == [4, "marker"]  # nothing was sent before
    await ws.disconnect()


async def test_rate_limit_answers_generic_error(gateway, settings, station_factory):
    settings.OCPPGW_RATE_PER_S = 0.001
    settings.OCPPGW_RATE_BURST = 1
    station = await station_factory()
    ws = await connect(station.cid)
    await ws.send_to(text_data='[2, "r1", "Heartbeat", {}]')
    await ws.send_to(text_data='[2, "r2", "Heartbeat", {}]')
    answer = await ws.answer()
    assert answer[:4] == [4, "r2", "GenericError", "rate limit"]
    await ws.disconnect()


async def test_rejected_and_ignored_frames_are_logged_with_their_reason(gateway, station_factory):
    station = await station_factory()
    ws = await connect(station.cid)
    await ws.send_to(text_data="not json")
    await ws.answer()
    await ws.send_to(text_data='[9, "i1", {}]')
    await ws.send_to(text_data=MARKER)
    assert (await ws.answer())[:2] == [4, "marker"]
    await gateway_module._gateway.writer.flush()
    rows = await database_sync_to_async(
        lambda: list(
            MessageLog.objects.filter(cid=station.cid, direction="in").values_list(
                "outcome", "reason", "payload"
            )
        )
    )()
    assert ("rejected", "frame is not valid JSON", "not json") in rows
    assert ("ignored", "unknown MessageTypeId 9", '[9, "i1", {}]') in rows
    await ws.disconnect()


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


async def test_a_new_event_loop_gets_a_new_gateway(gateway, station_factory):
    # every test runs on its own loop: the gateway of an earlier loop must not be reused
    station = await station_factory()
    ws = await connect(station.cid)
    gw = gateway_module._gateway
    assert gw is not None and gw.loop is asyncio.get_running_loop()
    assert gateway_module.get_gateway() is gw
    await ws.disconnect()
