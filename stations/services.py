"""Operations that write to several models at once."""

import datetime

from django.contrib.auth.hashers import make_password
from django.db import transaction

from stations.auth import STATION_HASHER
from stations.models import Station


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
