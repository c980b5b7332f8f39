"""Subprotocol spellings through a real gateway: exact by default, aliases when configured."""

import sqlite3

import pytest
import websockets
from websockets.asyncio.client import connect

from tests.conftest import PASSWORD, basic, wait_until
from tests.e2e.conftest import backend_topics, connected

pytestmark = pytest.mark.e2e


async def _open(gw, cid: str, subprotocol: str):
    return await connect(
        gw.url(cid),
        subprotocols=[subprotocol],
        additional_headers={"Authorization": basic(cid, PASSWORD)},
        open_timeout=10,
        ping_interval=None,
    )


def _last_refusal(gw, cid: str) -> str:
    db = gw.env["DATABASE_URL"].removeprefix("sqlite:///")
    with sqlite3.connect(db, timeout=10) as conn:
        row = conn.execute(
            "SELECT last_refused_reason FROM stations_station WHERE cid = ?", (cid,)
        ).fetchone()
    return row[0] if row else ""


async def test_an_unknown_spelling_is_closed_1002_and_remembered_as_the_refusal(
    shared_gateway, pool
):
    cid = pool.take()
    ws = await _open(shared_gateway, cid, "ocpp1.6j")
    assert ws.subprotocol is None
    with pytest.raises(websockets.ConnectionClosed):
        await ws.recv()
    assert ws.close_code == 1002
    reason = wait_until(lambda: _last_refusal(shared_gateway, cid), 5, "the stored refusal")
    assert "no acceptable OCPP subprotocol" in reason and "ocpp1.6j" in reason


async def test_aliases_map_a_fleet_spelling_to_its_version(gateway_factory, pool, mqtt_probe):
    [gw] = gateway_factory({"OCPPGW_SUBPROTOCOL_ALIASES": "ocpp1.6j=ocpp1.6,OCPP1.6=ocpp1.6"})
    for spelling in ("ocpp1.6j", "OCPP1.6"):
        cid = pool.take()
        probe = mqtt_probe(backend_topics(cid))
        ws = await _open(gw, cid, spelling)
        assert ws.subprotocol == spelling  # the handshake echoes what the station offered
        presence = await connected(probe, cid)
        assert presence["version"] == "1.6"
        await ws.close()
