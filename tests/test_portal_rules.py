"""Portal topic rules and validation exemptions."""

import pytest
from django.urls import reverse

from stations.models import TopicRule, ValidationExemption


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
