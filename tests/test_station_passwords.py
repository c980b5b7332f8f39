"""One rule for station passwords (stations/services.py), the same in admin, CLI and API."""

import pytest
from django.core.management import CommandError, call_command

from stations import services
from stations.admin import StationForm
from stations.models import Station

pytestmark = pytest.mark.django_db

SHORT, NOT_ASCII, GOOD = "x" * 15, "pässwörd-pässwörd", "a-good-password-0123"


@pytest.mark.parametrize("password", [SHORT, "x" * 41, NOT_ASCII, "tab\there-0123456789"])
def test_the_rule_refuses_what_a_basic_header_or_ocpp_cannot_carry(password):
    assert services.password_problem(password)
    station = Station.objects.create(cid="PW1")
    with pytest.raises(services.PasswordRefused):
        services.set_password(station, password)


def test_set_password_creates_the_user_and_stores_only_a_hash():
    station = Station.objects.create(cid="PW2")
    services.set_password(station, GOOD)
    station.refresh_from_db()
    assert station.user.username == "PW2"
    assert (
        station.user.password.startswith("pbkdf2_sha256_station$")
        and GOOD not in station.user.password
    )


@pytest.mark.parametrize("password", [SHORT, NOT_ASCII])
def test_admin_and_cli_refuse_with_the_same_reason(password):
    form = StationForm(data={"cid": "PW3", "security_profile": 1, "new_password": password})
    assert not form.is_valid()
    with pytest.raises(CommandError) as refused:
        call_command("createstation", "PW3", password=password)
    reason = services.password_problem(password)
    assert str(refused.value) == reason
    if len(password) >= services.MIN_PASSWORD:  # the length is the field's own check
        assert form.errors["new_password"] == [reason]
