"""A small in-process MQTT broker (amqtt) for `make run` on a laptop without Mosquitto.

Fine for trying ocppgw; production uses Mosquitto, EMQX, VerneMQ or HiveMQ (no shared
subscriptions here, so a command to an offline station gets no `offline` answer).
"""

import asyncio
import logging
import socket
import threading

log = logging.getLogger("ocppgw.broker")


def port_in_use(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def start_in_thread(host: str = "127.0.0.1", port: int = 1883) -> threading.Thread:
    """Run an anonymous amqtt broker on its own thread and event loop; returns once it listens."""
    from amqtt.broker import Broker

    config = {
        "listeners": {"default": {"type": "tcp", "bind": f"{host}:{port}"}},
        "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
    }
    ready = threading.Event()

    def run():
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        broker = Broker(config, loop=loop)
        loop.run_until_complete(broker.start())
        ready.set()
        loop.run_forever()

    thread = threading.Thread(target=run, name="embedded-mqtt-broker", daemon=True)
    thread.start()
    if not ready.wait(15):
        raise RuntimeError(f"the embedded MQTT broker did not start on {host}:{port}")
    log.info("embedded MQTT broker listening on %s:%s", host, port)
    return thread
