"""Frames from a station in process: the OCPP-J answers to malformed, invalid and flooding input.

Stations are driven in process (tests/asgi_station.py); tests/e2e/ covers what only Daphne does.
"""

import pytest
from channels.db import database_sync_to_async
from prometheus_client import REGISTRY

from stations import gateway as gateway_module
from stations.models import MessageLog
from tests.asgi_station import MARKER, RPC, connect, probe_for
from tests.conftest import until

pytestmark = pytest.mark.django_db(transaction=True)


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


async def test_an_abusive_station_is_closed_1008_and_its_later_frames_counted(
    gateway, settings, station_factory
):
    settings.OCPPGW_RATE_PER_S = 0.001
    settings.OCPPGW_RATE_BURST = 1
    station = await station_factory()
    ws = await connect(station.cid)
    before = REGISTRY.get_sample_value("ocppgw_frames_after_abuse_total") or 0.0
    for n in range(3):  # one allowed, then refused past a burst's worth: abuse
        await ws.send_to(text_data=f'[2, "a{n}", "Heartbeat", {{}}]')
    answers = [await ws.receive_output(2) for _ in range(3)]
    assert answers[-1] == {"type": "websocket.close", "code": 1008}
    for n in range(4):  # what it sends before its socket is gone: not taken, but counted
        await ws.send_to(text_data=f'[2, "late{n}", "Heartbeat", {{}}]')
    await ws.send_to(text_data='[2, "late-last", "Heartbeat", {}]')
    await until(
        lambda: REGISTRY.get_sample_value("ocppgw_frames_after_abuse_total") == before + 5,
        2,
        "the late frames to be counted",
    )
    assert await ws.receive_nothing(0.2)  # and none of them answered
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
