"""A demo backend on MQTT: answers every station CALL so a newcomer sees the whole loop."""

import json
import threading

import paho.mqtt.client as mqtt
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from stations import demo, mqtt_url, topics


class Command(BaseCommand):
    help = (
        "Answer every station CALL published by the gateway with a schema-valid CALLRESULT "
        "(BootNotification Accepted, times = now), logging what it does. A demo for the quick "
        "start, never a production backend. Uses MQTT_URL and the default topic templates."
    )

    def add_arguments(self, parser):
        parser.add_argument("--count", type=int, default=0, help="stop after N answers (0 = never)")

    def handle(self, *args, count, **options):
        upstream = settings.OCPPGW_UPSTREAM_TOPIC
        match = topics.matcher(upstream).match
        presence = topics.matcher(settings.OCPPGW_PRESENCE_TOPIC).match
        versions: dict[str, str] = {}  # escaped cid -> OCPP version, from retained presence
        done = threading.Event()
        answered = 0

        def on_connect(client, userdata, flags, reason_code, properties):
            if reason_code.is_failure:
                self.stderr.write(f"broker refused the connection: {reason_code}")
                done.set()
                return
            client.subscribe(topics.wildcard_filter(settings.OCPPGW_PRESENCE_TOPIC), qos=0)
            client.subscribe(topics.wildcard_filter(upstream), qos=1)
            self.stdout.write(
                f"demo backend: answering CALLs on {topics.wildcard_filter(upstream)}"
            )

        def on_message(client, userdata, message):
            nonlocal answered
            try:
                body = json.loads(message.payload)
            except ValueError:
                return
            seen = presence(message.topic)
            if seen:  # the retained presence says which OCPP version a station speaks
                versions[seen.group("cid")] = body.get("version") or ""
                return
            found = match(message.topic)
            if not found or body.get("MessageTypeId") != 2:
                return
            cid = topics.unescape_cid(found.group("cid"))
            action, unique_id = body.get("Action", ""), body.get("UniqueId", "")
            version = versions.get(found.group("cid")) or "1.6"
            payload = demo.answer(version, action)
            if payload is None:
                self.stdout.write(
                    f"{cid} {action} [{unique_id}]: not an OCPP {version} action, left unanswered"
                )
                return
            reply = {"MessageTypeId": 3, "UniqueId": unique_id, "Payload": payload}
            topic = demo.reply_topic(settings.OCPPGW_DOWNSTREAM_TOPIC, cid, action)
            client.publish(topic, json.dumps(reply), qos=1)
            self.stdout.write(f"{cid} {action} [{unique_id}] -> {topic} {json.dumps(payload)}")
            answered += 1
            if count and answered >= count:
                done.set()

        protocol = mqtt.MQTTv5 if settings.OCPPGW_MQTT_PROTOCOL == "5" else mqtt.MQTTv311
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=protocol)
        client.on_connect, client.on_message = on_connect, on_message
        host, port = mqtt_url.configure(client, settings.MQTT_URL)
        try:
            client.connect(host, port, 30)
        except OSError as exc:
            raise CommandError(
                f"MQTT_URL: cannot reach the broker at {host}:{port}: {exc}"
            ) from exc
        client.loop_start()
        try:
            done.wait()
        except KeyboardInterrupt:
            pass
        finally:
            client.disconnect()
            client.loop_stop()
