"""The gateway's background jobs: configuration poll, idle stations, log pruning, broker outages.

None of these runs on the frame path. The database is reached through the gateway's DbThread;
when it is away, the last known configuration stays in force.
"""

import asyncio
import datetime
import logging

from stations import config_rows, retention
from stations.policy import ValidationPolicy
from stations.rules import RuleSet

log = logging.getLogger("ocppgw.gateway")

POLL_S = 1.0  # rules, exemptions and credential changes reach every process within this
PRUNE_EVERY_S = 3600


class Housekeeping:
    def __init__(self, gw):
        self.gw = gw
        self._rules_version = None
        self._grace_timer: asyncio.TimerHandle | None = None

    def jobs(self) -> list:
        jobs = [self._poll_forever(), self._prune_forever()]
        idle_s = self.gw.settings.OCPPGW_IDLE_TIMEOUT_S
        if idle_s:
            jobs.append(self._close_idle_forever(idle_s))
        return jobs

    # --- configuration -------------------------------------------------------------------------------
    async def _poll_forever(self) -> None:
        since = datetime.datetime.now(datetime.UTC)
        while True:
            try:
                rules, exemptions, changed, since = await self.gw.db.run(_poll, since)
                self.apply(rules, exemptions, changed)
            except Exception as exc:  # the database may be away: keep the last known state
                log.debug("config poll failed: %s", exc)
            await asyncio.sleep(POLL_S)

    def apply(self, rules, exemptions, changed) -> None:
        """Make the polled configuration current: topic rules, exemptions, credential changes."""
        gw = self.gw
        rule_set = RuleSet(gw.rules.defaults, rules)
        if rule_set.version != self._rules_version:
            self._rules_version = rule_set.version
            gw.rules = rule_set
            gw.inbox.rules_changed(rule_set)
            gw.registry.resubscribe(rule_set)
        gw.policy = ValidationPolicy(gw.settings.OCPPGW_VALIDATION, exemptions)
        for change in changed:
            gw.gatekeeper.forget(change.cid_key)
            held = gw.registry.get(change.cid_key)
            if held is None:
                continue
            held.station.validation_policy = change.validation_policy
            if not change.still_valid and held.station.authenticated_at < change.at:
                held.kick(change.reason)

    # --- idle stations and old log rows ----------------------------------------------------------------
    async def _close_idle_forever(self, idle_s: int) -> None:
        while True:
            await asyncio.sleep(min(idle_s / 4, 10))
            quiet_since = self.gw.loop.time() - idle_s
            for conversation in self.gw.registry.all():
                if conversation.last_rx < quiet_since:
                    conversation.kick(f"idle for {idle_s}s")

    async def _prune_forever(self) -> None:
        while True:
            await asyncio.sleep(PRUNE_EVERY_S)
            try:
                cutoff = retention.cutoff(self.gw.settings.OCPPGW_LOG_RETENTION_DAYS)
                await self.gw.db.run(retention.prune, cutoff)
                await self.gw.db.run(config_rows.forget_deleted_stations)
            except Exception as exc:
                log.warning("pruning the message log failed: %s", exc)

    # --- broker outage (docs/contract.md §4) --------------------------------------------------------
    def on_broker_state(self, connected: bool) -> None:
        gw = self.gw
        if not connected:
            self._grace_timer = gw.loop.call_later(
                gw.settings.OCPPGW_BROKER_GRACE_S, self._broker_gone
            )
            return
        if self._grace_timer:
            self._grace_timer.cancel()
            self._grace_timer = None
        gw.accepting = True
        for conversation in gw.registry.all():
            st = conversation.station
            gw.publish_presence(
                st.cid, "connected", st.connection_id, st.version, "broker reconnected"
            )

    def _broker_gone(self) -> None:
        """Past the grace period: stations should queue offline, as OCPP expects (1013)."""
        gw = self.gw
        log.error(
            "broker away for %ss: closing %d station sockets with 1013",
            gw.settings.OCPPGW_BROKER_GRACE_S,
            len(gw.registry),
        )
        gw.accepting = False
        for conversation in gw.registry.all():
            conversation.kick("broker unavailable", code=1013)


def _poll(since):
    """Rules, exemptions and credentials changed since `since` (one short transaction)."""
    changed, newest = config_rows.credential_changes(since)
    return config_rows.topic_rules(), config_rows.exemptions(), changed, newest
