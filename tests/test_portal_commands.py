"""Portal commands: published as a backend would, refused with reasons, answered, kicks."""

import orjson
import pytest
from django.urls import reverse

from portal import control
from stations.models import TopicRule, ValidationExemption
from tests.conftest import unique_cid


# --- commands ------------------------------------------------------------------------------------
def test_command_is_published_on_the_downstream_topic_as_a_backend_would(
    client, operator, make_station, mqtt_probe
):
    station = make_station(unique_cid("CMD"), connected=True)
    probe = mqtt_probe([f"ocpp/cs/{station.cid}/#"])
    client.force_login(operator)
    response = client.post(
        reverse("portal:command", args=[station.cid]),
        {"action": "Reset", "payload": '{"type": "Soft"}', "confirm": "on"},  # Reset asks first
        HTTP_ACCEPT="application/json",
    )
    assert response.status_code == 202
    sent = response.json()
    assert sent["topic"] == f"ocpp/cs/{station.cid}/portal"
    envelope = probe.wait_for(sent["topic"])
    assert envelope == {
        "MessageTypeId": 2,
        "UniqueId": sent["unique_id"],
        "Action": "Reset",
        "Payload": {"type": "Soft"},
    }


def test_invalid_command_is_refused_with_the_schema_path(admin_client, make_station):
    station = make_station(connected=True)
    response = admin_client.post(
        reverse("portal:command", args=[station.cid]),
        {"action": "Reset", "payload": '{"type": "Sideways"}'},
        HTTP_ACCEPT="application/json",
    )
    assert response.status_code == 400
    assert response.json()["path"] == "type"
    assert response.json()["rule"] == "enum"


@pytest.mark.parametrize(
    ("action", "payload", "why"),
    [
        ("BootNotification", "{}", "not an action a CSMS sends"),
        ("Reset", "[1]", "JSON object"),
        ("Reset", "{nope", "not valid JSON"),
    ],
)
def test_bad_commands_are_refused(admin_client, make_station, action, payload, why):
    station = make_station(connected=True)
    response = admin_client.post(
        reverse("portal:command", args=[station.cid]),
        {"action": action, "payload": payload},
        HTTP_ACCEPT="application/json",
    )
    assert response.status_code == 400
    assert why in response.json()["error"]


def test_command_to_a_never_connected_station_is_refused(admin_client, make_station):
    station = make_station(version="")
    response = admin_client.post(
        reverse("portal:command", args=[station.cid]),
        {"action": "Reset", "payload": "{}"},
        HTTP_ACCEPT="application/json",
    )
    assert response.status_code == 400
    assert "never connected" in response.json()["error"]


def test_exempted_action_skips_the_portal_check(make_station, monkeypatch):
    station = make_station(connected=True)
    ValidationExemption.objects.create(action="Reset", direction="downstream")
    published = []
    monkeypatch.setattr(control, "publish", lambda topic, body: published.append(body))
    control.send(station, "Reset", {"type": "Sideways"})
    assert orjson.loads(published[0])["Payload"] == {"type": "Sideways"}


def test_downstream_topic_follows_a_station_rule(make_station):
    station = make_station("CPRULE")
    TopicRule.objects.create(direction="downstream", template="legacy/${cid}/+/in")
    assert control.downstream_topic(station) == "legacy/CPRULE/portal/in"
    TopicRule.objects.create(direction="downstream", station=station, template="x/${cid}/#")
    assert control.downstream_topic(station) == "x/CPRULE/portal"


def test_command_answer_reports_the_stations_answer(admin_client, make_station, make_log):
    station = make_station("CPANS", connected=True)
    url = reverse("portal:command-answer", args=[station.cid, "abc"])
    assert admin_client.get(url).json()["state"] == "waiting"
    make_log(station, direction="out", message_type=2, unique_id="abc", action="Reset", ago_s=1)
    assert admin_client.get(url).json()["state"] == "sent"
    make_log(
        station,
        direction="in",
        message_type=3,
        unique_id="abc",
        action="Reset",
        payload='[3,"abc",{"status":"Accepted"}]',
    )
    data = admin_client.get(url).json()
    assert data["state"] == "answered"
    assert data["answer"] == {"status": "Accepted"}


def test_command_answer_reports_the_gateways_error(admin_client, make_station, make_log):
    station = make_station("CPERR")
    body = {"MessageTypeId": 4, "UniqueId": "xyz", "ErrorCode": "GenericError"}
    make_log(
        station,
        direction="gw",
        message_type=4,
        unique_id="xyz",
        outcome="published",
        payload=orjson.dumps(body).decode(),
    )
    data = admin_client.get(reverse("portal:command-answer", args=["CPERR", "xyz"])).json()
    assert data["state"] == "error"
    assert data["answer"]["ErrorCode"] == "GenericError"


def test_kick_without_a_gateway_or_redis_says_why(admin_client, make_station, settings):
    settings.REDIS_URL = ""
    station = make_station(connected=True)
    response = admin_client.post(reverse("portal:kick", args=[station.cid]), follow=True)
    assert "cannot reach it" in response.content.decode()


def test_kick_through_redis_reaches_every_gateway_process(client, operator, make_station, settings):
    import redis

    from stations import cluster

    settings.REDIS_URL = "redis://127.0.0.1:6379/0"
    station = make_station(unique_cid("KICK"), connected=True)
    listener = redis.Redis.from_url(settings.REDIS_URL).pubsub()
    listener.subscribe(cluster.CHANNEL)
    listener.get_message(timeout=2)  # the subscribe confirmation
    client.force_login(operator)
    client.post(reverse("portal:kick", args=[station.cid]), {"reason": "maintenance"})
    seen = None
    for _ in range(20):
        message = listener.get_message(timeout=0.5)
        if message and orjson.loads(message["data"]).get("cid") == station.cid_key:
            seen = orjson.loads(message["data"])
            break
    listener.close()
    assert seen == {"op": "kick", "cid": station.cid_key, "reason": "maintenance", "node": "portal"}


# --- confirmation and audit -----------------------------------------------------------------------
def test_a_disruptive_command_needs_confirmation_and_both_attempts_are_audited(
    client, operator, make_station, mqtt_probe
):
    from stations.models import AuditEntry

    station = make_station("CPCONF", connected=True)
    client.force_login(operator)
    url = reverse("portal:command", args=[station.cid])
    body = {"action": "Reset", "payload": '{"type": "Hard"}'}
    asked = client.post(url, body, HTTP_ACCEPT="application/json")
    assert asked.status_code == 400
    assert asked.json()["confirm"] is True and "Reset (Hard) restarts" in asked.json()["error"]
    assert not AuditEntry.objects.exists()  # nothing sent, nothing done
    probe = mqtt_probe([f"ocpp/cs/{station.cid}/#"])
    sent = client.post(url, {**body, "confirm": "on"}, HTTP_ACCEPT="application/json")
    assert sent.status_code == 202, sent.content
    assert probe.wait_for(f"ocpp/cs/{station.cid}/portal")["Action"] == "Reset"
    entry = AuditEntry.objects.get()
    assert (entry.username, entry.via, entry.action, entry.target) == (
        "operator",
        "portal",
        "command",
        "CPCONF",
    )
    assert entry.detail == 'Reset {"type":"Hard"}' and entry.result.startswith("sent as ")
    # a harmless command goes without asking
    harmless = {"action": "TriggerMessage", "payload": '{"requestedMessage": "Heartbeat"}'}
    assert client.post(url, harmless, HTTP_ACCEPT="application/json").status_code == 202


def test_the_audit_trail_page_shows_who_did_what(admin_client, make_station):
    from stations import audit

    make_station("CPAUD")
    audit.record(None, "api", "kick", "CPAUD", "firmware", "failed: no route")
    admin_client.post(reverse("portal:policy", args=["CPAUD"]), {"validation_policy": "log"})
    page = admin_client.get(reverse("portal:audit")).content.decode()
    assert "policy" in page and "default -&gt; log" in page and "failed: no route" in page
    only = admin_client.get(reverse("portal:audit"), {"action": "kick"}).content.decode()
    assert "failed: no route" in only and "default -&gt; log" not in only
