"""Messages from the broker: backend envelopes to held stations, offline answers, fleet state.

Every MQTT message this process receives lands here (on the loop). A backend message for a
station held here goes to its conversation; one for a station held nowhere gets an `offline`
answer (docs/contract.md §2); retained presence and node statuses keep the picture of the fleet
that offline answers and dead-node handling need.
"""

import datetime
import logging

import orjson
from django.db import DatabaseError

from stations import identity, topics
from stations.bridge import ROUTED_SUB_ID, WATCH_SUB_ID
from stations.conversation import answer_offline

log = logging.getLogger("ocppgw.gateway")

PRESENCE_SUB_ID, NODES_SUB_ID = 3, 4
OFFLINE_GRACE_S = 0.5  # a station may be connecting right now somewhere: look again first
NODES_FILTER = "ocpp/gw/nodes/+"


class Inbox:
    def __init__(self, gw):
        self.gw = gw  # the composition root: registry, rules, bridge, loop, node
        self.presence: dict[str, dict] = {}  # cid_key -> last "connected" event seen on the broker
        self._matcher = topics.downstream_matcher(gw.settings.OCPPGW_DOWNSTREAM_TOPIC)

    def subscribe(self, bridge, settings) -> None:
        """The fleet-wide subscriptions (MQTT 5: subscription ids tell the messages apart)."""
        if not bridge.v5:
            return
        # offline detection: one process of the group sees each command for any station
        watch = topics.wildcard_filter(settings.OCPPGW_DOWNSTREAM_TOPIC)
        bridge.subscribe(f"$share/ocppgw/{watch}", WATCH_SUB_ID)
        # QoS 0: on subscribe the broker sends every retained presence of the fleet; at QoS 1
        # they fill its in-flight window and queue for us (Mosquitto drops past 1,000 queued,
        # backend commands included). Presence is state, and the next change repeats it
        presence = topics.wildcard_filter(settings.OCPPGW_PRESENCE_TOPIC)
        bridge.subscribe(presence, PRESENCE_SUB_ID, qos=0)
        bridge.subscribe(NODES_FILTER, NODES_SUB_ID, qos=0)

    def rules_changed(self, rules) -> None:
        self._matcher = topics.downstream_matcher(rules.template("downstream", None, ""))

    def on_message(self, topic: str, payload: bytes, props, sub_ids) -> None:
        if (sub_ids is None or ROUTED_SUB_ID in sub_ids) and self._route(topic, payload, props):
            return
        if not sub_ids:
            return
        if WATCH_SUB_ID in sub_ids:
            self._watch(topic, payload, props)
        elif PRESENCE_SUB_ID in sub_ids:
            self._presence_seen(payload)
        elif NODES_SUB_ID in sub_ids:
            self._node_seen(topic, payload)

    def _cid_of(self, topic: str) -> str | None:
        """The station a downstream topic addresses (as written in the topic), or None."""
        match = self._matcher.match(topic)
        rules = self.gw.rules
        if match is None and rules.has_station_rules:
            for template in rules.station_templates("downstream"):
                match = topics.downstream_matcher(template).match(topic)
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
        if cid is None or self._held_anywhere(identity.key(cid)):
            return
        self.gw.loop.call_later(OFFLINE_GRACE_S, self._offline_if_still, cid, payload, props)

    def _held_anywhere(self, cid_key: str) -> bool:
        event = self.presence.get(cid_key)
        return cid_key in self.gw.registry or bool(event and event.get("status") == "connected")

    def _offline_if_still(self, cid, payload, props) -> None:
        cid_key = identity.key(cid)
        if not self._held_anywhere(cid_key):
            answer_offline(self.gw, cid, cid_key, payload, props)

    def _presence_seen(self, payload: bytes) -> None:
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
        gw = self.gw
        dead = event.get("node")
        if dead == gw.node:
            return
        # clear the dead node's retained status once handled, so old nodes do not pile up
        gw.bridge.publish(topic, b"", qos=1, retain=True)
        # the node died: its stations are gone; a live reconnect elsewhere is not touched
        for seen in list(self.presence.values()):
            if seen.get("node") == dead and seen.get("status") == "connected":
                gw.publish_presence(
                    seen["cid"],
                    "disconnected",
                    seen.get("connection", ""),
                    seen.get("version", ""),
                    f"node {dead} lost",
                )
        gw.loop.create_task(gw.db.run(_release_node, dead))


def _release_node(node: str) -> None:
    from stations.models import Station

    try:
        Station.objects.filter(node=node).exclude(connection_id="").update(
            connection_id="", disconnected_at=datetime.datetime.now(datetime.UTC)
        )
    except DatabaseError as exc:  # fire-and-forget task: never an unretrieved exception
        log.warning("cannot mark the stations of lost node %s offline: %s", node, exc)
