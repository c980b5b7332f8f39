"""Operations that write to several models at once, and the one rule for station passwords.

Admin, `createstation`, `importstations` and the API create stations and set their passwords
only through `create_station` and `set_password`.
"""

import datetime
import secrets

from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import make_password
from django.db import transaction

from stations import identity
from stations.auth import STATION_HASHER
from stations.models import Station

MIN_PASSWORD, MAX_PASSWORD = 16, 40  # OCPP BasicAuthPassword / AuthorizationKey


class PasswordRefused(ValueError):
    """The password breaks the station password rule; the message says how."""


def password_problem(password: str) -> str | None:
    """Why `password` cannot be a station password, or None."""
    if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        return f"OCPP requires station passwords of {MIN_PASSWORD} to {MAX_PASSWORD} characters"
    if not password.isprintable() or not password.isascii():
        return "a station password is printable ASCII (it travels in an HTTP Basic header)"
    return None


def suggest_password() -> str:
    """A random station password of 32 URL-safe characters."""
    return secrets.token_urlsafe(24)[:32]


def set_password(station: Station, password: str) -> None:
    """Hash and store a station password, creating its user if needed (username = cid).

    Changing the hash bumps credentials_changed_at (stations.signals), so every gateway process
    forgets the old verification and closes the live socket within about a second.
    """
    problem = password_problem(password)
    if problem:
        raise PasswordRefused(problem)
    user = station.user
    if user is None:
        user, _ = get_user_model().objects.get_or_create(username=station.cid)
    user.password = make_password(password, hasher=STATION_HASHER)
    user.save()
    if station.user_id != user.pk:
        station.user = user
        station.save(update_fields=["user"])


class StationRefused(ValueError):
    """A station cannot be created as asked; the message says why."""


@transaction.atomic
def create_station(cid: str, password: str = "", **fields) -> tuple[Station, str]:
    """Create a station and its user (username = cid); returns it and its password (generated
    when none is given, shown to the caller once and stored only as a hash)."""
    problem = identity.validate(cid)
    if problem:
        raise StationRefused(problem)
    if Station.objects.filter(cid_key=identity.key(cid)).exists():
        raise StationRefused(f"a station with id {cid!r} exists (ids ignore case)")
    if get_user_model().objects.filter(username__iexact=cid).exists():
        # never take over a human's account: the station's user is named after its cid
        raise StationRefused(f"a user named {cid!r} already exists")
    password = password or suggest_password()
    problem = password_problem(password)
    if problem:
        raise PasswordRefused(problem)
    station = Station(cid=cid, **fields)
    station.full_clean(exclude=["user"])
    station.save()
    set_password(station, password)
    return station, password


@transaction.atomic
def delete_station(station: Station) -> None:
    """Delete a station and the user it authenticated as (its live socket closes within ~1 s)."""
    user = station.user
    station.delete()
    if user is not None:
        user.delete()


def rotate_password(station_id: int, secret: str, grace_s: int) -> None:
    """Store a station's new password hash; the old one stays valid for `grace_s` seconds."""
    now = datetime.datetime.now(datetime.UTC)
    with transaction.atomic():
        station = Station.objects.select_related("user").select_for_update().get(id=station_id)
        user = station.user
        station.previous_password = user.password
        station.previous_password_until = now + datetime.timedelta(seconds=grace_s)
        station.credentials_changed_at = now
        station.save(
            update_fields=["previous_password", "previous_password_until", "credentials_changed_at"]
        )
        user.password = make_password(secret, hasher=STATION_HASHER)
        user.save(update_fields=["password"])
