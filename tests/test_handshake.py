"""The WebSocket handshake in process: subprotocol choice, identity, credentials, refusals.

Stations are driven in process (tests/asgi_station.py); tests/e2e/ covers what only Daphne does.
"""

import uuid

import orjson
import pytest
from channels.db import database_sync_to_async
from django.conf import settings

from stations import auth, identity
from stations import cluster as cluster_mod
from stations import gateway as gateway_module
from stations.models import MessageLog, Station
from tests.asgi_station import MARKER, ChargePoint, connect, probe_for, refusals
from tests.conftest import PASSWORD, basic, unique_cid

pytestmark = pytest.mark.django_db(transaction=True)


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


# --- refused before the upgrade (the edge asks before Daphne builds an application) -------------
async def test_early_refusal_when_full_spares_a_station_held_here(gateway, station_factory):
    held, other = await station_factory(), await station_factory()
    ws = await connect(held.cid)
    gw = gateway_module.get_gateway()
    gw.max_stations = 1
    path = f"/ocpp/{other.cid}".encode()
    before = refusals("capacity")
    assert (
        10 <= gw.refuse_early(path, basic(other.cid, PASSWORD).encode()) <= 20
    )  # 1-2x the default 10 s
    assert refusals("capacity") == before + 1
    # held here: its new connection replaces the old one, never refused
    assert gw.refuse_early(f"/ocpp/{held.cid}".encode(), basic(held.cid, PASSWORD).encode()) is None
    gw.max_stations = 10
    assert gw.refuse_early(path, basic(other.cid, PASSWORD).encode()) is None
    await ws.disconnect()


async def test_capacity_counts_open_sockets_where_the_edge_counts_them(gateway, station_factory):
    # a reconnect storm: the held station's old socket is gone (Twisted closed it) but its
    # conversation is not released yet; the places taken are the sockets, not held + handshakes
    held, other = await station_factory(), await station_factory()
    ws = await connect(held.cid)
    gw = gateway_module.get_gateway()
    gw.max_stations, gw.handshaking = 2, 2  # without the edge: 1 held + 2 handshakes > 2
    path, auth = f"/ocpp/{other.cid}".encode(), basic(other.cid, PASSWORD).encode()
    try:
        assert gw.refuse_early(path, auth) is not None
        # asked before this connection's socket is counted: one other handshake open, the
        # held one's socket closed, and this one make 2
        gw.open_sockets = lambda: 1
        assert gw.refuse_early(path, auth) is None
        gw.open_sockets = lambda: 2
        assert gw.refuse_early(path, auth) is not None
    finally:
        gw.max_stations, gw.handshaking, gw.open_sockets = 10, 0, None
    await ws.disconnect()


async def test_early_refusal_when_checks_are_backlogged_spares_a_remembered_password(
    gateway, station_factory
):
    remembered, new = await station_factory(), await station_factory()
    ws = await connect(remembered.cid)  # verified once: remembered by this process
    await ws.disconnect()
    gw = gateway_module.get_gateway()
    gw.gatekeeper.pending = gw.gatekeeper.max_pending  # the password checks are queued full
    try:
        before = refusals("auth_backlog")
        assert gw.refuse_early(f"/ocpp/{new.cid}".encode(), basic(new.cid, PASSWORD).encode())
        assert refusals("auth_backlog") == before + 1
        path = f"/ocpp/{remembered.cid}".encode()
        assert gw.refuse_early(path, basic(remembered.cid, PASSWORD).encode()) is None
        # a wrong password is not remembered: refused as backlogged, not let through
        assert (
            gw.refuse_early(path, basic(remembered.cid, "wrong-password-123").encode()) is not None
        )
        # what admit() refuses with a reason of its own is left to it
        assert gw.refuse_early(b"/elsewhere/x", basic(new.cid, PASSWORD).encode()) is None
        assert gw.refuse_early(b"/ocpp/bad%20id", basic(new.cid, PASSWORD).encode()) is None
    finally:
        gw.gatekeeper.pending = 0


async def test_a_storms_burst_is_bounded_by_the_handshakes_under_way_at_the_edge(
    gateway, station_factory
):
    # a storm's requests are parsed in one loop turn, before any password check is queued: the
    # handshakes the edge has under way bound them; a password known verified still passes
    remembered, elsewhere, new = [await station_factory() for _ in range(3)]
    ws = await connect(remembered.cid)
    await ws.disconnect()
    gw = gateway_module.get_gateway()
    # the tag this process's claims carry: any process of the node computes the same one
    other = auth.CredentialCache(settings.SECRET_KEY, 60)
    key = identity.key(remembered.cid)
    assert gw.gatekeeper.tag(key) == other.digest(key, PASSWORD)[:8].hex()
    assert gw.gatekeeper.pending == 0
    gw.edge_handshakes = lambda: gw.gatekeeper.max_pending  # the edge holds a full burst
    try:
        assert gw.refuse_early(*upgrade(new.cid)) is not None
        assert gw.refuse_early(*upgrade(remembered.cid)) is None
        # another process verified it: its claim carried the tag of the password
        tag = other.digest(identity.key(elsewhere.cid), PASSWORD)[:8].hex()
        assert gw.refuse_early(*upgrade(elsewhere.cid)) is not None
        gw.gatekeeper.verified_elsewhere(identity.key(elsewhere.cid), tag)
        assert gw.refuse_early(*upgrade(elsewhere.cid)) is None
        # ... for that password only
        assert gw.refuse_early(*upgrade(elsewhere.cid, "wrong-password-123")) is not None
        gw.edge_handshakes = lambda: gw.gatekeeper.max_pending - 1
        assert gw.refuse_early(*upgrade(new.cid)) is None
    finally:
        gw.edge_handshakes = None


def upgrade(cid: str, password: str = PASSWORD) -> tuple[bytes, bytes]:
    return f"/ocpp/{cid}".encode(), basic(cid, password).encode()


def test_a_claim_carries_the_tag_of_the_verified_password_to_the_other_processes():
    learned = {}
    c = cluster_mod.Cluster(
        "redis://x", "n1", on_claim=lambda *a: None, on_kick=None,
        tag=lambda key: "00112233aabbccdd" if key == "cp1" else None,
        on_tag=lambda key, tag: learned.__setitem__(key, tag),
    )  # fmt: skip
    message = orjson.loads(c._claim_message("cp1", "conn", 5))
    assert message["v"] == "00112233aabbccdd"
    assert "v" not in orjson.loads(c._claim_message("cp2", "conn", 5))
    other = cluster_mod.Cluster("redis://x", "n2", on_claim=lambda *a: None, on_kick=None,
                                on_tag=lambda key, tag: learned.__setitem__(key, tag))  # fmt: skip
    other._handle(orjson.dumps(message))
    assert learned == {"cp1": "00112233aabbccdd"}
