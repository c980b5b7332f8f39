"""OCPPGW_ADMIN_PORT: the stations' port serves only /ocpp/; operators use the admin port."""

import asyncio

import pytest
import websockets

from tests.conftest import MqttProbe, clear_retained, unique_cid
from tests.e2e.gateway import SUBPROTOCOL, GatewayProcess, Topics, boot_frame, migrated_sqlite

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("adminport")
    gw = GatewayProcess(workdir, migrated_sqlite(workdir), Topics()).start()
    yield gw
    gw.stop()


@pytest.mark.parametrize("path", ["/admin/", "/portal/", "/api/", "/metrics", "/healthz", "/"])
def test_stations_port_answers_404_for_operator_surfaces(gateway, path):
    status, _ = gateway.http(path, port=gateway.port)
    assert status == 404


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics"])
def test_admin_port_serves_health_and_metrics_without_login(gateway, path):
    assert gateway.http(path)[0] == 200


def test_admin_port_serves_the_portal_and_admin_behind_their_login(gateway):
    assert gateway.http("/admin/login/")[0] == 200
    assert gateway.http("/portal/")[0] in (200, 302)  # urllib follows the login redirect


async def test_stations_connect_on_their_port_and_are_counted_in_metrics(gateway):
    cid = unique_cid("AP")
    probe = MqttProbe([f"{gateway.topics.prefix}/cp/{cid}/#"])
    try:
        async with websockets.connect(gateway.url(cid), subprotocols=[SUBPROTOCOL]) as ws:
            await ws.send(boot_frame(f"boot-{cid}"))
            await asyncio.to_thread(
                probe.wait_for, f"{gateway.topics.prefix}/cp/{cid}/BootNotification"
            )
            _, body = await asyncio.to_thread(gateway.http, "/metrics")
            text = body.decode()
            assert "ocppgw_connections 1.0" in text
            assert (
                'ocppgw_frames_total{action="BootNotification",direction="in",type="CALL"}' in text
            )
            assert "ocppgw_publish_latency_seconds_count" in text
    finally:
        probe.close()
        clear_retained([gateway.topics.presence(cid)])


async def test_admin_port_refuses_station_sockets(gateway):
    with pytest.raises(websockets.InvalidStatus) as refused:
        await websockets.connect(
            gateway.url("CP1", port=gateway.admin_port), subprotocols=[SUBPROTOCOL]
        )
    assert refused.value.response.status_code == 403


async def test_stations_port_refuses_other_websockets(gateway):
    with pytest.raises(websockets.InvalidStatus) as refused:
        await websockets.connect(f"ws://127.0.0.1:{gateway.port}/portal/live")
    assert refused.value.response.status_code == 403
