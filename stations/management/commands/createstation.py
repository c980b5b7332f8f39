"""Create a station and the Django user it authenticates as."""

import secrets

from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import make_password
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from stations import auth, identity
from stations.models import Station


class Command(BaseCommand):
    help = "Create a charge point with a Basic-auth password (generated unless given)."

    def add_arguments(self, parser):
        parser.add_argument("cid")
        parser.add_argument("--password", help="16 to 40 characters; generated when omitted")
        parser.add_argument("--profile", type=int, choices=[1, 2, 3], default=1)
        parser.add_argument("--update", action="store_true", help="set the password if it exists")

    def handle(self, *args, cid, password, profile, update, **options):
        problem = identity.validate(cid)
        if problem:
            raise CommandError(problem)
        password = password or secrets.token_urlsafe(24)[:32]
        if not 16 <= len(password) <= 40:
            raise CommandError("OCPP requires station passwords of 16 to 40 characters")
        with transaction.atomic():
            station = Station.objects.filter(cid_key=identity.key(cid)).first()
            if station and not update:
                raise CommandError(f"station {station.cid} exists (use --update to reset it)")
            user = station.user if station and station.user else None
            if user is None:
                user, _ = get_user_model().objects.get_or_create(username=cid)
            user.password = make_password(password, hasher=auth.STATION_HASHER)
            user.save()
            if station is None:
                station = Station(cid=cid)
            station.user, station.security_profile = user, profile
            station.save()
        self.stdout.write(f"station {station.cid}: password {password}")
