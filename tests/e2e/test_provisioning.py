"""Provisioning through the API reaches a running gateway: a station created by script connects
with the password shown once, and deleting it closes its socket and forgets its password."""

import json

import pytest
import websockets

from tests.e2e.conftest import connected, manage, open_socket

pytestmark = pytest.mark.e2e

_API = """
import json
from rest_framework.test import APIClient
from django.contrib.auth import get_user_model
admin, _ = get_user_model().objects.get_or_create(username="prov-admin", is_staff=True, is_superuser=True)
client = APIClient()
client.force_authenticate(admin)
response = getattr(client, {method!r})({path!r}, {body!r}, format="json")
print(json.dumps({{"status": response.status_code, "body": response.json() if response.content else None}}))
"""


def api(gw, method: str, path: str, body=None) -> dict:
    out = manage(gw.db_env, "shell", "-c", _API.format(method=method, path=path, body=body))
    return json.loads(out.strip().splitlines()[-1])


async def test_a_station_created_by_the_api_connects_and_deleting_it_closes_it(
    shared_gateway, mqtt_probe
):
    cid = "PROV-" + shared_gateway.node.rsplit("-", 1)[-1]
    created = api(shared_gateway, "post", "/api/stations/", {"cid": cid})
    assert created["status"] == 201, created
    password = created["body"]["password"]
    probe = mqtt_probe([f"ocpp/presence/{cid}"])
    ws = await open_socket(shared_gateway, cid, password=password)
    await connected(probe, cid)

    assert api(shared_gateway, "delete", f"/api/stations/{cid}/")["status"] == 204
    with pytest.raises(websockets.ConnectionClosed):
        await ws.recv()  # within the gateway's one-second poll
    assert ws.close_code == 1000 and "deleted" in (ws.close_reason or "")
    # the remembered verification is gone too: the same password is refused
    with pytest.raises(websockets.InvalidStatus) as refused:
        await open_socket(shared_gateway, cid, password=password)
    assert refused.value.response.status_code == 403
