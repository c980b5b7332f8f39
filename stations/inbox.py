"""Messages from the broker: backend envelopes to held stations, offline answers, fleet state.

Every MQTT message this process receives lands here (on the loop). A backend message for a
station held here goes to its conversation; one for a station held nowhere gets an `offline`
answer (docs/contract.md §2); retained presence and node statuses keep the picture of the fleet
that offline answers and dead-node handling need.

MQTT 5 tells the subscriptions apart by subscription id, and one process of the shared group
(`$share/<group>/`) sees each command for a station held nowhere. MQTT 3.1.1 has neither (and
RabbitMQ and NATS offer no shared subscriptions): every process then subscribes the fleet-wide
downstream filter instead of one per station, tells messages apart by topic, and the first live
node by name answers for stations held nowhere, so the answer never depends on `$share`.

The process that answers for a station held nowhere (the `$share` watcher, or the 3.1.1 answerer)
keeps the CALL for OFFLINE_GRACE_S instead of deciding at once: a station between two sockets
(its node just died, or it is reconnecting) may be connecting elsewhere right now, and the node
that gets it subscribed after the CALL was published. When the station shows up connected
elsewhere (its presence) the CALL is published again on its downstream topic, marked
(envelopes.REDELIVERED) so that its holder sends it once even if it got the backend's own copy
too (calls.BackendCalls.seen); held here, it goes straight to its conversation, marked the same
way (its own subscription may not be at the broker yet: see _decide); when the grace runs out
with the station still nowhere it is answered `offline`. Presence of a node whose Will was seen
counts as nowhere.
"""

import datetime
import logging
import sys
import typing

import orjson
from django.db import DatabaseError

from stations import envelopes, identity, topics
from stations.bridge import ROUTED_SUB_ID, WATCH_SUB_ID, Bridge
from stations.conversation import answer_offline

log = logging.getLogger("ocppgw.gateway")

PRESENCE_SUB_ID, NODES_SUB_ID = 3, 4


class Seen(typing.NamedTuple):
    """A station's last "connected" presence on the broker: what offline answers and dead-node
    handling read of it. Every process keeps one per connected station of the fleet; the parsed
    event dict was ~680 bytes of the T9 run's RSS per station and process, this ~200."""

    cid: str
    connection: str
    node: str  # interned: a node's stations share it
    version: str  # interned


OFFLINE_GRACE_S = 0.5  # a station may be connecting right now somewhere: look again first
MAX_KEPT = 10000  # CALLs kept through their grace at once; past it, decided on arrival
MAX_DEAD_NODES = 1000
SUBSCRIBED_S = 2.0  # a connection registered this long ago surely has its subscription
NODES_PREFIX = "ocpp/gw/nodes/"
NODES_FILTER = NODES_PREFIX + "+"


class Inbox:
    def __init__(self, gw):
        self.gw = gw  # the composition root: registry, rules, bridge, loop, node
        self.presence: dict[str, Seen] = {}  # cid_key -> last "connected" seen on the broker
        self.nodes: set[str] = set()  # nodes whose retained status says online (3.1.1 election)
        self.dead: dict[str, None] = {}  # nodes whose Will was seen (until they are back online)
        self.kept: dict[str, list[Kept]] = {}  # cid_key -> CALLs for it, held nowhere, in order
        self.kept_count = 0
        self._matcher = topics.matcher(gw.settings.OCPPGW_DOWNSTREAM_TOPIC)
        self._presence_matcher = topics.matcher(gw.settings.OCPPGW_PRESENCE_TOPIC)
        self.fleet_filter = ""  # MQTT 3.1.1: the one downstream subscription of every process

    def subscribe(self, bridge, settings) -> None:
        """The fleet-wide subscriptions."""
        watch = topics.wildcard_filter(settings.OCPPGW_DOWNSTREAM_TOPIC)
        if bridge.v5:
            # offline detection: one process of the group sees each command for any station
            bridge.subscribe(f"$share/{settings.OCPPGW_SHARE_GROUP}/{watch}", WATCH_SUB_ID)
        else:
            self.fleet_filter = watch
            bridge.subscribe(watch)
        # QoS 0: on subscribe the broker sends every retained presence of the fleet; at QoS 1
        # they fill its in-flight window and queue for us (Mosquitto drops past 1,000 queued,
        # backend commands included). Presence is state, and the next change repeats it
        presence = topics.wildcard_filter(settings.OCPPGW_PRESENCE_TOPIC)
        bridge.subscribe(presence, PRESENCE_SUB_ID, qos=0)
        bridge.subscribe(NODES_FILTER, NODES_SUB_ID, qos=0)

    def rules_changed(self, rules) -> None:
        template = rules.template("downstream", None, "")
        self._matcher = topics.matcher(template)
        watch = topics.wildcard_filter(template)
        if self.fleet_filter and watch != self.fleet_filter:
            self.gw.bridge.unsubscribe(self.fleet_filter)
            self.fleet_filter = watch
            self.gw.bridge.subscribe(watch)

    def answers_for_the_fleet(self) -> bool:
        """MQTT 3.1.1: whether this process answers for stations held nowhere (the first live
        node by name; a node that dies leaves the set through its Will)."""
        return min(self.nodes | {self.gw.node}) == self.gw.node

    def on_message(self, topic: str, payload: bytes, props, sub_ids) -> None:
        if sub_ids is None:  # MQTT 3.1.1: told apart by topic
            self._by_topic(topic, payload, props)
            return
        if ROUTED_SUB_ID in sub_ids and self._route(topic, payload, props):
            return
        if WATCH_SUB_ID in sub_ids:
            self._watch(topic, payload, props)
        elif PRESENCE_SUB_ID in sub_ids:
            self._presence_seen(payload)
        elif NODES_SUB_ID in sub_ids:
            self._node_seen(topic, payload)

    def _by_topic(self, topic, payload, props) -> None:
        if topic.startswith(NODES_PREFIX):
            self._node_seen(topic, payload)
        elif self._presence_matcher.match(topic):
            self._presence_seen(payload)
        elif not self._route(topic, payload, props) and self.answers_for_the_fleet():
            self._watch(topic, payload, props)

    def _cid_of(self, topic: str) -> str | None:
        """The station a downstream topic addresses (as written in the topic), or None."""
        match = self._matcher.match(topic)
        rules = self.gw.rules
        if match is None and rules.has_station_rules:
            for template in rules.station_templates("downstream"):
                match = topics.matcher(template).match(topic)
                if match:
                    break
        return topics.unescape_cid(match.group("cid")) if match else None

    def _route(self, topic, payload, props) -> bool:
        cid = self._cid_of(topic)
        conversation = self.gw.registry.get(identity.key(cid)) if cid else None
        if conversation is None:
            return False
        conversation.on_downstream(payload, props)
        return True

    def _watch(self, topic, payload, props) -> None:
        cid = self._cid_of(topic)
        if cid is None:
            return
        cid_key = identity.key(cid)
        held = self.gw.registry.get(cid_key)
        if held is not None:
            # MQTT 5: Mosquitto sends a held station's CALL twice to a process that is also its
            # watcher (once per subscription, shared ones apart), and the routed copy came or
            # comes. Only a connection this young may have subscribed after the publish: for
            # it the CALL is kept, and decided unless that connection got the routed copy
            if self.gw.loop.time() - held.started >= SUBSCRIBED_S or _marked(payload):
                return  # (a copy published again went to the same subscription)
        elif self._held_anywhere(cid_key):
            return  # its holder's subscription took it
        kept = Kept(topic, cid, payload, props, held)
        if self.kept_count >= MAX_KEPT:
            self._decide(cid_key, kept)
            return
        kept.timer = self.gw.loop.call_later(OFFLINE_GRACE_S, self._grace_over, cid_key, kept)
        self.kept.setdefault(cid_key, []).append(kept)
        self.kept_count += 1

    def _held_anywhere(self, cid_key: str) -> bool:
        if cid_key in self.gw.registry:
            return True
        seen = self.presence.get(cid_key)
        return seen is not None and seen.node not in self.dead

    def _grace_over(self, cid_key: str, kept: "Kept") -> None:
        waiting = self.kept.get(cid_key)
        if not waiting or kept not in waiting:
            return
        waiting.remove(kept)
        if not waiting:
            del self.kept[cid_key]
        self.kept_count -= 1
        self._decide(cid_key, kept)

    def _station_seen(self, cid_key: str) -> None:
        """The station is connected somewhere now: its kept CALLs go to it, in order."""
        waiting = self.kept.pop(cid_key, None)
        if not waiting:
            return
        self.kept_count -= len(waiting)
        for kept in waiting:
            kept.timer.cancel()
            self._decide(cid_key, kept)

    def _decide(self, cid_key: str, kept: "Kept") -> None:
        """A kept CALL: publish it again for the station's connection, or answer `offline`."""
        topic, cid, payload, props = kept.topic, kept.cid, kept.payload, kept.props
        if kept.holder is not None and kept.holder.backend_calls.saw(_unique_id(payload)):
            return  # the connection held here got its routed copy: it answers for it
        if not self._held_anywhere(cid_key):
            answer_offline(self.gw, cid, cid_key, payload, props)
            return
        again = envelopes.redelivery(payload)
        if again is None:
            return  # not a CALL (nothing to answer), or redelivered often enough: its holder has it
        body, count = again
        held = self.gw.registry.get(cid_key)
        if held is not None:
            # held here: straight to its conversation, not through the broker. Registered in this
            # loop turn, its SUBSCRIBE goes out only at the turn's end (subscriptions.py): a copy
            # published now would reach the broker first, go only to the `$share` group, and if
            # this process got it, _watch would skip it as a marked copy of a station held here
            log.info("%s: backend CALL handed to its new connection here (%d)", cid, count)
            held.on_downstream(body, props)
            return
        log.info("%s: backend CALL published again for its new connection (%d)", cid, count)
        bridge = self.gw.bridge
        forwarded = Bridge.forwarded_properties(props) if bridge.v5 else None
        bridge.publish(topic, body, properties=forwarded)

    def _presence_seen(self, payload: bytes) -> None:
        try:
            event = orjson.loads(payload)
            cid_key = identity.key(event["cid"])
        except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
            return
        # only stations connected somewhere are kept: memory follows the live fleet
        if event.get("status") == "connected":
            self.presence[cid_key] = Seen(
                str(event["cid"]),
                str(event.get("connection", "")),
                sys.intern(str(event.get("node", ""))),
                sys.intern(str(event.get("version", ""))),
            )
            if cid_key in self.kept:
                self._station_seen(cid_key)
        else:
            known = self.presence.get(cid_key)
            # a "disconnected" of another connection than the one last seen connected is late
            # (docs/architecture.md): the station is not nowhere for the CALLs decided here
            if known is None or known.connection == event.get("connection", ""):
                self.presence.pop(cid_key, None)
            self._contradict(cid_key, event)

    def _contradict(self, cid_key: str, event: dict) -> None:
        """A "disconnected" of another connection of a station held here came after ours: a
        connection that lost the race late (a node that learned of the newer claim only after
        its socket closed). Retained presence must not call a live station offline
        (docs/contract.md, "Presence"): say connected again, for this connection."""
        held = self.gw.registry.get(cid_key)
        if held is None or held.finished or event.get("connection") == held.station.connection_id:
            return
        st = held.station
        log.info("%s: late disconnect of connection %s; still connected here", st.cid,
                 event.get("connection"))  # fmt: skip
        self.gw.publish_presence(st.cid, "connected", st.connection_id, st.version, "connected")

    def _node_seen(self, topic: str, payload: bytes) -> None:
        try:
            event = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return  # an empty payload: the retained status was cleared
        if not isinstance(event, dict):
            return
        if event.get("status") == "online":
            # only this deployment's nodes: another one sharing the broker answers for its own
            node = str(event.get("node"))
            if event.get("group", "ocppgw") != self.gw.settings.OCPPGW_SHARE_GROUP:
                return
            self.dead.pop(node, None)
            if node not in self.nodes and node != self.gw.node:
                self.nodes.add(node)
                # say hello back: a broker that sends retained messages only to exact-topic
                # subscriptions (RabbitMQ 3) never showed the newcomer this node's status
                self.gw.announce()
            return
        if event.get("status") != "offline":
            return
        gw = self.gw
        dead = event.get("node")
        self.nodes.discard(dead)
        if dead == gw.node:
            return
        # its retained presences say "connected" until the survivors' "disconnected" arrive:
        # meanwhile a CALL for one of its stations must not count as taken (_held_anywhere)
        self.dead[dead] = None
        if len(self.dead) > MAX_DEAD_NODES:
            del self.dead[next(iter(self.dead))]
        # clear the dead node's retained status once handled, so old nodes do not pile up
        gw.bridge.publish(topic, b"", qos=1, retain=True)
        # the node died: its stations are gone; a live reconnect elsewhere is not touched
        for seen in list(self.presence.values()):
            if seen.node == dead:
                gw.publish_presence(
                    seen.cid, "disconnected", seen.connection, seen.version, f"node {dead} lost"
                )
        gw.loop.create_task(gw.db.run(_release_node, dead))


def _marked(payload: bytes) -> bool:
    return f'"{envelopes.REDELIVERED}"'.encode() in payload


def _unique_id(payload: bytes):
    try:
        return orjson.loads(payload).get("UniqueId")
    except (orjson.JSONDecodeError, AttributeError):
        return None


class Kept:
    """A backend CALL for a station held nowhere (or by a connection here too young to be sure
    it was subscribed: `holder`), through its grace."""

    __slots__ = ("cid", "holder", "payload", "props", "timer", "topic")

    def __init__(self, topic, cid, payload, props, holder=None):
        self.topic, self.cid, self.payload, self.props = topic, cid, payload, props
        self.holder = holder
        self.timer = None


def _release_node(node: str) -> None:
    from stations.models import Station

    try:
        Station.objects.filter(node=node).exclude(connection_id="").update(
            connection_id="", disconnected_at=datetime.datetime.now(datetime.UTC)
        )
    except DatabaseError as exc:  # fire-and-forget task: never an unretrieved exception
        log.warning("cannot mark the stations of lost node %s offline: %s", node, exc)
