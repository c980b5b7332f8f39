"""Create a station and the Django user it authenticates as."""

from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from stations import identity, services
from stations.models import Station


class Command(BaseCommand):
    help = "Create a charge point with a Basic-auth password (generated unless given)."

    def add_arguments(self, parser):
        parser.add_argument("cid")
        parser.add_argument("--password", help="16 to 40 characters; generated when omitted")
        parser.add_argument("--profile", type=int, choices=[1, 2, 3], default=1)
        parser.add_argument("--update", action="store_true", help="set the password if it exists")

    def handle(self, *args, cid, password, profile, update, **options):
        password = password or services.suggest_password()
        problem = services.password_problem(password)
        if problem:
            raise CommandError(problem)
        station = Station.objects.filter(cid_key=identity.key(cid)).first()
        if station and not update:
            raise CommandError(f"station {station.cid} exists (use --update to reset it)")
        try:
            with transaction.atomic():
                if station is None:  # the one creation rule admin and API follow too
                    station, _ = services.create_station(cid, password, security_profile=profile)
                else:
                    if station.security_profile != profile:
                        station.security_profile = profile
                        station.save(update_fields=["security_profile"])
                    services.set_password(station, password)
        except services.StationRefused as refused:
            raise CommandError(str(refused)) from refused
        self.stdout.write(f"station {station.cid}: password {password}")
