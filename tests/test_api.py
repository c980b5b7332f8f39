"""The HTTP API: token auth, stations, kick, commands, the message log, the OpenAPI schema."""

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
