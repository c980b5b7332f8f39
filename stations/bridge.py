"""The process's one MQTT connection: publish, per-station subscriptions, reconnect, buffering.

paho runs its network loop on its own thread (`loop_start`); `publish()` and `subscribe()` are
thread-safe and never block the event loop. Callbacks run on paho's thread and only hand work to
the event loop with `call_soon_threadsafe`. The bridge moves bytes; it knows nothing of OCPP.

While the broker is away, publishes wait in a bounded FIFO of our own (not paho's queue) so that a
CALL whose call timeout runs out can be withdrawn before it is ever published (contract §2).
"""

import collections
import logging
import ssl
import threading
import time
from urllib.parse import unquote, urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from stations import metrics

log = logging.getLogger("ocppgw.bridge")

SUBSCRIBE_BATCH = 200  # filters per SUBSCRIBE packet when re-subscribing thousands of stations
ROUTED_SUB_ID, WATCH_SUB_ID = 1, 2  # MQTT 5 subscription identifiers: which filter matched


class Pending:
    """A publish waiting for the broker; `cancel()` withdraws it if it has not gone out yet."""

    __slots__ = ("cancelled", "payload", "properties", "qos", "received", "retain", "sent", "topic")

    def __init__(self, topic, payload, qos, retain, properties):
        self.topic, self.payload, self.qos = topic, payload, qos
        self.retain, self.properties = retain, properties
        self.cancelled = self.sent = False
        self.received = None  # arrival of the station frame, set while buffered (metrics)

    def cancel(self) -> bool:
        """Withdraw the message; False when it already went to the broker."""
        if self.sent:
            return False
        self.cancelled = True
        return True


class Bridge:
    def __init__(
        self,
        loop,
        url,
        *,
        node,
        protocol="5",
        qos=1,
        buffer_len=100000,
        on_message=None,
        on_state=None,
        will=None,
        online=None,
    ):
        self.loop = loop
        self.qos = qos
        self.node = node
        self.on_message = on_message  # called on the loop: (topic, payload, properties, sub_ids)
        self.on_state = on_state  # called on the loop: (connected: bool)
        self.buffer_len = buffer_len
        self.connected = False
        self.disconnected_since = time.monotonic()
        self.dropped = 0
        self._buffer: collections.deque[Pending] = collections.deque()
        self._unacked: dict[int, Pending] = {}  # mid -> sent, not yet acknowledged (QoS > 0)
        self._lock = threading.Lock()
        self._filters: dict[str, int] = {}  # filter -> subscription identifier
        self._online = online  # (topic, payload) published retained on every connect
        self.v5 = protocol == "5"
        parts = urlsplit(url)
        self.host, self.port = (
            parts.hostname,
            parts.port or (8883 if parts.scheme == "mqtts" else 1883),
        )
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=f"ocppgw-{node}"[:64],
            protocol=mqtt.MQTTv5 if self.v5 else mqtt.MQTTv311,
            **({} if self.v5 else {"clean_session": True}),
        )
        if parts.username:
            self.client.username_pw_set(unquote(parts.username), unquote(parts.password or ""))
        if parts.scheme == "mqtts":
            self.client.tls_set(cert_reqs=ssl.CERT_REQUIRED)
        # paho's defaults: 20 QoS>0 messages in flight and an unbounded queue (FACTS.md)
        self.client.max_inflight_messages_set(1000)
        self.client.max_queued_messages_set(0)
        # a short ceiling: after a broker restart, stations should not wait half a minute
        self.client.reconnect_delay_set(min_delay=1, max_delay=5)
        if will:
            self.client.will_set(will[0], will[1], qos=1, retain=True)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.client.on_publish = self._on_publish

    # --- lifecycle -------------------------------------------------------------------------------
    def start(self) -> None:
        """Connect in the background; paho retries with backoff until the broker answers."""
        self.client.connect_async(self.host, self.port, keepalive=30)
        self.client.loop_start()

    def stop(self, goodbye=None, timeout_s: float = 5.0) -> None:
        """Publish `goodbye` (retained, acknowledged), then disconnect cleanly. Blocking: call in a thread."""
        if goodbye and self.connected:
            # subscribers see the goodbye; the empty retained message then clears the topic, so
            # the node topics of past processes do not pile up on the broker
            for payload in (goodbye[1], b""):
                info = self.client.publish(goodbye[0], payload, qos=1, retain=True)
                try:
                    info.wait_for_publish(timeout_s)
                except (RuntimeError, ValueError):
                    pass
        deadline = time.monotonic() + timeout_s
        while self.connected and self.client.want_write() and time.monotonic() < deadline:
            time.sleep(0.05)
        self.client.disconnect()
        self.client.loop_stop()

    # --- publish ---------------------------------------------------------------------------------
    def publish(self, topic: str, payload: bytes, *, qos=None, retain=False, properties=None):
        """Queue a publish; returns a Pending that can be withdrawn while the broker is away."""
        item = Pending(topic, payload, self.qos if qos is None else qos, retain, properties)
        with self._lock:
            if self.connected and not self._buffer:
                self._send(item)
            elif len(self._buffer) >= self.buffer_len:
                self.dropped += 1
                return None
            else:
                self._buffer.append(item)
        return item

    def _send(self, item: Pending) -> None:
        item.sent = True
        info = self.client.publish(
            item.topic, item.payload, qos=item.qos, retain=item.retain, properties=item.properties
        )
        if item.qos:
            self._unacked[info.mid] = item
            # acknowledged before we wrote it down (is_published() raises on an error rc, such
            # as NO_CONN while the loss of the broker is not yet noticed: paho keeps it then)
            if info.rc == mqtt.MQTT_ERR_SUCCESS and info.is_published():
                self._unacked.pop(info.mid, None)

    def _on_publish(self, client, userdata, mid, reason_code, properties):
        # PUBACK (QoS 1) or PUBCOMP (QoS 2): the broker has it; paho's thread, no lock needed
        self._unacked.pop(mid, None)

    def _reclaim(self) -> None:
        """On the loop, after losing the broker: take back what it never acknowledged.

        paho would re-send those after reconnecting, but only after our buffer has drained (per
        station order breaks) and not always (seen lost when the broker shut down mid-flight).
        Back at the head of our buffer they go first, in order, and a CALL whose timeout runs
        out can still withdraw its frame. paho's own copies are removed (pinned paho 2.2).
        """
        if self.client.is_connected() or not self._unacked:
            return
        with self._lock:
            items = list(self._unacked.items())
            self._unacked.clear()
            with self.client._out_message_mutex:
                for mid, _ in items:
                    self.client._out_messages.pop(mid, None)
            for _, item in reversed(items):
                item.sent = False
                self._buffer.appendleft(item)

    def buffered(self) -> int:
        return len(self._buffer)

    @staticmethod
    def response_properties(correlation: bytes | None):
        props = Properties(PacketTypes.PUBLISH)
        if correlation is not None:
            props.CorrelationData = correlation
        return props

    # --- subscriptions ---------------------------------------------------------------------------
    def subscribe(self, topic_filter: str, sub_id: int = ROUTED_SUB_ID) -> None:
        self._filters[topic_filter] = sub_id
        if self.connected:
            self._subscribe_batch([topic_filter], sub_id)

    def unsubscribe(self, topic_filter: str) -> None:
        if self._filters.pop(topic_filter, None) is not None and self.connected:
            self.client.unsubscribe(topic_filter)

    def _subscribe_batch(self, filters, sub_id) -> None:
        props = None
        if self.v5:
            props = Properties(PacketTypes.SUBSCRIBE)
            props.SubscriptionIdentifier = sub_id
        self.client.subscribe([(f, self.qos) for f in filters], properties=props)

    # --- paho callbacks (paho's thread) ----------------------------------------------------------
    def _on_connect(self, client, userdata, flags, reason_code, properties):
        if reason_code.is_failure:
            log.warning("broker refused the connection: %s", reason_code)
            return
        if self._online:
            client.publish(self._online[0], self._online[1], qos=1, retain=True)
        # paho re-sends the PUBLISHes that were in flight when the broker went away only after
        # this callback returns: drain our buffer after them (from the loop), or order breaks
        self.loop.call_soon_threadsafe(self._drain)

    def _drain(self) -> None:
        """On the loop, after paho's re-sends: publish the buffer in order, then go live."""
        if not self.client.is_connected():
            return  # lost again already: the next connect drains
        # subscribe here, on the loop where subscribe() runs: a station registering between a
        # snapshot taken on paho's thread and `connected` turning true would lose its filter
        by_id: dict[int, list[str]] = collections.defaultdict(list)
        for topic_filter, sub_id in self._filters.items():
            by_id[sub_id].append(topic_filter)
        for sub_id, filters in by_id.items():
            for i in range(0, len(filters), SUBSCRIBE_BATCH):
                self._subscribe_batch(filters[i : i + SUBSCRIBE_BATCH], sub_id)
        with self._lock:
            # drain in order before new publishes may bypass the buffer
            while self._buffer:
                item = self._buffer.popleft()
                if not item.cancelled:
                    self._send(item)
                    metrics.handed_over(item)
            self.connected = True
        log.info("connected to broker %s:%s", self.host, self.port)
        self._state(True)

    def _on_disconnect(self, client, userdata, flags, reason_code, properties):
        # never self._lock here: paho may call this holding its _out_message_mutex (CONNACK
        # re-sends, then a DISCONNECT written), which _drain, holding self._lock, waits for in
        # client.publish(): a deadlock that froze the event loop. A bool swap needs no lock.
        was, self.connected = self.connected, False
        if was:
            self.disconnected_since = time.monotonic()
            log.warning(
                "lost the broker (%s); buffering up to %d messages", reason_code, self.buffer_len
            )
            self.loop.call_soon_threadsafe(self._reclaim)
            self.loop.call_soon_threadsafe(self._state, False)

    def _on_message(self, client, userdata, message):
        props = message.properties
        sub_ids = getattr(props, "SubscriptionIdentifier", None) if props else None
        self.loop.call_soon_threadsafe(
            self._deliver, message.topic, message.payload, props, sub_ids
        )

    # --- back on the loop ------------------------------------------------------------------------
    def _state(self, connected: bool) -> None:
        if self.on_state:
            self.on_state(connected)

    def _deliver(self, topic, payload, props, sub_ids) -> None:
        if self.on_message:
            try:
                self.on_message(topic, payload, props, sub_ids)
            except Exception:
                log.exception("handling a message on %s failed", topic)
