"""The gateway process's composition root: its parts, the port conversations act through, its life.

One Gateway per process, created lazily from inside the running loop by `get_gateway()` (Daphne
sends no lifespan events, and `AppConfig.ready()` also runs for `migrate` and tests). Frames
never leave this process except to the broker; Redis (cluster.py) only carries claims and kicks
between processes (docs/architecture.md draws the data path).
"""

import asyncio
import collections
import datetime
import logging
import os
import resource
import socket
import time

import orjson
from django.conf import settings

from stations import admission, envelopes, metrics, refusals, services, topics, validation
from stations.bridge import Bridge
from stations.cluster import Cluster
from stations.dbthread import DbThread
from stations.gatekeeper import Gatekeeper
from stations.housekeeping import Housekeeping
from stations.inbox import Inbox
from stations.limits import TokenBucket, station_limit
from stations.live import LiveFeed
from stations.msglog import Writer
from stations.policy import ValidationPolicy
from stations.port import StationInfo
from stations.registry import Registry
from stations.rules import RuleSet

log = logging.getLogger("ocppgw.gateway")


SCHEMAS_WARMED = "compiled every OCPP schema"  # logged once; memory tests wait for it


def default_node() -> str:
    return settings.OCPPGW_NODE or f"{socket.gethostname()}:{os.getpid()}"


class Gateway:
    """Implements stations.port.GatewayPort for every conversation of this process."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        s = self.settings = settings
        self.loop = loop
        self.node = default_node()
        self.started_at = time.time()
        self.rules = RuleSet(
            {
                "upstream": s.OCPPGW_UPSTREAM_TOPIC,
                "reply": s.OCPPGW_REPLY_TOPIC,
                "error": s.OCPPGW_ERROR_TOPIC,
                "downstream": s.OCPPGW_DOWNSTREAM_TOPIC,
                "notice": s.OCPPGW_NOTICE_TOPIC,
            }
        )
        self.policy = ValidationPolicy(s.OCPPGW_VALIDATION)
        self.db = DbThread()
        self.writer = Writer(
            max_rows=s.OCPPGW_LOG_QUEUE,
            flush_s=s.OCPPGW_LOG_FLUSH_S,
            payload_bytes=s.OCPPGW_LOG_PAYLOAD_BYTES,
            enabled=s.OCPPGW_LOG_ENABLED,
            run=self.db.run,
        )
        self.live = LiveFeed(loop)
        self.writer.on_flushed = self.live.flushed
        self.gatekeeper = Gatekeeper(s)
        self.accepting = True  # false after the broker grace period, and while shutting down
        nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        nofile = 2**31 if nofile == resource.RLIM_INFINITY else nofile  # no fd limit
        self.max_stations = station_limit(s.OCPPGW_MAX_STATIONS, nofile)
        self.handshaking = 0  # WebSocket handshakes in the consumer, not yet held or refused
        # () -> open WebSocket sockets, handshakes included: set by the edge (ocppgw/edge/serve.py);
        # None under another ASGI server (tests), where held + handshaking stand for it
        self.open_sockets = None
        # () -> WebSocket handshakes in progress at the edge (same origin; None: only the
        # password checks queued bound a burst)
        self.edge_handshakes = None
        self._early = collections.Counter()  # refusals before the upgrade since the last log line
        self._early_logged = 0.0
        self.inbox = Inbox(self)
        self.housekeeping = Housekeeping(self)
        self._node_topic = f"ocpp/gw/nodes/{self.node}"
        self.bridge = Bridge(
            loop,
            s.MQTT_URL,
            node=self.node,
            protocol=s.OCPPGW_MQTT_PROTOCOL,
            qos=s.OCPPGW_MQTT_QOS,
            buffer_len=s.OCPPGW_MQTT_BUFFER,
            on_message=self.inbox.on_message,
            on_state=self.housekeeping.on_broker_state,
            will=(self._node_topic, self._node_status("offline")),
            online=(self._node_topic, self._node_status("online")),
        )
        self.cluster = Cluster(
            s.REDIS_URL,
            self.node,
            on_claim=lambda *claim: self.registry.on_claim(*claim),
            on_kick=lambda *kick: self.registry.on_kick(*kick),
            held=lambda: self.registry.claims(),
            # claims tell the node's other processes which password was verified (gatekeeper.py)
            tag=self.gatekeeper.tag,
            on_tag=self.gatekeeper.verified_elsewhere,
        )
        self.registry = Registry(self.bridge, self.cluster, self.rules)
        self._tasks: list[asyncio.Task] = []
        self.warmed = asyncio.Event()  # every schema compiled (_warm)

    def _node_status(self, status: str) -> bytes:
        at = datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds")
        group = self.settings.OCPPGW_SHARE_GROUP  # the deployment: what 3.1.1 elections count
        return orjson.dumps({"node": self.node, "status": status, "at": at, "group": group})

    def announce(self) -> None:
        """Publish this node's retained "online" status again (inbox.py: the 3.1.1 election)."""
        self.bridge.publish(self._node_topic, self._node_status("online"), qos=1, retain=True)

    def start(self) -> None:
        self.bridge.start()
        self.writer.start()
        self.inbox.subscribe(self.bridge, self.settings)
        self.registry.fleet_wide = bool(self.inbox.fleet_filter)
        jobs = [*self.housekeeping.jobs(), self.cluster.run(), metrics.sample_forever(self)]
        jobs.append(self._warm())
        self._tasks = [self.loop.create_task(job) for job in jobs]

    async def _warm(self) -> None:
        """Compile every schema off the loop as soon as the process serves.

        The boot path's schemas are compiled before listening (ocppgw/edge/serve.py); the rest is
        ~0.1 s loaded from the schema cache (stations/schema_cache.py), ~2.6 CPU-s compiled
        without it (7 s on a busy machine). Deferring it to a quiet moment (tried: 3 s without a
        handshake) moved those seconds of GIL-bound work into whatever the process did next, a
        flood or a churn of stations (tests/reliability), so it runs first; a frame of another
        action arriving meanwhile compiles its schema on first use.
        """
        started = time.monotonic()
        for name in self.settings.OCPPGW_SUBPROTOCOLS:
            await self.loop.run_in_executor(None, validation.warm, name.removeprefix("ocpp"))
        log.info("%s in %.1f s", SCHEMAS_WARMED, time.monotonic() - started)
        self.warmed.set()

    # --- the port (stations/port.py) ----------------------------------------------------------------
    def publish(self, direction, station: StationInfo, action, frame, body: bytes):
        """Publish a station's frame on its rendered topic; returns (Pending or None, topic)."""
        topic = self._topic(direction, station, action, frame.id, frame.type)
        return self.bridge.publish(topic, body), topic

    def publish_raw(self, kind, station: StationInfo, action, unique_id, body: bytes) -> str:
        """Publish a gateway-written envelope on the station's error or notice topic."""
        topic = self._topic(kind, station, action, unique_id, 4)
        self.bridge.publish(topic, body)
        return topic

    def _topic(self, kind, station, action, unique_id, frame_type) -> str:
        return topics.render(
            self.rules.template(kind, action, station.cid_key),
            cid=station.cid,
            action=action or "Unknown",
            id=unique_id,
            type=frame_type,
            version=station.version,
        )

    def respond(self, response_topic: str, correlation, body: bytes) -> None:
        """MQTT 5 request/response: the answer also goes to the backend's Response Topic."""
        self.bridge.publish(
            response_topic, body, properties=Bridge.response_properties(correlation)
        )

    def publish_presence(self, cid, status, connection_id, version, reason) -> None:
        body = envelopes.presence(cid, status, connection_id, self.node, version, reason)
        topic = topics.render(self.settings.OCPPGW_PRESENCE_TOPIC, cid=cid, version=version)
        self.bridge.publish(topic, body, qos=1, retain=True)

    def check(self, direction, version, action, kind, payload):
        """A schema violation for this frame, honouring the validation policy."""
        return self.policy.check(direction, version, action, kind, payload)

    def new_bucket(self) -> TokenBucket:
        s = self.settings
        return TokenBucket(s.OCPPGW_RATE_PER_S, s.OCPPGW_RATE_BURST, time.monotonic())

    def store_password(self, station: StationInfo, secret: str) -> None:
        self.gatekeeper.forget(station.cid_key)
        grace = self.settings.OCPPGW_ROTATION_GRACE_S
        task = self.loop.create_task(
            self.db.run(services.rotate_password, station.station_id, secret, grace)
        )
        task.add_done_callback(lambda t: _log_failed_store(t, station.cid))

    def unregister(self, conversation) -> bool:
        return self.registry.unregister(conversation)

    # --- connections ----------------------------------------------------------------------------------
    def refuse_early(self, raw_path: bytes, authorization: bytes | None) -> int | None:
        """Asked by the edge before it builds the application: the Retry-After of a retryable
        refusal decided now (admission.refuse_early), else None. Counted in /metrics; logged as
        a count at most every 10 s (a storm refuses thousands)."""
        refusal = admission.refuse_early(self, raw_path, authorization)
        if refusal is None:
            return None
        metrics.refused(refusal)
        self._early[refusal.label] += 1
        now = time.monotonic()
        if now - self._early_logged >= 10:
            counts = ", ".join(f"{n} {label}" for label, n in sorted(self._early.items()))
            log.info("refused before the upgrade (HTTP 503): %s", counts)
            self._early.clear()
            self._early_logged = now
        return refusals.retry_after(self.settings.OCPPGW_RETRY_AFTER_S)

    async def attach(self, conversation, address: str) -> None:
        """A station's handshake is done: hold it, and tell the broker and the log."""
        st = conversation.station
        await self.registry.register(conversation)
        self.publish_presence(st.cid, "connected", st.connection_id, st.version, "connected")
        self.writer.connected(st.station_id, st.connection_id, self.node, st.version)
        self.writer.add(
            cid=st.cid,
            station_id=st.station_id,
            direction="gw",
            outcome="connected",
            reason=f"OCPP {st.version} from {address}",
        )

    async def shutdown(self) -> None:
        """Stop accepting, close every held station (1001; spread over OCPPGW_DRAIN_S), tell the
        broker they are gone, flush the log, disconnect."""
        self.accepting = False
        held = self.registry.all()
        # a drain spreads the reconnects over the other nodes instead of one storm at the end
        pause_s = self.settings.OCPPGW_DRAIN_S / len(held) if held else 0
        if pause_s:
            log.info("draining %d stations over %ds", len(held), self.settings.OCPPGW_DRAIN_S)
        for n, conversation in enumerate(held):
            if pause_s and n:
                await asyncio.sleep(pause_s)
            if not conversation.finished:
                conversation.kick("gateway shutting down", code=1001)
                conversation.finish("gateway shutting down")
        await self.writer.stop()
        await self.cluster.stop()
        await self.gatekeeper.close()
        for task in self._tasks:
            task.cancel()
        await self.bridge.stop((self._node_topic, self._node_status("offline")))
        await self.db.close()


def _log_failed_store(task: asyncio.Task, cid: str) -> None:
    if not task.cancelled() and task.exception():
        log.error("%s: storing the new password failed: %s", cid, task.exception())


_gateway: Gateway | None = None


def get_gateway() -> Gateway:
    """The process's gateway, started on first use inside the running loop."""
    global _gateway
    loop = asyncio.get_running_loop()
    if _gateway is None or _gateway.loop is not loop:
        if _gateway is not None:
            _gateway.db.close()  # a test's loop ended without shutdown: free its connection
        _gateway = Gateway(loop)
        _gateway.start()
    return _gateway


def current() -> Gateway | None:
    """The running gateway of this process, if any (for sync callers such as portal views)."""
    return _gateway
