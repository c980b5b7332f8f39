"""The gateway process: its MQTT bridge, the stations it holds, rules, and housekeeping.

One Gateway per process, created lazily from inside the running loop by `get_gateway()` (Daphne
sends no lifespan events, and `AppConfig.ready()` also runs for `migrate` and tests).
Frames never leave this process except to the broker; Redis (cluster.py) only carries claims
and kicks between processes.
"""

import asyncio
import datetime
import logging
import os
import socket
import time

import orjson
from django.conf import settings
from django.db import DatabaseError

from stations import envelopes, identity, metrics, topics, validation
from stations.bridge import ROUTED_SUB_ID, WATCH_SUB_ID, Bridge
from stations.cluster import Cluster
from stations.dbthread import DbThread
from stations.gatekeeper import Gatekeeper
from stations.limits import TokenBucket
from stations.msglog import Writer
from stations.rules import Rule, RuleSet

log = logging.getLogger("ocppgw.gateway")

PRESENCE_SUB_ID, NODES_SUB_ID = 3, 4
POLL_S = 1.0  # rules, exemptions and credential changes reach every process within this
OFFLINE_GRACE_S = 0.5  # a station may be connecting right now somewhere: look again first
PRUNE_EVERY_S = 3600


def default_node() -> str:
    return settings.OCPPGW_NODE or f"{socket.gethostname()}:{os.getpid()}"


class Gateway:
    def __init__(self, loop: asyncio.AbstractEventLoop):
        s = self.settings = settings
        self.loop = loop
        self.node = default_node()
        self.started_at = time.time()
        self.sessions: dict[str, object] = {}  # cid_key -> consumer holding the station here
        self.rules = RuleSet(
            {
                "upstream": s.OCPPGW_UPSTREAM_TOPIC,
                "reply": s.OCPPGW_REPLY_TOPIC,
                "error": s.OCPPGW_ERROR_TOPIC,
                "downstream": s.OCPPGW_DOWNSTREAM_TOPIC,
                "notice": s.OCPPGW_NOTICE_TOPIC,
            }
        )
        self.exemptions: frozenset[tuple[str, str]] = frozenset()
        self.db = DbThread()
        self.writer = Writer(
            max_rows=s.OCPPGW_LOG_QUEUE,
            flush_s=s.OCPPGW_LOG_FLUSH_S,
            payload_bytes=s.OCPPGW_LOG_PAYLOAD_BYTES,
            enabled=s.OCPPGW_LOG_ENABLED,
            run=self.db.run,
        )
        self.gatekeeper = Gatekeeper(s)
        self.presence: dict[str, dict] = {}  # cid_key -> last presence event seen on the broker
        self.accepting = True  # false after the broker grace period, and while shutting down
        self._grace_timer: asyncio.TimerHandle | None = None
        self._node_topic = f"ocpp/gw/nodes/{self.node}"
        self._matcher = topics.downstream_matcher(s.OCPPGW_DOWNSTREAM_TOPIC)
        self._presence_matcher = topics.downstream_matcher(s.OCPPGW_PRESENCE_TOPIC)
        self.bridge = Bridge(
            loop,
            s.MQTT_URL,
            node=self.node,
            protocol=s.OCPPGW_MQTT_PROTOCOL,
            qos=s.OCPPGW_MQTT_QOS,
            buffer_len=s.OCPPGW_MQTT_BUFFER,
            on_message=self._on_message,
            on_state=self._on_broker_state,
            will=(self._node_topic, self._node_status("offline")),
            online=(self._node_topic, self._node_status("online")),
        )
        self.cluster = Cluster(s.REDIS_URL, self.node, self._on_claim, self._on_kick)
        self._tasks: list[asyncio.Task] = []
        self._rules_version = None

    def _node_status(self, status: str) -> bytes:
        return orjson.dumps({"node": self.node, "status": status, "at": _iso_now()})

    def start(self) -> None:
        self.bridge.start()
        self.writer.start()
        if self.bridge.v5:
            # offline detection: one process of the group sees each command for any station
            watch = topics.wildcard_filter(self.settings.OCPPGW_DOWNSTREAM_TOPIC)
            self.bridge.subscribe(f"$share/ocppgw/{watch}", WATCH_SUB_ID)
            # QoS 0: on subscribe the broker sends every retained presence of the fleet; at QoS 1
            # they fill its in-flight window and queue for us (Mosquitto drops past 1,000 queued,
            # backend commands included). Presence is state, and the next change repeats it
            presence = topics.wildcard_filter(self.settings.OCPPGW_PRESENCE_TOPIC)
            self.bridge.subscribe(presence, PRESENCE_SUB_ID, qos=0)
            self.bridge.subscribe("ocpp/gw/nodes/+", NODES_SUB_ID, qos=0)
        # compiling the 2.1 schemas takes ~2 s: do it off the loop before stations need them
        for name in self.settings.OCPPGW_SUBPROTOCOLS:
            self.loop.run_in_executor(None, validation.warm, name.removeprefix("ocpp"))
        jobs = [self._poll_forever(), self._prune_forever(), self.cluster.run()]
        jobs.append(metrics.sample_forever(self))
        if self.settings.OCPPGW_IDLE_TIMEOUT_S:
            jobs.append(self._close_idle_forever(self.settings.OCPPGW_IDLE_TIMEOUT_S))
        for job in jobs:
            self._tasks.append(self.loop.create_task(job))

    # --- publishing --------------------------------------------------------------------------------
    def publish(self, direction, session, action, frame, body: bytes):
        """Publish a station's frame on its rendered topic; returns (Pending or None, topic)."""
        template = self.rules.template(direction, action, session.cid_key)
        topic = topics.render(
            template,
            cid=session.cid,
            action=action or "Unknown",
            id=frame.id,
            type=frame.type,
            version=session.version,
        )
        return self.bridge.publish(topic, body), topic

    def publish_raw(self, kind, session, action, unique_id, body: bytes) -> str:
        """Publish a gateway-written envelope on the station's error or notice topic."""
        template = self.rules.template(kind, action, session.cid_key)
        topic = topics.render(
            template,
            cid=session.cid,
            action=action or "Unknown",
            id=unique_id,
            type=4,
            version=session.version,
        )
        self.bridge.publish(topic, body)
        return topic

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
        """A schema violation for this frame, honouring the validation mode and exemptions."""
        mode = self.settings.OCPPGW_VALIDATION
        if mode == "off" or (mode != "all" and mode != direction):
            return None
        if (action, direction) in self.exemptions or (action, "both") in self.exemptions:
            return None
        return validation.check(version, action, kind, payload)

    def new_bucket(self) -> TokenBucket:
        s = self.settings
        return TokenBucket(s.OCPPGW_RATE_PER_S, s.OCPPGW_RATE_BURST, time.monotonic())

    # --- stations held here ------------------------------------------------------------------------
    async def register(self, consumer) -> None:
        """Make `consumer` the station's current connection, replacing any older one anywhere."""
        old = self.sessions.get(consumer.cid_key)
        self.sessions[consumer.cid_key] = consumer
        if old is not None and old is not consumer:
            old.replaced()
        self.bridge.subscribe(self._downstream_filter(consumer))
        await self.cluster.claim(consumer.cid_key, consumer.connection_id, consumer.claim_seq)

    def unregister(self, consumer) -> bool:
        """Forget a connection; True when it was the station's current one."""
        if self.sessions.get(consumer.cid_key) is not consumer:
            return False
        del self.sessions[consumer.cid_key]
        self.bridge.unsubscribe(self._downstream_filter(consumer))
        return not self.cluster.superseded(consumer.cid_key, consumer.claim_seq)

    def _downstream_filter(self, consumer) -> str:
        template = self.rules.template("downstream", None, consumer.cid_key)
        return topics.downstream_filter(template, consumer.cid, consumer.version)

    def _on_claim(self, cid_key: str, connection_id: str, seq: int) -> None:
        held = self.sessions.get(cid_key)
        if held is not None and held.connection_id != connection_id and held.claim_seq < seq:
            held.replaced()

    def _on_kick(self, cid_key: str, reason: str) -> None:
        held = self.sessions.get(cid_key)
        if held is not None:
            held.kick(reason)

    # --- messages from the broker (on the loop) ----------------------------------------------------
    def _on_message(self, topic: str, payload: bytes, props, sub_ids) -> None:
        if sub_ids is None or ROUTED_SUB_ID in sub_ids:
            if self._route(topic, payload, props):
                return
        if not sub_ids:
            return
        if WATCH_SUB_ID in sub_ids:
            self._watch(topic, payload, props)
        elif PRESENCE_SUB_ID in sub_ids:
            self._presence_seen(topic, payload)
        elif NODES_SUB_ID in sub_ids:
            self._node_seen(topic, payload)

    def _cid_of(self, topic: str) -> str | None:
        """The station a downstream topic addresses (as written in the topic), or None."""
        match = self._matcher.match(topic)
        if match is None and self.rules.has_station_rules:
            for template in self.rules.station_templates("downstream"):
                match = topics.downstream_matcher(template).match(topic)
                if match:
                    break
        return topics.unescape_cid(match.group("cid")) if match else None

    def _route(self, topic, payload, props) -> bool:
        cid = self._cid_of(topic)
        cid_key = identity.key(cid) if cid else None
        consumer = self.sessions.get(cid_key) if cid_key else None
        if consumer is None:
            return False
        consumer.session.on_downstream(payload, props)
        return True

    def _watch(self, topic, payload, props) -> None:
        cid = self._cid_of(topic)
        if cid is None:
            return
        cid_key = identity.key(cid)
        if cid_key in self.sessions or self._online_elsewhere(cid_key):
            return
        self.loop.call_later(OFFLINE_GRACE_S, self._offline_if_still, cid, payload, props)

    def _online_elsewhere(self, cid_key: str) -> bool:
        event = self.presence.get(cid_key)
        return bool(event and event.get("status") == "connected")

    def _offline_if_still(self, cid, payload, props) -> None:
        """A backend message for a station no gateway process holds: say so, never stay silent."""
        from stations.session import OfflineStation

        cid_key = identity.key(cid)
        if cid_key in self.sessions or self._online_elsewhere(cid_key):
            return
        OfflineStation(self, cid, cid_key).on_downstream(payload, props)

    def _presence_seen(self, topic: str, payload: bytes) -> None:
        try:
            event = orjson.loads(payload)
            cid_key = identity.key(event["cid"])
        except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
            return
        # only stations connected somewhere are kept: memory follows the live fleet
        if event.get("status") == "connected":
            self.presence[cid_key] = event
        else:
            self.presence.pop(cid_key, None)

    def _node_seen(self, topic: str, payload: bytes) -> None:
        try:
            event = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return  # an empty payload: the retained status was cleared
        if not isinstance(event, dict) or event.get("status") != "offline":
            return
        if event.get("node") == self.node:
            return
        # clear the dead node's retained status once handled, so old nodes do not pile up
        self.bridge.publish(topic, b"", qos=1, retain=True)
        dead = event.get("node")
        # the node died: its stations are gone; a live reconnect elsewhere is not touched
        for seen in list(self.presence.values()):
            if seen.get("node") == dead and seen.get("status") == "connected":
                self.publish_presence(
                    seen["cid"],
                    "disconnected",
                    seen.get("connection", ""),
                    seen.get("version", ""),
                    f"node {dead} lost",
                )
        self.loop.create_task(self.db.run(_release_node, dead))

    # --- broker outage -------------------------------------------------------------------------------
    def _on_broker_state(self, connected: bool) -> None:
        if connected:
            if self._grace_timer:
                self._grace_timer.cancel()
                self._grace_timer = None
            self.accepting = True
            for consumer in list(self.sessions.values()):
                self.publish_presence(
                    consumer.cid,
                    "connected",
                    consumer.connection_id,
                    consumer.version,
                    "broker reconnected",
                )
            return
        self._grace_timer = self.loop.call_later(
            self.settings.OCPPGW_BROKER_GRACE_S, self._broker_gone
        )

    def _broker_gone(self) -> None:
        """Past the grace period: stations should queue offline, as OCPP expects (1013)."""
        log.error(
            "broker away for %ss: closing %d station sockets with 1013",
            self.settings.OCPPGW_BROKER_GRACE_S,
            len(self.sessions),
        )
        self.accepting = False
        for consumer in list(self.sessions.values()):
            consumer.kick("broker unavailable", code=1013)

    # --- housekeeping --------------------------------------------------------------------------------
    async def _poll_forever(self) -> None:
        since = datetime.datetime.now(datetime.UTC)
        while True:
            try:
                rules, exemptions, changed, since = await self.db.run(_poll, since)
                self._apply(rules, exemptions, changed)
            except Exception as exc:  # the database may be away: keep the last known state
                log.debug("config poll failed: %s", exc)
            await asyncio.sleep(POLL_S)

    def _apply(self, rules, exemptions, changed) -> None:
        rule_set = RuleSet(self.rules.defaults, rules)
        if rule_set.version != self._rules_version:
            old_filters = {c: self._downstream_filter(c) for c in self.sessions.values()}
            self.rules, self._rules_version = rule_set, rule_set.version
            self._matcher = topics.downstream_matcher(rule_set.template("downstream", None, ""))
            for consumer, old in old_filters.items():
                new = self._downstream_filter(consumer)
                if new != old:
                    self.bridge.unsubscribe(old)
                    self.bridge.subscribe(new)
        self.exemptions = exemptions
        for cid_key, still_valid, reason, changed_at in changed:
            self.gatekeeper.cache.forget(cid_key)
            held = self.sessions.get(cid_key)
            if held is not None and not still_valid and held.authenticated_at < changed_at:
                held.kick(reason)

    async def _close_idle_forever(self, idle_s: int) -> None:
        while True:
            await asyncio.sleep(min(idle_s / 4, 10))
            quiet_since = time.monotonic() - idle_s
            for consumer in list(self.sessions.values()):
                if consumer.session.last_rx < quiet_since:
                    consumer.kick(f"idle for {idle_s}s")

    async def _prune_forever(self) -> None:
        from stations import retention

        while True:
            await asyncio.sleep(PRUNE_EVERY_S)
            try:
                cutoff = retention.cutoff(self.settings.OCPPGW_LOG_RETENTION_DAYS)
                await self.db.run(retention.prune, cutoff)
            except Exception as exc:
                log.warning("pruning the message log failed: %s", exc)

    async def shutdown(self) -> None:
        """Stop accepting, tell the broker every held station is gone, flush the log, disconnect."""
        self.accepting = False
        for consumer in list(self.sessions.values()):
            consumer.kick("gateway shutting down", code=1001)
            consumer.finish("gateway shutting down")
        await self.writer.stop()
        await self.cluster.stop()
        for task in self._tasks:
            task.cancel()
        await self.bridge.stop((self._node_topic, self._node_status("offline")))
        await self.db.close()


def _iso_now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds")


def _poll(since):
    """Rules, exemptions and credentials changed since `since` (one short transaction)."""
    from stations.models import Station, TopicRule, ValidationExemption

    now = datetime.datetime.now(datetime.UTC)
    newest = since
    rules = [
        Rule(r.direction, r.action, r.station.cid_key if r.station else "", r.template)
        for r in TopicRule.objects.select_related("station")
    ]
    exemptions = frozenset(ValidationExemption.objects.values_list("action", "direction"))
    changed = []
    for cid_key, enabled, active, until, at in Station.objects.filter(
        credentials_changed_at__gt=since
    ).values_list(
        "cid_key", "enabled", "user__is_active", "previous_password_until", "credentials_changed_at"
    ):
        newest = max(newest, at)
        in_grace = (
            until is not None and until > now
        )  # rotated through OCPP: the old one still works
        if not enabled:
            changed.append((cid_key, False, "station disabled", at))
        elif active is False:
            changed.append((cid_key, False, "station user deactivated", at))
        else:
            changed.append((cid_key, in_grace, "credentials changed", at))
    return rules, exemptions, changed, newest


def _release_node(node: str) -> None:
    from stations.models import Station

    try:
        Station.objects.filter(node=node).exclude(connection_id="").update(
            connection_id="", disconnected_at=datetime.datetime.now(datetime.UTC)
        )
    except DatabaseError as exc:  # fire-and-forget task: never an unretrieved exception
        log.warning("cannot mark the stations of lost node %s offline: %s", node, exc)


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
