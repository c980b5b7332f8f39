"""`make run`'s first-run helper: an admin user and a demo station, with printed credentials."""

import secrets

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError

from stations import mqtt_url

DEMO_CID = "CP001"


class Command(BaseCommand):
    help = "Create (or reset) the demo admin and station CP001 and print how to use them."

    def add_arguments(self, parser):
        parser.add_argument("--port", type=int, default=settings.OCPPGW_PORT)
        parser.add_argument(
            "--host", default=settings.OCPPGW_HOST, help="interface the gateway will listen on"
        )

    def handle(self, *args, host, port, **options):
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
        # a wildcard listen address is reached on loopback from this machine
        here = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
        broker = mqtt_url.cli_flags(settings.MQTT_URL)
        # DEBUG=true: a new terminal lacks the Makefile's DEBUG, and settings refuse to load
        # without a secret key then
        manage = "DEBUG=true .venv/bin/python manage.py"
        reset = '{"MessageTypeId":2,"UniqueId":"r-1","Action":"Reset","Payload":{"type":"Soft"}}'
        lines = [
            "",
            "ocppgw quick start",
            f"  portal        http://{here}:{admin_port}/portal/",
            f"  admin         http://{here}:{admin_port}/admin/",
            f"  admin login   admin / {password}",
            f"  station URL   ws://{here}:{port}/ocpp/{DEMO_CID}",
            f"  station auth  {DEMO_CID} / {station_password}  (HTTP Basic)",
            "  MQTT broker   {}:{}".format(*mqtt_url.address(settings.MQTT_URL)),
            "",
            "in a second terminal, a backend that answers every station CALL:",
            f"  demo backend: {manage} demobackend",
            "in a third, a station that boots and sends traffic:",
            # "=": a generated password may start with "-", which argparse takes for an option
            f"  try it:       {manage} simulate {DEMO_CID} --password={station_password}",
            "and on MQTT:",
            f"  watch MQTT:   mosquitto_sub {broker} -v -t 'ocpp/#'",
            f"  send a CALL:  mosquitto_pub {broker} -t ocpp/cs/{DEMO_CID}/Reset -m '{reset}'",
            "",
        ]
        if here != host:
            lines.insert(2, f"  listening on  {host} (every interface: the LAN reaches the portal)")
        self.stdout.write("\n".join(lines))
