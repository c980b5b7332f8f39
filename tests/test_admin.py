"""Django admin: station credentials, rules, exemptions, and a message log safe on big tables."""

import pytest
from django.contrib.auth.hashers import check_password
from django.urls import reverse

from stations import auth
from stations.models import MessageLog, Station, TopicRule

ADD = {"cid": "ADM01", "enabled": "on", "security_profile": "1"}


def test_creating_a_station_hashes_its_password_with_the_station_hasher(admin_client):
    response = admin_client.post(
        reverse("admin:stations_station_add"), {**ADD, "new_password": "a" * 20}
    )
    assert response.status_code == 302
    station = Station.objects.select_related("user").get(cid_key="adm01")
    assert station.user.username == "ADM01"
    assert station.user.password.startswith(auth.STATION_HASHER + "$")
    assert check_password("a" * 20, station.user.password)


@pytest.mark.parametrize(("password", "error"), [("", "required"), ("short", "at least 16")])
def test_a_new_station_needs_a_password_of_16_to_40(admin_client, password, error):
    response = admin_client.post(
        reverse("admin:stations_station_add"), {**ADD, "new_password": password}
    )
    assert response.status_code == 200
    assert error in response.content.decode()
    assert not Station.objects.exists()


def test_rotating_a_password_bumps_credentials_changed_at(admin_client):
    admin_client.post(reverse("admin:stations_station_add"), {**ADD, "new_password": "a" * 20})
    station = Station.objects.get()
    assert station.credentials_changed_at is None
    url = reverse("admin:stations_station_change", args=[station.pk])
    page = admin_client.get(url).content.decode()
    assert "Rotating it drops the live connection" in page
    admin_client.post(url, {**ADD, "new_password": "b" * 40})
    station.refresh_from_db()
    assert station.credentials_changed_at is not None  # gateways drop the socket within ~1 s
    assert check_password("b" * 40, station.user.password)
    # a blank password keeps the current one
    admin_client.post(url, {**ADD, "new_password": ""})
    station.user.refresh_from_db()
    assert check_password("b" * 40, station.user.password)


def test_a_station_never_takes_over_a_human_account(admin_client, admin_user):
    data = {**ADD, "cid": admin_user.username.upper(), "new_password": "c" * 20}
    response = admin_client.post(reverse("admin:stations_station_add"), data)
    assert response.status_code == 200
    assert "already exists" in response.content.decode()


def test_cids_collide_case_insensitively(admin_client, make_station):
    make_station("ADM01")
    response = admin_client.post(
        reverse("admin:stations_station_add"), {**ADD, "cid": "adm01", "new_password": "d" * 20}
    )
    assert "ids ignore case" in response.content.decode()


def test_station_changelist_in_fixed_queries(admin_client, make_station, django_assert_num_queries):
    for i in range(6):
        make_station(f"S{i}", connected=True)
    # session, user, count, full count, page, versions for the filter
    with django_assert_num_queries(6):
        response = admin_client.get(reverse("admin:stations_station_changelist"))
    assert response.status_code == 200


def test_topic_rule_admin_validates_templates(admin_client, django_assert_num_queries):
    add = reverse("admin:stations_topicrule_add")
    response = admin_client.post(add, {"direction": "upstream", "template": "a/${nope}"})
    assert "unknown placeholder" in response.content.decode()
    assert not TopicRule.objects.exists()
    for i in range(5):
        TopicRule.objects.create(direction="upstream", action=f"A{i}", template="x/${cid}")
    with django_assert_num_queries(5):
        admin_client.get(reverse("admin:stations_topicrule_changelist"))


def test_message_log_admin_never_counts_the_whole_table(
    admin_client, make_station, make_log, django_assert_max_num_queries
):
    station = make_station("LOGADM")
    for i in range(30):
        make_log(station, message_type=2, action="Heartbeat", unique_id=str(i), ago_s=i)
    url = reverse("admin:stations_messagelog_changelist")
    with django_assert_max_num_queries(6) as queries:
        response = admin_client.get(url)
    assert response.status_code == 200
    counts = [q["sql"] for q in queries.captured_queries if "COUNT(" in q["sql"].upper()]
    assert counts and all("LIMIT" in sql.upper() for sql in counts)
    assert "date_hierarchy" not in response.content.decode()


def test_message_log_admin_is_compact_iso_and_leads_to_the_portal(
    admin_client, make_station, make_log
):
    station = make_station("LOGADM2")
    row = make_log(station, message_type=2, action="BootNotification", unique_id="u-7")
    url = reverse("admin:stations_messagelog_changelist")
    page = admin_client.get(url, {"direction__exact": "in", "type": "2"})
    html = page.content.decode()
    assert "in CALL BootNotification" in html  # one column for direction, type and action
    assert ">CALLRESULT</a>" in html  # the type filter by name
    assert f'<a href="{reverse("portal:station", args=[station.cid])}">LOGADM2</a>' in html
    assert f'href="{reverse("portal:messages")}?direction=in&amp;type=2"' in html  # same filter
    assert row.created.strftime("%Y-%m-%d %H:%M:%S") in html  # ISO, UTC
    # the portal's log understands the link's filter
    portal = admin_client.get(reverse("portal:messages"), {"direction": "in", "type": "2"})
    assert "u-7" in portal.content.decode()


def test_message_log_admin_is_read_only(admin_client, make_station, make_log):
    row = make_log(make_station(), message_type=2, action="Heartbeat")
    assert admin_client.get(reverse("admin:stations_messagelog_add")).status_code == 403
    change = reverse("admin:stations_messagelog_change", args=[row.pk])
    assert admin_client.get(change).status_code == 200
    admin_client.post(change, {"action": "Tampered"})
    assert MessageLog.objects.get().action == "Heartbeat"
    delete = reverse("admin:stations_messagelog_delete", args=[row.pk])
    assert admin_client.post(delete, {"post": "yes"}).status_code == 403


def test_exemption_changelist_in_fixed_queries(admin_client, db, django_assert_num_queries):
    from stations.models import ValidationExemption

    for action in ("A", "B", "C"):
        ValidationExemption.objects.create(action=action)
    with django_assert_num_queries(5):  # session, user, count, full count, page
        admin_client.get(reverse("admin:stations_validationexemption_changelist"))


def test_station_accounts_are_told_apart_from_operators(admin_client, make_station):
    make_station("CPACC1")
    stations = admin_client.get("/admin/auth/user/", {"kind": "station"}).content.decode()
    operators = admin_client.get("/admin/auth/user/", {"kind": "operator"}).content.decode()
    assert ">CPACC1</a>" in stations and ">admin</a>" not in stations
    assert ">CPACC1</a>" not in operators and ">admin</a>" in operators
