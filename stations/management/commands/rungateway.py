"""Serve stations and operators with the Daphne settings a gateway needs (contract §3)."""

import logging
import os

from django.conf import settings
from django.core.management.base import BaseCommand

log = logging.getLogger("ocppgw.rungateway")

LISTEN_BACKLOG = 2048  # Daphne's default of 50 drops connections in a reconnect storm
CONNECT_TIMEOUT_S = 60  # longer than an uncached password check queued behind others


class Command(BaseCommand):
    help = "Run the OCPP gateway (stations on --port, operators too unless OCPPGW_ADMIN_PORT)."

    def add_arguments(self, parser):
        parser.add_argument("--host", default="0.0.0.0", help="interface to listen on")
        parser.add_argument("--port", type=int, default=settings.OCPPGW_PORT)
        parser.add_argument(
            "--admin-port",
            type=int,
            default=settings.OCPPGW_ADMIN_PORT,
            help="second listener for portal, admin, API and metrics (0 = none)",
        )
        parser.add_argument(
            "--embedded-broker",
            action="store_true",
            help="start an in-process MQTT broker when MQTT_URL is unset and "
            "nothing listens on 127.0.0.1:1883 (laptop quick start)",
        )

    def handle(self, *args, host, port, admin_port, embedded_broker, **options):
        if embedded_broker:
            self._maybe_start_broker()
        from daphne.server import Server  # installs the asyncio reactor: import it first
        from twisted.internet import defer, reactor

        from ocppgw import backpressure
        from ocppgw.asgi import application

        backpressure.install()
        from stations import gateway

        endpoints = [f"tcp:port={port}:interface={host}:backlog={LISTEN_BACKLOG}"]
        if admin_port:
            endpoints.append(f"tcp:port={admin_port}:interface={host}:backlog=128")
        server = Server(
            application=application,
            endpoints=endpoints,
            signal_handlers=True,
            websocket_timeout=-1,  # no lifetime limit: Daphne's default closes sockets after a day
            websocket_connect_timeout=CONNECT_TIMEOUT_S,
            websocket_handshake_timeout=CONNECT_TIMEOUT_S,
            ping_interval=settings.OCPPGW_PING_INTERVAL_S,
            ping_timeout=settings.OCPPGW_PING_TIMEOUT_S,
            websocket_max_message_size=settings.OCPPGW_MAX_FRAME_BYTES,
            websocket_max_frame_size=settings.OCPPGW_MAX_FRAME_BYTES,
            application_close_timeout=10,
            verbosity=0,
            ready_callable=lambda: self._ready(host, port, admin_port),
        )

        def graceful():
            # runs before Daphne cancels consumers (which skips their disconnect())
            gw = gateway.current()
            if gw is None:
                return None
            return defer.Deferred.fromFuture(gw.loop.create_task(gw.shutdown()))

        reactor.addSystemEventTrigger("before", "shutdown", graceful)
        server.run()

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

    def _ready(self, host, port, admin_port):
        where = f"ws://{host}:{port}/ocpp/<charge point id>"
        extra = f", operators on http://{host}:{admin_port}/portal/" if admin_port else ""
        self.stdout.write(f"ocppgw {os.getpid()} serving stations on {where}{extra}", ending="\n")
        self.stdout.flush()
        from twisted.internet import reactor

        # start the gateway (MQTT, log writer) now rather than on the first station
        reactor.callLater(0, _start_gateway)


def _start_gateway():
    import asyncio

    from stations import gateway

    async def start():
        gateway.get_gateway()

    asyncio.get_event_loop().create_task(start())
