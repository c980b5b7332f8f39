"""Serve stations and operators with the Daphne settings a gateway needs (docs/contract.md §3).

The command line only: one process runs on Daphne through `ocppgw.edge.serve`; `--processes N`
(N > 1) makes this process the supervisor of N such processes (`ocppgw.edge.supervisor`).
"""

import argparse
import contextlib
import os

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from ocppgw.edge import serve, supervisor


class Command(BaseCommand):
    help = "Run the OCPP gateway (stations on --port, operators too unless OCPPGW_ADMIN_PORT)."

    def add_arguments(self, parser):
        parser.add_argument(
            "--host", default=settings.OCPPGW_HOST, help="interface to listen on (OCPPGW_HOST)"
        )
        parser.add_argument("--port", type=int, default=settings.OCPPGW_PORT)
        parser.add_argument(
            "--admin-port",
            type=int,
            default=settings.OCPPGW_ADMIN_PORT,
            help="second listener for portal, admin, API and metrics (0 = none)",
        )
        parser.add_argument(
            "--processes",
            type=int,
            default=1,
            help="gateway processes sharing the port (more than 1 needs REDIS_URL)",
        )
        parser.add_argument(
            "--embedded-broker",
            action="store_true",
            help="start an in-process MQTT broker when MQTT_URL is unset and "
            "nothing listens on 127.0.0.1:1883 (laptop quick start)",
        )
        # set by the supervisor for its children: listening sockets to adopt
        parser.add_argument("--fd", type=int, default=None, help=argparse.SUPPRESS)
        parser.add_argument("--admin-fd", type=int, default=None, help=argparse.SUPPRESS)

    def handle(self, *args, host, port, admin_port, processes, embedded_broker, fd, admin_fd, **o):
        if processes < 1:
            raise CommandError("--processes must be at least 1")
        raise_fd_limit()  # before the children start: they inherit it
        if processes > 1:
            if not settings.REDIS_URL:
                raise CommandError(
                    "REDIS_URL is required for --processes > 1: the processes coordinate "
                    "duplicate charge point ids and kicks through Redis"
                )
            if embedded_broker:
                raise CommandError("--embedded-broker runs with one process only")
            if ":" in host:  # Daphne's fd: endpoint adopts IPv4 sockets only
                raise CommandError("--processes > 1 needs an IPv4 --host")
            try:
                code = supervisor.Supervisor(self.stdout, host, port, admin_port, processes).run()
            except supervisor.ListenError as exc:
                raise CommandError(str(exc)) from exc
            if code:
                raise CommandError("gateway processes failed", returncode=code)
            return
        if embedded_broker:
            self._maybe_start_broker()
        self._serve(host, port, admin_port, fd, admin_fd)

    # --- one gateway process ---------------------------------------------------------------------
    def _serve(self, host, port, admin_port, fd, admin_fd):
        settings.OCPPGW_ADMIN_PORT = admin_port  # the ASGI port split (ocppgw/asgi.py) reads it

        def ready():
            where = f"ws://{host}:{port}/ocpp/<charge point id>"
            extra = f", operators on http://{host}:{admin_port}/portal/" if admin_port else ""
            self.stdout.write(f"ocppgw {os.getpid()} serving stations on {where}{extra}")
            self.stdout.flush()

        serve.serve(
            serve.endpoints(host, port, admin_port, fd, admin_fd), ready, supervised=fd is not None
        )

    def _maybe_start_broker(self):
        from stations import embedded_broker

        if os.environ.get("MQTT_URL"):
            return
        if embedded_broker.port_in_use("127.0.0.1", 1883):
            self.stdout.write("using the MQTT broker already listening on 127.0.0.1:1883")
            return
        embedded_broker.start_in_thread("127.0.0.1", 1883)
        settings.OCPPGW_MQTT_PROTOCOL = "3.1.1"  # amqtt speaks MQTT 3.1.1 only
        self.stdout.write("started an embedded MQTT broker on 127.0.0.1:1883 (laptop use only)")


def raise_fd_limit() -> None:
    """Soft fd limit up to the hard one: every station is a socket, and a common soft limit of
    1,024 would cap a process (OCPPGW_MAX_STATIONS=0, stations/limits.py) far below the
    stations docs/performance.md targets; the hard limit is the operator's to set."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard and hard != resource.RLIM_INFINITY:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
