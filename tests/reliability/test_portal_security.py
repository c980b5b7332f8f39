"""Operator surfaces: deployment checks, CSRF on every POST, nothing for non-staff users.

Parametrised over the portal URLs that exist (the portal is still growing)."""

import os
import secrets
import subprocess

import pytest
from django.test import Client
from django.urls import URLPattern, URLResolver, reverse

from tests.reliability.conftest import PY, REPO

SAMPLE_KWARGS = {"cid": "CP-SEC-1", "unique_id": "u-1", "pk": 1}


def _portal_names() -> list[str]:
    from portal import urls

    names = []
    for pattern in urls.urlpatterns:
        if isinstance(pattern, URLPattern) and pattern.name:
            names.append(pattern.name)
        elif isinstance(pattern, URLResolver):  # nested includes are not expected yet
            continue
    return names


def _url(name: str) -> str:
    from portal import urls

    pattern = next(p for p in urls.urlpatterns if getattr(p, "name", None) == name)
    wanted = {k: v for k, v in SAMPLE_KWARGS.items() if k in pattern.pattern.converters}
    return reverse(f"portal:{name}", kwargs=wanted)


PUBLIC = {"login", "logout"}
PORTAL_NAMES = _portal_names()


def test_check_deploy_with_production_settings_has_no_warnings():
    env = {
        **os.environ,
        "DEBUG": "false",
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(64),
        "DJANGO_BEHIND_TLS_PROXY": "true",
        "DJANGO_ALLOWED_HOSTS": "gateway.example.com",
        "DJANGO_SECURE_HSTS_SECONDS": "31536000",
        "DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS": "true",
        "DJANGO_SECURE_HSTS_PRELOAD": "true",
    }
    result = subprocess.run(
        [PY, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture
def users(django_user_model):
    staff = django_user_model.objects.create_user("sec-staff", password="x" * 20, is_staff=True)
    plain = django_user_model.objects.create_user("sec-plain", password="y" * 20)
    return staff, plain


@pytest.mark.django_db
@pytest.mark.parametrize("name", sorted(set(PORTAL_NAMES) - PUBLIC))
def test_non_staff_users_see_nothing_of_the_portal(users, name):
    _, plain = users
    url = _url(name)
    anonymous = Client().get(url)
    assert anonymous.status_code in (302, 403, 404), (url, anonymous.status_code)
    client = Client()
    client.force_login(plain)
    for method in (client.get, client.post):
        response = method(url)
        assert response.status_code in (302, 403, 404, 405), (url, response.status_code)
        if response.status_code == 302:
            assert "login" in response["Location"], response["Location"]
        assert b"CP-SEC-1" not in response.content


@pytest.mark.django_db
def test_non_staff_users_see_nothing_of_the_admin(users):
    _, plain = users
    client = Client()
    client.force_login(plain)
    for url in ("/admin/", "/admin/stations/station/", "/admin/stations/messagelog/"):
        response = client.get(url)
        assert response.status_code == 302 and "/admin/login/" in response["Location"], url


@pytest.mark.django_db
@pytest.mark.parametrize("name", sorted(PORTAL_NAMES))
def test_every_portal_post_needs_a_csrf_token(users, name):
    staff, _ = users
    client = Client(enforce_csrf_checks=True)
    client.force_login(staff)
    response = client.post(_url(name), {"action": "Reset", "payload": "{}"})
    assert response.status_code == 403, (name, response.status_code)
    assert b"CSRF" in response.content
