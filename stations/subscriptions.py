"""The bridge's subscriptions: the filters the broker must hold for this process, in batches.

Filters (un)subscribed during one loop turn go out together at its end, one SUBSCRIBE per
(subscription id, QoS) and one UNSUBSCRIBE: a few packets for a reconnect storm instead of one
per station (bench/README.md, T9). After a reconnect every filter is subscribed again.
"""

import collections

from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

BATCH = 200  # filters per SUBSCRIBE/UNSUBSCRIBE packet (reconnects, storms)


class Subscriptions:
    def __init__(self, bridge):
        self.bridge = bridge  # its loop, client, `connected` and `v5`
        self.filters: dict[str, tuple[int, int]] = {}  # filter -> (subscription id, QoS)
        # filters (un)subscribed during this loop turn, sent together at its end
        self._changed: dict[str, None] = {}
        self._waiters: list = []

    def add(self, topic_filter: str, sub_id: int, qos: int):
        """Hold `topic_filter`; a future done once its SUBSCRIBE is queued on the connection
        (None while disconnected: the reconnect subscribes every filter first)."""
        self.filters[topic_filter] = (sub_id, qos)
        return self._change(topic_filter)

    def remove(self, topic_filter: str) -> None:
        if self.filters.pop(topic_filter, None) is not None:
            self._change(topic_filter)

    def _change(self, topic_filter: str):
        bridge = self.bridge
        if not bridge.connected:
            return None
        if not self._changed:
            bridge.loop.call_soon(self._send_changes)
        self._changed.pop(topic_filter, None)  # moved to the end: the last change is the one sent
        self._changed[topic_filter] = None
        waiter = bridge.loop.create_future()
        self._waiters.append(waiter)
        return waiter

    def _send_changes(self) -> None:
        """This turn's changes. A filter unsubscribed and subscribed again within the turn (a
        station reconnecting) is subscribed once: its state now is what the broker must hold."""
        changed, self._changed = self._changed, {}
        waiters, self._waiters = self._waiters, []
        if self.bridge.connected:  # else the reconnect subscribes every filter
            gone = [f for f in changed if f not in self.filters]
            for i in range(0, len(gone), BATCH):
                self.bridge.client.unsubscribe(gone[i : i + BATCH])
            self._subscribe({f: self.filters[f] for f in changed if f in self.filters})
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def resubscribe_all(self) -> None:
        """After a (re)connect: every filter held, before anything is published."""
        self._subscribe(self.filters)

    def _subscribe(self, filters: dict[str, tuple[int, int]]) -> None:
        by_key: dict[tuple[int, int], list[str]] = collections.defaultdict(list)
        for topic_filter, key in filters.items():
            by_key[key].append(topic_filter)
        for (sub_id, qos), group in by_key.items():
            props = None
            if self.bridge.v5:
                props = Properties(PacketTypes.SUBSCRIBE)
                props.SubscriptionIdentifier = sub_id
            for i in range(0, len(group), BATCH):
                batch = [(f, qos) for f in group[i : i + BATCH]]
                self.bridge.client.subscribe(batch, properties=props)
