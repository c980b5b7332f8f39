"""`make run`'s first-run helper: an admin user and a demo station, with printed credentials."""

import secrets

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError

DEMO_CID = "CP001"


class Command(BaseCommand):
    help = "Create (or reset) the demo admin and station CP001 and print how to use them."

    def add_arguments(self, parser):
        parser.add_argument("--port", type=int, default=settings.OCPPGW_PORT)

    def handle(self, *args, port, **options):
        if not settings.DEBUG:
            raise CommandError("quickstart resets demo passwords: run it only with DEBUG=true")
        password = secrets.token_urlsafe(12)
        admin, _ = get_user_model().objects.get_or_create(
            username="admin", defaults={"is_staff": True, "is_superuser": True}
        )
        admin.is_staff = admin.is_superuser = True
        admin.set_password(password)
        admin.save()
        station_password = secrets.token_urlsafe(18)[:24]
        call_command(
            "createstation",
            DEMO_CID,
            password=station_password,
            update=True,
            stdout=open("/dev/null", "w"),
        )
        admin_port = settings.OCPPGW_ADMIN_PORT or port
        self.stdout.write(
            "\n".join(
                [
                    "",
                    "ocppgw quick start",
                    f"  portal        http://127.0.0.1:{admin_port}/portal/",
                    f"  admin         http://127.0.0.1:{admin_port}/admin/",
                    f"  admin login   admin / {password}",
                    f"  station URL   ws://127.0.0.1:{port}/ocpp/{DEMO_CID}",
                    f"  station auth  {DEMO_CID} / {station_password}  (HTTP Basic)",
                    f"  MQTT broker   {settings.MQTT_URL}",
                    # DEBUG=true: a new terminal lacks the Makefile's DEBUG, and settings refuse
                    # to load without a secret key then
                    f"  try it:       DEBUG=true .venv/bin/python manage.py simulate {DEMO_CID} "
                    f"--password {station_password}",
                    "  watch MQTT:   mosquitto_sub -v -t 'ocpp/#'",
                    "",
                ]
            )
        )
