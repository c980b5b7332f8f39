"""Portal access: staff only, CSRF on actions, a permission per action."""

import pytest
from django.test import Client
from django.urls import reverse

from stations.models import TopicRule

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
