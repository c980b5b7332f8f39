"""The operator portal: access, live stations, station page, commands, message log, rules."""

import datetime
import threading

import orjson
import paho.mqtt.client as mqtt
import pytest
from django.test import Client
from django.urls import reverse

from portal import control, msgsearch, traffic
from stations.models import MessageLog, TopicRule, ValidationExemption
from tests.conftest import unique_cid

PAGES = [
    ("portal:stations", []),
    ("portal:stations-live", []),
    ("portal:messages", []),
    ("portal:traffic", []),
    ("portal:traffic-data", []),
    ("portal:rules", []),
    ("portal:exemptions", []),
]


# --- access ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(("name", "args"), PAGES)
def test_every_page_needs_a_staff_login(client, db, name, args):
    response = client.get(reverse(name, args=args))
    assert response.status_code == 302
    assert response.url.startswith(reverse("portal:login"))


def test_station_pages_need_a_staff_login(client, make_station):
    station = make_station()
    for name in ("portal:station", "portal:station-live"):
        response = client.get(reverse(name, args=[station.cid]))
        assert response.status_code == 302


def test_login_refuses_non_staff_and_admits_staff(client, db, viewer):
    from django.contrib.auth import get_user_model

    get_user_model().objects.create_user("plain", password="plain-pass-123")
    response = client.post(
        reverse("portal:login"), {"username": "plain", "password": "plain-pass-123"}
    )
    assert response.status_code == 200
    assert b"staff account" in response.content
    response = client.post(
        reverse("portal:login"), {"username": "viewer", "password": "viewer-pass-123"}
    )
    assert response.status_code == 302
    assert client.get(reverse("portal:stations")).status_code == 200


def test_post_actions_need_csrf(admin_user, make_station):
    station = make_station(connected=True)
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(admin_user)
    assert strict.post(reverse("portal:kick", args=[station.cid])).status_code == 403
    assert strict.post(reverse("portal:rule-create"), {}).status_code == 403


def test_post_actions_need_their_permission(client, viewer, make_station):
    station = make_station(connected=True)
    client.force_login(viewer)
    assert client.post(reverse("portal:kick", args=[station.cid])).status_code == 403
    command = {"action": "Reset", "payload": '{"type": "Soft"}'}
    assert client.post(reverse("portal:command", args=[station.cid]), command).status_code == 403
    rule = {"direction": "upstream", "template": "a/${cid}"}
    assert client.post(reverse("portal:rule-create"), rule).status_code == 403
    assert client.post(reverse("portal:exemption-create"), {"action": "X"}).status_code == 403
    assert not TopicRule.objects.exists()


def test_actions_refuse_get(admin_client, make_station):
    station = make_station(connected=True)
    assert admin_client.get(reverse("portal:kick", args=[station.cid])).status_code == 405


# --- connected stations ------------------------------------------------------------------------
def test_stations_page_lists_connected_stations_in_fixed_queries(
    admin_client, make_station, django_assert_num_queries
):
    for i in range(5):
        make_station(f"LIVE{i}", connected=True, frames_in=i)
    make_station("GONE1")
    # session, user, rows, count, recently refused
    with django_assert_num_queries(5):
        response = admin_client.get(reverse("portal:stations"))
    body = response.content.decode()
    assert "LIVE0" in body and "LIVE4" in body
    assert "GONE1" not in body


def test_live_json_has_the_columns_and_search(
    admin_client, make_station, django_assert_num_queries
):
    make_station("ALPHA1", connected=True, version="2.0.1", frames_in=7, frames_out=3)
    make_station("BETA1", connected=True)
    make_station("ALPHA2")  # offline
    with django_assert_num_queries(4):
        data = admin_client.get(reverse("portal:stations-live"), {"q": "alpha"}).json()
    assert [s["cid"] for s in data["stations"]] == ["ALPHA1"]
    row = data["stations"][0]
    assert row["ocpp_version"] == "2.0.1" and row["frames_in"] == 7 and row["frames_out"] == 3
    assert row["node"] == "test:1" and row["connected_at"] and row["last_frame_at"]
    assert row["url"] == reverse("portal:station", args=["ALPHA1"])
    assert data["total"] == 2


def test_open_any_station_by_cid_redirects(admin_client, make_station):
    make_station("CP-Open")
    response = admin_client.get(reverse("portal:stations"), {"open": "cp-open"})
    assert response.status_code == 302
    assert admin_client.get(response.url).status_code == 200
    refused = admin_client.get(reverse("portal:stations"), {"open": "a/b"})
    assert "may use only" in refused.content.decode()


# --- station page ------------------------------------------------------------------------------
def test_station_page_shows_frames_presence_and_refusal(
    admin_client, make_station, make_log, django_assert_num_queries
):
    station = make_station(
        "CPX01",
        connected=True,
        last_refused_at=datetime.datetime.now(datetime.UTC),
        last_refused_reason="wrong password",
    )
    make_log(station, direction="gw", outcome="connected", reason="OCPP 1.6 from 10.0.0.1", ago_s=9)
    make_log(station, message_type=2, unique_id="u1", action="BootNotification", ago_s=8)
    make_log(station, direction="out", message_type=3, unique_id="u1", action="BootNotification")
    # session, user, station, frames, presence
    with django_assert_num_queries(5):
        response = admin_client.get(reverse("portal:station", args=["cpx01"]))
    body = response.content.decode()
    assert "wrong password" in body
    assert "BootNotification" in body and "OCPP 1.6 from 10.0.0.1" in body
    assert 'value="Reset"' in body or ">Reset<" in body  # 1.6 CSMS actions offered
    assert "command-examples" in body


def test_station_live_json(admin_client, make_station, make_log, django_assert_num_queries):
    station = make_station("CPLIVE", connected=True)
    make_log(station, message_type=2, unique_id="9", action="Heartbeat", payload="[2]")
    with django_assert_num_queries(5):
        data = admin_client.get(reverse("portal:station-live", args=["CPLIVE"])).json()
    assert data["station"]["connected"] is True
    assert data["frames"][0]["action"] == "Heartbeat"
    assert data["frames"][0]["url"].startswith("/portal/messages/")


def test_unknown_station_is_404(admin_client, db):
    assert admin_client.get(reverse("portal:station", args=["NOPE"])).status_code == 404


# --- commands ------------------------------------------------------------------------------------
def _subscribe(topic_filter):
    """A real subscriber on the shared Mosquitto; returns (client, received list, ready event)."""
    got, ready = [], threading.Event()
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    client.on_connect = lambda c, *a: c.subscribe(topic_filter, qos=1)
    client.on_subscribe = lambda *a: ready.set()
    client.on_message = lambda c, u, m: got.append((m.topic, orjson.loads(m.payload)))
    client.connect("127.0.0.1", 1883)
    client.loop_start()
    assert ready.wait(5)
    return client, got


def _wait(predicate, timeout_s=5.0):
    import time

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_command_is_published_on_the_downstream_topic_as_a_backend_would(
    client, operator, make_station
):
    station = make_station(unique_cid("CMD"), connected=True)
    sub, got = _subscribe(f"ocpp/cs/{station.cid}/#")
    try:
        client.force_login(operator)
        response = client.post(
            reverse("portal:command", args=[station.cid]),
            {"action": "Reset", "payload": '{"type": "Soft"}'},
            HTTP_ACCEPT="application/json",
        )
        assert response.status_code == 202
        sent = response.json()
        assert sent["topic"] == f"ocpp/cs/{station.cid}/portal"
        assert _wait(lambda: got)
    finally:
        sub.loop_stop()
        sub.disconnect()
    topic, envelope = got[0]
    assert topic == sent["topic"]
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


# --- message log -------------------------------------------------------------------------------
def _fill_log(make_log, station, n):
    return [
        make_log(station, message_type=2, unique_id=str(i), action="Heartbeat", ago_s=n - i)
        for i in range(n)
    ]


def test_message_log_pages_by_keyset_without_gaps_or_repeats(
    admin_client, make_station, make_log, django_assert_num_queries
):
    station = make_station("CPLOG")
    rows = _fill_log(make_log, station, 120)
    seen, query = [], {"station": "cplog"}
    for _ in range(5):
        # session, user, station lookup, page, partners
        with django_assert_num_queries(5):
            response = admin_client.get(reverse("portal:messages"), query)
        page = response.context["page"]
        seen += [r.id for r in page.rows]
        if not page.next_cursor:
            break
        query = {"station": "cplog", "after": page.next_cursor}
    assert seen == [r.id for r in reversed(rows)]


def test_message_log_filters(admin_client, make_station, make_log):
    a, b = make_station("CPA"), make_station("CPB")
    make_log(a, message_type=2, action="BootNotification", unique_id="1", ago_s=3600)
    make_log(a, direction="out", message_type=3, action="BootNotification", unique_id="1")
    make_log(b, message_type=2, action="Heartbeat", unique_id="2")
    make_log(b, direction="gw", outcome="refused", reason="wrong password")

    def found(**query):
        response = admin_client.get(reverse("portal:messages"), query)
        return [(r.cid, r.direction, r.message_type) for r in response.context["page"].rows]

    assert found(station="cpb") == [("CPB", "gw", None), ("CPB", "in", 2)]
    assert found(direction="out") == [("CPA", "out", 3)]
    assert found(type="2") == [("CPB", "in", 2), ("CPA", "in", 2)]
    assert found(action="BootNotification", type="2") == [("CPA", "in", 2)]
    assert found(uid="1") == [("CPA", "out", 3), ("CPA", "in", 2)]
    now = datetime.datetime.now(datetime.UTC)
    until = (now - datetime.timedelta(minutes=30)).strftime("%Y-%m-%dT%H:%M")
    assert found(until=until) == [("CPA", "in", 2)]
    since = (now - datetime.timedelta(minutes=30)).isoformat()
    assert len(found(since=since)) == 3


def test_request_and_answer_link_both_ways(admin_client, make_station, make_log):
    station = make_station("CPPAIR")
    call = make_log(station, message_type=2, unique_id="42", action="Authorize", ago_s=1)
    answer = make_log(station, direction="out", message_type=3, unique_id="42", action="Authorize")
    body = admin_client.get(reverse("portal:messages"), {"station": "CPPAIR"}).content.decode()
    assert reverse("portal:message", args=[answer.id]) + '" class="pair">answer' in body
    assert reverse("portal:message", args=[call.id]) + '" class="pair">← request' in body
    detail = admin_client.get(reverse("portal:message", args=[answer.id])).content.decode()
    assert reverse("portal:message", args=[call.id]) in detail


def test_cursor_round_trips():
    row = MessageLog(id=7, created=datetime.datetime(2025, 5, 6, 7, 8, 9, 123456, datetime.UTC))
    assert msgsearch.decode_cursor(msgsearch.encode_cursor(row)) == (row.created, 7)
    assert msgsearch.decode_cursor("junk") is None
    assert msgsearch.decode_cursor("") is None


def test_bad_filter_values_show_errors_not_500(admin_client, db):
    response = admin_client.get(reverse("portal:messages"), {"since": "yesterday", "type": "9"})
    assert response.status_code == 200
    assert response.context["form"].errors


# --- traffic -----------------------------------------------------------------------------------
def test_traffic_counts_per_minute_in_the_database(
    admin_client, make_station, make_log, django_assert_num_queries
):
    station = make_station("CPTRAF")
    make_log(station, message_type=2, action="Heartbeat")
    make_log(station, message_type=2, action="Heartbeat")
    make_log(station, direction="out", message_type=4, outcome="sent")
    make_log(make_station("OTHER"), message_type=2, outcome="rejected")
    with django_assert_num_queries(4):  # session, user, station, GROUP BY
        data = admin_client.get(reverse("portal:traffic-data"), {"station": "cptraf"}).json()
    assert len(data["t"]) == traffic.WINDOW_MIN
    assert (sum(data["in"]), sum(data["out"]), sum(data["errors"])) == (2, 1, 1)
    whole = admin_client.get(reverse("portal:traffic-data")).json()
    assert (sum(whole["in"]), sum(whole["errors"])) == (3, 2)
    with django_assert_num_queries(4):  # session, user, station, busiest stations
        page = admin_client.get(reverse("portal:traffic"), {"station": "cptraf"})
    assert [b["cid"] for b in page.context["busiest"]] == ["CPTRAF", "OTHER"]


def test_message_detail_in_fixed_queries(
    admin_client, make_station, make_log, django_assert_num_queries
):
    row = make_log(make_station("CPDET"), message_type=2, unique_id="7", action="Heartbeat")
    with django_assert_num_queries(4):  # session, user, row with station, its partner
        response = admin_client.get(reverse("portal:message", args=[row.id]))
    assert "No matching answer" in response.content.decode()


# --- topic rules and exemptions ----------------------------------------------------------------
def test_rules_page_lists_rules_in_fixed_queries(
    admin_client, make_station, django_assert_num_queries
):
    for i in range(4):
        TopicRule.objects.create(
            direction="upstream", action=f"A{i}", station=make_station(), template="x/${cid}"
        )
    with django_assert_num_queries(3):  # session, user, rules with their stations
        response = admin_client.get(reverse("portal:rules"))
    body = response.content.decode()
    # the seed's example is the first one in the help
    assert body.index("ocpp/cp/${cid}/Notify/${action}") < body.index("ocpp/cp/${cid}/meter")


def test_saving_a_rule(admin_client, make_station):
    make_station("CPR1")
    response = admin_client.post(
        reverse("portal:rule-create"),
        {
            "direction": "upstream",
            "action": "BootNotification",
            "station": "cpr1",
            "template": "ocpp/cp/${cid}/Notify/${action}",
        },
    )
    assert response.status_code == 302
    rule = TopicRule.objects.get()
    assert (rule.station.cid, rule.action) == ("CPR1", "BootNotification")


@pytest.mark.parametrize(
    ("data", "error"),
    [
        ({"direction": "upstream", "template": "a/${nope}"}, "unknown placeholder"),
        ({"direction": "upstream", "template": "a/+/b"}, "wildcards"),
        ({"direction": "downstream", "template": "cs/all/#"}, "must contain ${cid}"),
        ({"direction": "upstream", "template": "a", "station": "GHOST"}, "no station"),
    ],
)
def test_invalid_rules_cannot_be_saved(admin_client, db, data, error):
    response = admin_client.post(reverse("portal:rule-create"), data)
    assert response.status_code == 400
    assert error in response.content.decode()
    assert not TopicRule.objects.exists()


def test_duplicate_global_rule_is_refused(admin_client, db):
    data = {"direction": "upstream", "action": "Heartbeat", "template": "hb/${cid}"}
    assert admin_client.post(reverse("portal:rule-create"), data).status_code == 302
    assert admin_client.post(reverse("portal:rule-create"), data).status_code == 400
    assert TopicRule.objects.count() == 1


def test_editing_and_deleting_a_rule(admin_client, db):
    rule = TopicRule.objects.create(direction="upstream", action="X", template="a/${cid}")
    assert admin_client.get(reverse("portal:rule-edit", args=[rule.pk])).status_code == 200
    data = {"direction": "upstream", "action": "X", "template": "b/${cid}"}
    admin_client.post(reverse("portal:rule-update", args=[rule.pk]), data)
    rule.refresh_from_db()
    assert rule.template == "b/${cid}"
    admin_client.post(reverse("portal:rule-delete", args=[rule.pk]))
    assert not TopicRule.objects.exists()


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        (
            {"direction": "upstream", "template": "ocpp/cp/${cid}/Notify/${action}"},
            {"topic": "ocpp/cp/CP+1/Notify/BootNotification".replace("+", "%2B")},
        ),
        ({"direction": "downstream", "template": "cs/${cid}/#"}, {"topic": "cs/CP%2B1/#"}),
    ],
)
def test_rule_preview_renders_for_a_sample(
    admin_client, query, expected, django_assert_num_queries
):
    query = {**query, "cid": "CP+1", "action": "BootNotification"}
    with django_assert_num_queries(2):  # session, user
        response = admin_client.get(reverse("portal:rule-preview"), query)
    assert response.json() == expected


def test_rule_preview_explains_a_bad_template(admin_client):
    query = {"direction": "upstream", "template": "a/${x}", "cid": "CP1", "action": "A"}
    response = admin_client.get(reverse("portal:rule-preview"), query)
    assert response.status_code == 400
    assert "unknown placeholder" in response.json()["error"]


def test_exemptions_are_editable(admin_client, db, django_assert_num_queries):
    admin_client.post(
        reverse("portal:exemption-create"),
        {"action": "DataTransfer", "direction": "both", "note": "vendor X"},
    )
    exemption = ValidationExemption.objects.get()
    admin_client.post(
        reverse("portal:exemption-update", args=[exemption.pk]),
        {"action": "DataTransfer", "direction": "upstream", "note": "only inbound"},
    )
    exemption.refresh_from_db()
    assert (exemption.direction, exemption.note) == ("upstream", "only inbound")
    with django_assert_num_queries(3):
        assert b"DataTransfer" in admin_client.get(reverse("portal:exemptions")).content
    admin_client.post(reverse("portal:exemption-delete", args=[exemption.pk]))
    assert not ValidationExemption.objects.exists()
