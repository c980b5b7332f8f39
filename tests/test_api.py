"""The HTTP API: token auth, stations, kick, commands, the message log, the OpenAPI schema."""

from base64 import b64encode

import orjson
import pytest
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from tests.conftest import unique_cid


def _client(user=None) -> APIClient:
    client = APIClient()
    if user is not None:
        client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}")
    return client


@pytest.fixture
def api(admin_user):
    return _client(admin_user)


@pytest.mark.parametrize(
    "path", ["/api/stations/", "/api/messages/", "/api/schema/", "/api/stations/CP1/"]
)
def test_anonymous_gets_401(db, path):
    assert _client().get(path).status_code == 401


def test_non_staff_token_gets_403(db):
    from django.contrib.auth import get_user_model

    plain = get_user_model().objects.create_user("plain", password="plain-pass-123")
    assert _client(plain).get("/api/stations/").status_code == 403


def test_station_list_and_detail(api, make_station, django_assert_num_queries):
    make_station("API1", connected=True, frames_in=3)
    make_station("API2")
    make_station("OTHER")
    with django_assert_num_queries(2):  # token + user, stations
        data = api.get("/api/stations/", {"search": "api"}).json()
    assert [s["cid"] for s in data["results"]] == ["API1", "API2"]
    assert data["next"] is None
    connected = api.get("/api/stations/", {"connected": "true"}).json()["results"]
    assert [s["cid"] for s in connected] == ["API1"]
    detail = api.get("/api/stations/api1/").json()
    assert detail["connected"] is True and detail["frames_in"] == 3
    assert detail["url"].endswith("/api/stations/API1/")
    assert api.get("/api/stations/NONE/").status_code == 404


def test_station_list_pages_by_cid(api, make_station, monkeypatch):
    from portal import api as api_module

    monkeypatch.setattr(api_module, "MAX_ROWS", 2)
    for cid in ("P1", "P2", "P3"):
        make_station(cid)
    first = api.get("/api/stations/").json()
    assert [s["cid"] for s in first["results"]] == ["P1", "P2"]
    second = api.get(first["next"]).json()
    assert [s["cid"] for s in second["results"]] == ["P3"]


def test_messages_are_filtered_and_keyset_paginated(
    api, make_station, make_log, django_assert_num_queries
):
    station = make_station("APILOG")
    ids = [
        make_log(station, message_type=2, action="Heartbeat", unique_id=str(i), ago_s=10 - i).id
        for i in range(5)
    ]
    make_log(make_station("ELSE"), message_type=2, action="Heartbeat")
    seen, url, params = [], "/api/messages/", {"station": "apilog", "limit": 2}
    while url:
        with django_assert_num_queries(3):  # token + user, station, page
            data = api.get(url, params).json()
        seen += [m["id"] for m in data["results"]]
        url, params = data["next"], None
    assert seen == ids[::-1]
    assert api.get("/api/messages/", {"direction": "sideways"}).status_code == 400
    assert api.get("/api/messages/", {"limit": "x"}).status_code == 400
    since = api.get("/api/messages/", {"since": "2000-01-01T00:00:00Z", "action": "Heartbeat"})
    assert len(since.json()["results"]) == 6


def test_command_is_validated_and_published(make_station, operator, mqtt_probe):
    api = _client(operator)
    station = make_station(unique_cid("APICMD"), connected=True)
    bad = api.post(
        f"/api/stations/{station.cid}/commands/",
        {"action": "Reset", "payload": {"type": "Sideways"}},
        format="json",
    )
    assert bad.status_code == 400
    assert bad.json()["path"] == ["type"] or bad.json()["path"] == "type"
    probe = mqtt_probe([f"ocpp/cs/{station.cid}/#"])
    response = api.post(
        f"/api/stations/{station.cid}/commands/",
        {"action": "Reset", "payload": {"type": "Hard"}},
        format="json",
    )
    assert response.status_code == 202
    sent = response.json()
    published = probe.wait_for(sent["topic"])
    assert published["UniqueId"] == sent["unique_id"]
    assert published["Payload"] == {"type": "Hard"}
    answer = api.get(sent["answer"]).json()
    assert answer["state"] == "waiting"


def test_kick_and_command_need_their_permissions(make_station, viewer):
    api = _client(viewer)
    station = make_station(connected=True)
    assert api.post(f"/api/stations/{station.cid}/kick/").status_code == 403
    body = {"action": "Reset", "payload": {"type": "Hard"}}
    assert (
        api.post(f"/api/stations/{station.cid}/commands/", body, format="json").status_code == 403
    )


def test_kick_goes_through_redis(make_station, operator, settings):
    import redis

    from stations import cluster

    settings.REDIS_URL = "redis://127.0.0.1:6379/0"
    station = make_station(unique_cid("APIKICK"), connected=True)
    listener = redis.Redis.from_url(settings.REDIS_URL).pubsub()
    listener.subscribe(cluster.CHANNEL)
    listener.get_message(timeout=2)
    response = _client(operator).post(
        f"/api/stations/{station.cid}/kick/", {"reason": "firmware"}, format="json"
    )
    assert response.status_code == 202
    seen = None
    for _ in range(20):
        message = listener.get_message(timeout=0.5)
        if message and orjson.loads(message["data"]).get("cid") == station.cid_key:
            seen = orjson.loads(message["data"])
            break
    listener.close()
    assert seen["reason"] == "firmware"


def test_kick_without_any_route_is_503(api, make_station, settings):
    settings.REDIS_URL = ""
    station = make_station(connected=True)
    assert api.post(f"/api/stations/{station.cid}/kick/").status_code == 503


def test_openapi_schema_describes_the_endpoints(api):
    response = api.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200
    schema = orjson.loads(response.content)
    assert schema["openapi"].startswith("3.")
    paths = schema["paths"]
    assert "/api/stations/{cid}/commands/" in paths
    assert "post" in paths["/api/stations/{cid}/kick/"]
    assert "/api/messages/" in paths


# --- root, authentication -------------------------------------------------------------------------
def test_the_root_links_everything_and_says_how_to_authenticate(db):
    data = _client().get("/api/").json()
    assert data["version"] == "1"
    assert data["stations"].endswith("/api/stations/") and data["schema"].endswith("/api/schema/")
    assert any(scheme.startswith("Token") for scheme in data["authentication"])


def test_basic_auth_is_accepted_over_https_only_and_the_401_says_so(admin_user):
    basic = {"HTTP_AUTHORIZATION": "Basic " + b64encode(b"admin:password").decode()}
    refused = _client().get("/api/stations/", **basic)
    assert refused.status_code == 401
    assert refused.json()["detail"] == "HTTP Basic is accepted only over HTTPS"
    assert len(refused.json()["accepted"]) == 3
    assert _client().get("/api/stations/", secure=True, **basic).status_code == 200


# --- provisioning ---------------------------------------------------------------------------------
@pytest.fixture
def provisioner(db):
    from tests.conftest import _staff

    perms = ["add_station", "change_station", "delete_station"]
    return _client(_staff("provisioner", "prov-pass-123", [f"stations.{p}" for p in perms]))


def test_a_station_is_created_with_its_password_shown_once(provisioner):
    from django.contrib.auth.hashers import check_password

    from stations.models import Station

    response = provisioner.post(
        "/api/stations/", {"cid": "NEW-1", "validation_policy": "lenient"}, format="json"
    )
    assert response.status_code == 201, response.content
    body = response.json()
    assert (body["cid"], body["validation_policy"], body["enabled"]) == ("NEW-1", "lenient", True)
    station = Station.objects.select_related("user").get(cid_key="new-1")
    assert len(body["password"]) == 32 and check_password(body["password"], station.user.password)
    assert "password" not in provisioner.get("/api/stations/NEW-1/").json()
    again = provisioner.post("/api/stations/", {"cid": "new-1"}, format="json")
    assert again.status_code == 400 and "exists" in again.json()["detail"]
    short = provisioner.post("/api/stations/", {"cid": "NEW-2", "password": "short"}, format="json")
    assert short.status_code == 400 and "16 to 40" in short.json()["detail"]
    bad_id = provisioner.post("/api/stations/", {"cid": "a/b"}, format="json")
    assert bad_id.status_code == 400


def test_a_station_is_updated_rotated_and_deleted(provisioner, make_station):
    from django.contrib.auth import get_user_model
    from django.contrib.auth.hashers import check_password

    from stations import config_rows
    from stations.models import Station

    station = make_station("UPD-1")
    since = station.created_at
    patched = provisioner.patch(
        "/api/stations/UPD-1/", {"enabled": False, "frames_in": 99}, format="json"
    )
    assert patched.status_code == 200
    assert patched.json()["enabled"] is False and patched.json()["frames_in"] == 0  # read-only
    rotated = provisioner.post("/api/stations/UPD-1/password/", {}, format="json").json()
    station.refresh_from_db()
    assert check_password(rotated["password"], station.user.password)
    assert provisioner.delete("/api/stations/UPD-1/").status_code == 204
    assert not Station.objects.filter(cid_key="upd-1").exists()
    assert not get_user_model().objects.filter(username="UPD-1").exists()
    # every gateway process learns of the deletion: the live socket closes, no cached password
    changes = {c.reason for c in config_rows.credential_changes(since)[0] if c.cid_key == "upd-1"}
    assert "station deleted" in changes


def test_writes_need_their_permission_and_csrf_with_a_session(viewer, make_station):
    from rest_framework.test import APIClient

    make_station("PERM-1")
    token = _client(viewer)
    assert token.get("/api/stations/PERM-1/").status_code == 200
    assert token.post("/api/stations/", {"cid": "X1"}, format="json").status_code == 403
    assert token.patch("/api/stations/PERM-1/", {"enabled": False}).status_code == 403
    assert token.delete("/api/stations/PERM-1/").status_code == 403
    assert token.post("/api/stations/PERM-1/password/").status_code == 403
    from django.contrib.auth import get_user_model

    get_user_model().objects.create_superuser("boss", password="boss-pass-123")
    session = APIClient(enforce_csrf_checks=True)
    session.login(username="boss", password="boss-pass-123")
    refused = session.post("/api/stations/", {"cid": "X2"}, format="json")
    assert refused.status_code == 403 and "CSRF" in refused.json()["detail"]
