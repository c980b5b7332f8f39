"""The stations this process holds: one current conversation per station, newest wins.

A station reconnecting replaces its older connection here and, through Redis claims
(cluster.py), in every other process. Each held station has its downstream subscription, unless
the process takes the whole fleet's downstream topics through one (MQTT 3.1.1, inbox.py).
"""

from stations import topics


class Registry:
    def __init__(self, bridge, cluster, rules):
        self.bridge, self.cluster = bridge, cluster
        self.rules = rules  # the current RuleSet; replaced by `resubscribe`
        self._held: dict = {}  # cid_key -> Conversation
        self.fleet_wide = False  # one subscription covers every station on the global template

    def __len__(self) -> int:
        return len(self._held)

    def __contains__(self, cid_key: str) -> bool:
        return cid_key in self._held

    def get(self, cid_key: str):
        return self._held.get(cid_key)

    def all(self) -> list:
        """A snapshot of the held conversations (safe to close them while iterating)."""
        return list(self._held.values())

    async def register(self, conversation) -> None:
        """Make `conversation` the station's current one, replacing any older one anywhere."""
        st = conversation.station
        old = self._held.get(st.cid_key)
        self._held[st.cid_key] = conversation
        if old is not None and old is not conversation:
            old.replaced()
        own = self._filter(conversation, self.rules)
        subscribed = self.bridge.subscribe(own) if own else None
        await self.cluster.claim(st.cid_key, st.connection_id, st.claim_seq)
        if subscribed is not None:
            # the SUBSCRIBE is batched (bridge.py): queued before the caller publishes the
            # station's presence, so the backend cannot address the station before it is in place
            await subscribed

    def unregister(self, conversation) -> bool:
        """Forget a connection; True when it was the station's current one."""
        st = conversation.station
        if self._held.get(st.cid_key) is not conversation:
            return False
        del self._held[st.cid_key]
        own = self._filter(conversation, self.rules)
        if own:
            self.bridge.unsubscribe(own)
        return not self.cluster.superseded(st.cid_key, st.claim_seq)

    def on_claim(self, cid_key: str, connection_id: str, seq: int):
        """Another process claims the station: close ours if theirs is newer; if ours is newer,
        return its claim (cid_key, conn, seq) so the other process learns it lost."""
        held = self._held.get(cid_key)
        if held is None:
            return None
        st = held.station
        if st.connection_id == connection_id:
            return None
        if st.claim_seq < seq:
            held.replaced()
            return None
        if st.claim_seq == seq:  # not ordered: answering could echo between the two for ever
            return None
        return st.cid_key, st.connection_id, st.claim_seq

    def claims(self) -> list[tuple[str, str, int]]:
        """The claim of every held station (re-announced after a Redis outage)."""
        return [
            (c.station.cid_key, c.station.connection_id, c.station.claim_seq)
            for c in self._held.values()
        ]

    def on_kick(self, cid_key: str, reason: str) -> None:
        held = self._held.get(cid_key)
        if held is not None:
            held.kick(reason)

    def resubscribe(self, rules) -> None:
        """Topic rules changed: move every held station whose downstream filter changed."""
        old_rules, self.rules = self.rules, rules
        for conversation in self.all():
            old, new = self._filter(conversation, old_rules), self._filter(conversation, rules)
            if new != old:
                if old:
                    self.bridge.unsubscribe(old)
                if new:
                    self.bridge.subscribe(new)

    def _filter(self, conversation, rules) -> str:
        """The station's own downstream filter; "" when the fleet-wide one covers it."""
        st = conversation.station
        template = rules.template("downstream", None, st.cid_key)
        if self.fleet_wide and template == rules.template("downstream", None, ""):
            return ""
        return topics.downstream_filter(template, st.cid, st.version)
