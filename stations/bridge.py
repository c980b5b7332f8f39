"""The process's one MQTT connection: publish, per-station subscriptions, reconnect, buffering.

paho's network I/O runs on the event loop (its external-loop API: socket callbacks,
`loop_read`/`loop_write`/`loop_misc`), so callbacks run on the loop and `publish()` costs no thread
hand-over. With paho's own thread every frame crossed threads twice (publish, PUBACK) and the
two threads fought for the GIL on two cores: ~200 us of CPU per frame (measured). Only the TCP
connect runs on a worker thread, as paho's connect blocks. The bridge moves bytes; it knows
nothing of OCPP.

While the broker is away, publishes wait in a bounded FIFO of our own (not paho's queue) so that a
CALL whose call timeout runs out can be withdrawn before it is ever published (docs/contract.md §2).
"""

import asyncio
import collections
import contextlib
import logging
import socket
import threading
import time

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from stations import metrics, mqtt_url
from stations.subscriptions import Subscriptions

log = logging.getLogger("ocppgw.bridge")

RECONNECT_MIN_S, RECONNECT_MAX_S = 1.0, 5.0  # stations should not wait half a minute
KEEPALIVE_S = 30
READ_BATCH = 100  # packets read per wake-up at most: other sockets get their turn
ROUTED_SUB_ID, WATCH_SUB_ID = 1, 2  # MQTT 5 subscription identifiers: which filter matched


class Pending:
    """A publish waiting for the broker; `cancel()` withdraws it if it has not gone out yet."""

    __slots__ = (
        "cancelled", "done", "payload", "properties", "qos", "received", "retain", "sent", "topic",
    )  # fmt: skip

    def __init__(self, topic, payload, qos, retain, properties):
        self.topic, self.payload, self.qos = topic, payload, qos
        self.retain, self.properties = retain, properties
        self.cancelled = self.sent = False
        self.received = None  # arrival of the station frame, set while buffered (metrics)
        self.done = None  # called once the broker acknowledged it, or it was withdrawn

    def cancel(self) -> bool:
        """Withdraw the message; False when it already went to the broker."""
        if self.sent:
            return False
        self.cancelled = True
        self._finish()
        return True

    def _finish(self) -> None:
        # a station CALL keeps its Pending until answered: without its payload (orjson's buffer
        # is ~4 KiB however small the frame), 10,000 unanswered CALLs hold KiBs, not 40 MB
        self.payload = None
        done, self.done = self.done, None
        if done is not None:
            done()


class _NoFilters:
    """paho's filtered-callback table when there are none: matches nothing, allocates nothing."""

    @staticmethod
    def iter_match(topic):
        return ()


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
        self.connected_at = 0.0
        self.disconnected_since = time.monotonic()
        self.dropped = 0
        self._buffer: collections.deque[Pending] = collections.deque()
        self._unacked: dict[int, Pending] = {}  # mid -> sent, not yet acknowledged (QoS > 0)
        self._lock = threading.Lock()
        self.subscriptions = Subscriptions(self)
        self._online = online  # (topic, payload) published retained on every connect
        self._tasks: list[asyncio.Task] = []
        self._lost = asyncio.Event()  # the socket closed: the supervisor reconnects
        self._leaving = False  # stop() said goodbye: the disconnect that follows is no outage
        self._stopping = False
        self._connecting = False  # a worker thread is inside paho's connect
        self._fd: int | None = None  # the socket registered with the loop
        self._write_soon = False
        self._window = 65535  # the broker's Receive Maximum (MQTT 5), read from its CONNACK
        self._pump_soon = False
        self.v5 = protocol == "5"
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=f"ocppgw-{node}"[:64],
            protocol=mqtt.MQTTv5 if self.v5 else mqtt.MQTTv311,
            **({} if self.v5 else {"clean_session": True}),
        )
        self.host, self.port = mqtt_url.configure(self.client, url)
        # paho's own in-flight window rescans every queued message on each PUBACK (O(n) per
        # acknowledgement: a third of the CPU at 1,000 in flight), and it ignores the broker's
        # Receive Maximum: the bridge keeps that window itself (_window, _pump)
        self.client.max_inflight_messages_set(0)
        self.client.max_queued_messages_set(0)
        if will:
            self.client.will_set(will[0], will[1], qos=1, retain=True)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        # no per-filter callbacks here; paho still matches every message against its (empty)
        # filter tree with a recursive closure, a reference cycle per message that only a full
        # GC pass frees (rare in rungateway): skip the matching
        self.client._on_message_filtered = _NoFilters()
        self.client.on_publish = self._on_publish
        self.client.on_socket_open = self._on_socket_open
        self.client.on_socket_close = self._on_socket_close
        self.client.on_socket_register_write = self._on_register_write
        self.client.on_socket_unregister_write = self._on_unregister_write

    # --- lifecycle -------------------------------------------------------------------------------
    def start(self) -> None:
        """Connect in the background, retrying with backoff until the broker answers."""
        self.client.connect_async(self.host, self.port, keepalive=KEEPALIVE_S)
        self._loop_thread = threading.get_ident()
        self._tasks = [
            self.loop.create_task(self._connect_forever()),
            self.loop.create_task(self._keepalive_forever()),
        ]

    async def _connect_forever(self) -> None:
        delay = RECONNECT_MIN_S
        while not self._stopping:
            self._lost.clear()
            self._connecting = True
            try:
                await asyncio.to_thread(self.client.reconnect)
            except Exception as exc:  # refused, unreachable, TLS, DNS: try again
                log.debug("cannot reach the broker %s:%s: %s", self.host, self.port, exc)
            else:
                self._connecting = False
                await self._lost.wait()
                if self.connected_at and time.monotonic() - self.connected_at > RECONNECT_MAX_S:
                    delay = RECONNECT_MIN_S  # a working session ended: retry soon
            finally:
                self._connecting = False
            if self._stopping:
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, RECONNECT_MAX_S)

    async def _keepalive_forever(self) -> None:
        # PINGREQ when due, and a broker that stopped answering pings counts as lost
        while True:
            await asyncio.sleep(1.0)
            if not self._connecting and self.client.socket() is not None:
                self.client.loop_misc()

    async def stop(self, goodbye=None, timeout_s: float = 5.0) -> None:
        """Publish `goodbye` (retained, acknowledged), let queued publishes out, disconnect."""
        deadline = time.monotonic() + timeout_s
        if goodbye and self.connected:
            # subscribers see the goodbye; the empty retained message then clears the topic, so
            # the node topics of past processes do not pile up on the broker
            infos = [
                self.client.publish(goodbye[0], payload, qos=1, retain=True)
                for payload in (goodbye[1], b"")
            ]
            while self.connected and time.monotonic() < deadline:
                try:
                    if all(info.is_published() for info in infos):
                        break
                except (RuntimeError, ValueError):
                    break  # not queued (the broker went away meanwhile)
                await asyncio.sleep(0.01)
        # paho's queue has no event to wait on: poll it, bounded by the deadline
        while self.connected and self.client.want_write() and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        self._stopping = True
        self._leaving = True
        self.client.disconnect()
        if self.client.socket() is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._lost.wait(), max(0.1, deadline - time.monotonic()))
        for task in self._tasks:
            task.cancel()
        self._unwatch()

    # --- the socket on the loop ------------------------------------------------------------------
    def _on_loop(self, fn, *args) -> None:
        # paho calls the socket callbacks from the connect thread too
        if threading.get_ident() == self._loop_thread:
            fn(*args)
        elif not self.loop.is_closed():  # a connect can outlive a stopped loop
            self.loop.call_soon_threadsafe(fn, *args)

    def _on_socket_open(self, client, userdata, sock) -> None:
        self._on_loop(self._watch, sock.fileno())

    def _on_socket_close(self, client, userdata, sock) -> None:
        self._on_loop(self._closed)

    def _on_register_write(self, client, userdata, sock) -> None:
        self._on_loop(self._want_write)

    def _on_unregister_write(self, client, userdata, sock) -> None:
        pass  # _flush removes the writer once paho has nothing left to write

    def _watch(self, fd: int) -> None:
        self._unwatch()
        self._fd = fd
        self.loop.add_reader(fd, self._read)

    def _unwatch(self) -> None:
        if self._fd is not None:
            self.loop.remove_reader(self._fd)
            self.loop.remove_writer(self._fd)
            self._fd = None

    def _read(self) -> None:
        # paho reads one packet per loop_read while little is in flight: keep reading while bytes
        # wait, or a burst (retained messages at subscribe) trickles in one per loop iteration
        # while the broker's in-flight window for us stays full
        for _ in range(READ_BATCH):
            self.client.loop_read()
            sock = self.client.socket()
            if sock is None:
                return
            if hasattr(sock, "pending"):  # TLS: decrypted bytes the selector cannot see
                if sock.pending():
                    continue
                return
            try:
                if not sock.recv(1, socket.MSG_PEEK):
                    return  # EOF: the next loop_read notices
            except OSError:  # BlockingIOError: nothing waiting
                return

    def _closed(self) -> None:
        self._unwatch()
        self._write_soon = False
        self._lost.set()

    def _want_write(self) -> None:
        # one write per loop iteration for everything queued meanwhile, not one per publish
        if not self._write_soon and self._fd is not None:
            self._write_soon = True
            self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._write_soon = False
        if self._fd is None:
            return
        self.client.loop_write()
        if self._fd is None:
            return  # the write found the socket broken: closed meanwhile
        if self.client.want_write():  # the socket buffer is full: wait until it drains
            self.loop.add_writer(self._fd, self._flush)
        else:
            self.loop.remove_writer(self._fd)

    # --- publish ---------------------------------------------------------------------------------
    def publish(self, topic: str, payload: bytes, *, qos=None, retain=False, properties=None):
        """Queue a publish; returns a Pending that can be withdrawn while the broker is away."""
        item = Pending(topic, payload, self.qos if qos is None else qos, retain, properties)
        with self._lock:
            if self.connected and not self._buffer and len(self._unacked) < self._window:
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
                item._finish()
        else:
            item._finish()

    def _on_publish(self, client, userdata, mid, reason_code, properties):
        # PUBACK (QoS 1) or PUBCOMP (QoS 2): the broker has it
        item = self._unacked.pop(mid, None)
        if item is not None:
            item._finish()
        if self._buffer and self.connected and not self._pump_soon:
            self._pump_soon = True
            self.loop.call_soon(self._pump)

    def _pump(self) -> None:
        """Send buffered publishes, in order, while the broker's window has room."""
        self._pump_soon = False
        with self._lock:
            while self._buffer and len(self._unacked) < self._window:
                item = self._buffer.popleft()
                if not item.cancelled:
                    self._send(item)
                    metrics.handed_over(item)

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

    @staticmethod
    def forwarded_properties(received):
        """A received message's reply address, for publishing it again (MQTT 5; None on 3.1.1)."""
        if received is None:
            return None
        props = Properties(PacketTypes.PUBLISH)
        for name in ("ResponseTopic", "CorrelationData"):
            value = getattr(received, name, None)
            if value is not None:
                setattr(props, name, value)
        return props

    # --- subscriptions ---------------------------------------------------------------------------
    def subscribe(self, topic_filter: str, sub_id: int = ROUTED_SUB_ID, qos=None):
        """Subscribe now and after every reconnect; `qos` defaults to the bridge's QoS.

        Batched with the loop turn's other changes (subscriptions.py). Returns a future done once
        the SUBSCRIBE is queued on the connection, so that whatever is published after awaiting
        it reaches the broker after the subscription (None while disconnected).
        """
        return self.subscriptions.add(topic_filter, sub_id, self.qos if qos is None else qos)

    def unsubscribe(self, topic_filter: str) -> None:
        self.subscriptions.remove(topic_filter)

    # --- paho callbacks (on the loop) ------------------------------------------------------------
    def _on_connect(self, client, userdata, flags, reason_code, properties):
        if reason_code.is_failure:
            log.warning("broker refused the connection: %s", reason_code)
            return
        self.connected_at = time.monotonic()
        # paho leaves Nagle on: a publish written while the previous segment is unacknowledged
        # waited for the broker's delayed ACK, ~40 ms p99 at low rates (bench T9)
        sock = client.socket()
        if sock is not None and getattr(sock, "family", None) in (socket.AF_INET, socket.AF_INET6):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # MQTT 5: at most this many QoS>0 publishes unacknowledged (Mosquitto's default is 20)
        self._window = getattr(properties, "ReceiveMaximum", None) or 65535
        # paho re-sends the PUBLISHes that were in flight when the broker went away only after
        # this callback returns: drain our buffer after them, or order breaks
        self.loop.call_soon(self._drain)

    def _drain(self) -> None:
        """On the loop, after paho's re-sends: publish the buffer in order, then go live."""
        if not self.client.is_connected():
            return  # lost again already: the next connect drains
        # subscribe here, on the loop where subscribe() runs: a station registering between a
        # snapshot taken on paho's thread and `connected` turning true would lose its filter
        self.subscriptions.resubscribe_all()
        if self._online:
            # after the subscriptions: of two nodes starting together, at least one then sees
            # the other's status live (the 3.1.1 election, inbox.py, needs no retained delivery)
            self.client.publish(self._online[0], self._online[1], qos=1, retain=True)
        self._pump()  # in order, before new publishes may bypass the buffer
        self.connected = True
        log.info("connected to broker %s:%s", self.host, self.port)
        self._state(True)

    def _on_disconnect(self, client, userdata, flags, reason_code, properties):
        # paho may call this holding its _out_message_mutex: take the rest out of the callback
        was, self.connected = self.connected, False
        if was and self._leaving:
            log.info("disconnected from broker %s:%s (stopping)", self.host, self.port)
        elif was:
            self.disconnected_since = time.monotonic()
            log.warning(
                "lost the broker (%s); buffering up to %d messages", reason_code, self.buffer_len
            )
            self.loop.call_soon(self._reclaim)
            self.loop.call_soon(self._state, False)

    def _on_message(self, client, userdata, message):
        props = message.properties
        sub_ids = getattr(props, "SubscriptionIdentifier", None) if props else None
        self._deliver(message.topic, message.payload, props, sub_ids)

    def _state(self, connected: bool) -> None:
        if self.on_state:
            self.on_state(connected)

    def _deliver(self, topic, payload, props, sub_ids) -> None:
        if self.on_message:
            try:
                self.on_message(topic, payload, props, sub_ids)
            except Exception:
                log.exception("handling a message on %s failed", topic)
