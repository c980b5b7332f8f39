"""Protocol rigor through a real gateway: bad frames, timeouts, queueing, limits, validation modes."""

import asyncio
import time

import pytest
import websockets

from tests.e2e.conftest import (
    backend_topics,
    connected,
    elapsed,
    open_socket,
    start_gateways,
)

pytestmark = pytest.mark.e2e

RPC = {"1.6": "FormationViolation", "2.0.1": "RpcFrameworkError", "2.1": "RpcFrameworkError"}
# fails its schema, so the gateway answers it at once: whatever arrives before its answer was
# sent for the frames before it, so silence needs no waiting
MARKER = '[2, "marker", "Heartbeat", []]'


def table(version: str) -> list[tuple[str, list | None]]:
    """The contract's §1 bad-frame table: (frame, expected answer prefix or None for silence)."""
    rpc = RPC[version]
    unknown = [4, "u1", "MessageTypeNotSupported"] if version == "2.0.1" else None
    rows = [
        ("not json", [4, "-1", rpc]),
        ("[1, 2, 3", [4, "-1", rpc]),
        ('{"MessageTypeId": 2}', [4, "-1", rpc]),
        ("[]", [4, "-1", rpc]),
        ('[2, "u1"]', [4, "u1", rpc]),
        ('[2, 42, "Heartbeat", {}]', [4, "-1", rpc]),
        ('[2, "' + "x" * 37 + '", "Heartbeat", {}]', [4, "-1", rpc]),
        ('[2, "u1", "Heartbeat"]', [4, "u1", rpc]),
        ('[2, "u1", "Heartbeat", {}, {}]', [4, "u1", rpc]),
        ('[8, "u1", "Heartbeat", {}]', unknown),
        ('[3, "u1", {}, {}]', None),
        ('[3, "u1"]', None),
        ('[4, "u1", "GenericError"]', None),
        ('[4, "u1", "GenericError", "nobody asked", {}]', None),
        ('[4, "u1", 5, "bad code", {}]', None),
    ]
    if version == "2.1":
        rows += [
            ('[6, "u1", "Heartbeat", {}]', None),
            ('[6, "u1", "Heartbeat"]', None),
            ('[5, "u1", "FormatViolation", "x", {}]', None),
        ]
    else:
        rows += [
            ('[6, "u1", "Heartbeat", {}]', unknown),
            ('[5, "u1", "FormatViolation", "x", {}]', unknown),
        ]
    return rows


@pytest.mark.parametrize("version", ["1.6", "2.0.1", "2.1"])
async def test_each_malformed_frame_gets_the_exact_callerror_or_silence(
    shared_gateway, pool, raw_station, version
):
    station = await raw_station(shared_gateway, pool.take(), version)
    for text, expected in table(version):
        await station.send(text)
        await station.send(MARKER)
        if expected is not None:
            answer = await station.next()
            assert answer[:3] == expected, text
            assert len(answer) == 5 and answer[4] == {} and 0 < len(answer[3]) < 255, text
        marker = await station.next()
        assert marker[:3] == [4, "marker", "TypeConstraintViolation"], (text, marker)


async def test_backend_command_to_an_offline_cid_gets_an_offline_error(
    shared_gateway, pool, mqtt_probe
):
    cid = pool.take()  # never connected anywhere
    probe = mqtt_probe(backend_topics(cid))
    probe.publish(
        f"ocpp/cs/{cid}/Reset",
        {"MessageTypeId": 2, "UniqueId": "off-1", "Action": "Reset", "Payload": {"type": "Soft"}},
    )
    error = await probe.arrival(f"ocpp/cp/Error/{cid}", timeout_s=5)
    details = error.pop("ErrorDetails")
    assert error == {
        "MessageTypeId": 4,
        "UniqueId": "off-1",
        "Action": "Reset",
        "ErrorCode": "GenericError",
        "ErrorDescription": error["ErrorDescription"],
    }
    assert (details["origin"], details["reason"]) == ("gateway", "offline")
    assert details["node"] and details["at"]


async def test_station_that_never_answers_gets_a_timeout_envelope(
    shared_gateway, pool, mqtt_probe, raw_station
):
    cid = pool.take()
    probe = mqtt_probe(backend_topics(cid))
    station = await raw_station(shared_gateway, cid)
    await connected(probe, cid)
    sent = time.monotonic()
    probe.publish(
        f"ocpp/cs/{cid}",
        {"MessageTypeId": 2, "UniqueId": "t-1", "Action": "Reset", "Payload": {"type": "Hard"}},
    )
    assert await station.next() == [2, "t-1", "Reset", {"type": "Hard"}]  # and never answered
    error = await probe.arrival(f"ocpp/cp/Error/{cid}", timeout_s=8)
    waited = elapsed(sent)
    assert 2.5 <= waited <= 6, waited  # OCPPGW_CALL_TIMEOUT_S=3 on the shared gateway
    assert (error["UniqueId"], error["Action"], error["ErrorCode"]) == ("t-1", "Reset", "GenericError")  # fmt: skip
    assert error["ErrorDetails"]["reason"] == "timeout"
    assert error["ErrorDetails"]["origin"] == "gateway"
    # a late answer is forwarded marked Late, and noticed, never as the CALL's answer
    await station.send([3, "t-1", {"status": "Accepted"}])
    late = await probe.arrival(f"ocpp/cp/Reply/{cid}")
    assert late["Late"] is True and late["Action"] == "Reset"
    notice = await probe.arrival(f"ocpp/gw/Notice/{cid}")
    assert notice["ErrorDetails"]["reason"] == "late"


async def test_queued_backend_calls_reach_the_station_one_at_a_time(
    shared_gateway, pool, mqtt_probe, raw_station
):
    cid = pool.take()
    probe = mqtt_probe(backend_topics(cid))
    station = await raw_station(shared_gateway, cid)
    await connected(probe, cid)
    ids = [f"q{n}" for n in range(5)]
    for unique_id in ids:
        probe.publish(
            f"ocpp/cs/{cid}",
            {
                "MessageTypeId": 2,
                "UniqueId": unique_id,
                "Action": "Reset",
                "Payload": {"type": "Soft"},
            },
        )
    received = []
    for _ in ids:
        call = await station.next()
        received.append(call[1])
        # while this CALL is unanswered, nothing else may arrive
        await asyncio.sleep(0.25)
        assert station.frames.empty(), "a second CALL arrived while one was outstanding"
        await station.send([3, call[1], {"status": "Accepted"}])
    assert received == ids
    for unique_id in ids:
        await probe.arrival(f"ocpp/cp/Reply/{cid}", lambda b, u=unique_id: b["UniqueId"] == u)
    assert [b["UniqueId"] for _, b in probe.snapshot(f"ocpp/cp/Reply/{cid}")] == ids
    assert probe.snapshot(f"ocpp/cp/Error/{cid}") == []


async def test_station_call_the_backend_never_answers_gets_internal_error(
    shared_gateway, pool, mqtt_probe, raw_station
):
    cid = pool.take()
    probe = mqtt_probe(backend_topics(cid))  # a backend that never answers
    station = await raw_station(shared_gateway, cid)
    await connected(probe, cid)
    sent = time.monotonic()
    await station.send([2, "cp-1", "Heartbeat", {}])
    await station.send([2, "cp-2", "Heartbeat", {}])  # pipelined: each has its own timer
    first, second = await station.next(timeout_s=8), await station.next(timeout_s=8)
    assert 2.5 <= elapsed(sent) <= 6
    assert first == [4, "cp-1", "InternalError", "no answer from the backend", {}]
    assert second == [4, "cp-2", "InternalError", "no answer from the backend", {}]
    assert len(probe.snapshot(f"ocpp/cp/{cid}/Heartbeat")) == 2  # both were published


@pytest.fixture(scope="module")
def strict_gateway(tmp_path_factory, template_db):
    """Vendor actions rejected and a small frame limit."""
    [gw] = start_gateways(
        tmp_path_factory.mktemp("e2e-strict"),
        template_db,
        [
            {
                "OCPPGW_UNKNOWN_ACTIONS": "reject",
                "OCPPGW_MAX_FRAME_BYTES": "4096",
                "OCPPGW_SUBPROTOCOLS": "ocpp1.6,ocpp2.0.1",
            }
        ],
    )
    yield gw
    gw.stop()


async def test_frame_over_the_limit_closes_1009(strict_gateway, pool):
    ws = await open_socket(strict_gateway, pool.take())
    await ws.send('[2, "big", "DataTransfer", {"vendorId": "v", "data": "' + "x" * 5000 + '"}]')
    with pytest.raises(websockets.ConnectionClosed):
        await asyncio.wait_for(ws.recv(), 5)
    assert ws.close_code == 1009


async def test_frame_under_the_limit_passes(strict_gateway, pool, mqtt_probe):
    cid = pool.take()
    probe = mqtt_probe(backend_topics(cid))
    ws = await open_socket(strict_gateway, cid)
    await connected(probe, cid)
    await ws.send('[2, "ok", "DataTransfer", {"vendorId": "v", "data": "' + "x" * 3500 + '"}]')
    envelope = await probe.arrival(f"ocpp/cp/{cid}/DataTransfer")
    assert len(envelope["Payload"]["data"]) == 3500
    await ws.close()


@pytest.mark.parametrize("version", ["1.6", "2.0.1"])
async def test_unknown_action_with_reject_gets_not_implemented(
    strict_gateway, pool, raw_station, version
):
    station = await raw_station(strict_gateway, pool.take(), version)
    await station.send([2, "v-1", "AcmeVendorThing", {}])
    answer = await station.next()
    assert answer[:3] == [4, "v-1", "NotImplemented"]


# --- validation modes -----------------------------------------------------------------------------
# (OCPPGW_VALIDATION, OCPPGW_VALIDATION_FAILURE) -> (upstream rejected, downstream rejected)
MODES = {
    ("all", "reject"): (True, True),
    ("upstream", "reject"): (True, False),
    ("downstream", "reject"): (False, True),
    ("off", "reject"): (False, False),
    ("all", "log"): (False, False),
}


@pytest.fixture(scope="module")
def mode_gateways(tmp_path_factory, template_db):
    """One gateway per validation mode, started together (1.6 only: less to compile)."""
    modes = list(MODES)
    gateways = start_gateways(
        tmp_path_factory.mktemp("e2e-modes"),
        template_db,
        [
            {
                "OCPPGW_VALIDATION": validation,
                "OCPPGW_VALIDATION_FAILURE": failure,
                "OCPPGW_SUBPROTOCOLS": "ocpp1.6",
            }
            for validation, failure in modes
        ],
    )
    yield dict(zip(modes, gateways, strict=True))
    for gw in gateways:
        gw.stop()


@pytest.mark.parametrize("mode", list(MODES), ids=lambda m: "-".join(m))
async def test_validation_modes(mode_gateways, pool, mqtt_probe, raw_station, mode):
    upstream_rejected, downstream_rejected = MODES[mode]
    cid = pool.take()
    probe = mqtt_probe(backend_topics(cid))
    station = await raw_station(mode_gateways[mode], cid)
    await connected(probe, cid)

    # upstream: a BootNotification without its required properties
    await station.send([2, "up-1", "BootNotification", {"chargePointModel": "M"}])
    if upstream_rejected:
        answer = await station.next()
        assert answer[:3] == [4, "up-1", "OccurenceConstraintViolation"]
        assert "chargePointVendor" in answer[3]
    else:
        envelope = await probe.arrival(f"ocpp/cp/{cid}/BootNotification")
        assert envelope["Payload"] == {"chargePointModel": "M"}
        # a backend can tell checked from unchecked data: log mode marks what failed
        expected = {"path": "chargePointVendor", "rule": "required", "policy": "log"}
        assert envelope.get("Validation") == (expected if mode[1] == "log" else None)

    # downstream: a Reset whose type is not in the enum
    probe.publish(
        f"ocpp/cs/{cid}",
        {
            "MessageTypeId": 2,
            "UniqueId": "dn-1",
            "Action": "Reset",
            "Payload": {"type": "Sideways"},
        },
    )
    if downstream_rejected:
        error = await probe.arrival(f"ocpp/cp/Error/{cid}")
        assert (error["UniqueId"], error["ErrorCode"]) == ("dn-1", "PropertyConstraintViolation")
        assert error["ErrorDetails"]["reason"] == "invalid"
        assert (error["ErrorDetails"]["path"], error["ErrorDetails"]["rule"]) == ("type", "enum")
        # the gateway decided when it published the error: the Reset never reaches the station
        await asyncio.sleep(0.3)
        assert station.frames.empty()
    else:
        assert await station.next() == [2, "dn-1", "Reset", {"type": "Sideways"}]
