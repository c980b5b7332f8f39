"""What operators configure in the database, read as the gateway's pure types.

One home for these queries: the gateway's poll (housekeeping.py) and the portal read the same
topic rules, exemptions and credential changes. Sync ORM: call from a thread.
"""

import datetime
from typing import NamedTuple

from stations.rules import Rule, RuleSet


def topic_rules(direction: str | None = None) -> list[Rule]:
    """Every TopicRule row (of one direction, if given) as a Rule."""
    from stations.models import TopicRule

    rows = TopicRule.objects.select_related("station")
    if direction:
        rows = rows.filter(direction=direction)
    return [
        Rule(r.direction, r.action, r.station.cid_key if r.station else "", r.template)
        for r in rows
    ]


def rule_set(defaults: dict, direction: str | None = None) -> RuleSet:
    return RuleSet(defaults, topic_rules(direction))


def exemptions() -> frozenset[tuple[str, str]]:
    """(action, direction) pairs taken out of validation."""
    from stations.models import ValidationExemption

    return frozenset(ValidationExemption.objects.values_list("action", "direction"))


def credential_changes(since: datetime.datetime):
    """Stations whose credentials or validation policy changed after `since`:
    ([Change], newest change time)."""
    from django.db.models import Q

    from stations.models import DeletedStation, Station

    now = datetime.datetime.now(datetime.UTC)
    newest, changed = since, []
    rows = Station.objects.filter(
        Q(credentials_changed_at__gt=since) | Q(policy_changed_at__gt=since)
    ).values_list(
        "cid_key",
        "enabled",
        "user__is_active",
        "previous_password_until",
        "credentials_changed_at",
        "policy_changed_at",
        "validation_policy",
    )
    for cid_key, at in DeletedStation.objects.filter(deleted_at__gt=since).values_list(
        "cid_key", "deleted_at"
    ):
        newest = max(newest, at)
        changed.append(Change(cid_key, False, "station deleted", at, ""))
    for cid_key, enabled, active, until, at, policy_at, policy in rows:
        if at is None or at <= since:  # only the policy changed: nobody is closed
            still_valid, reason, at = True, "validation policy changed", policy_at
        elif not enabled:
            still_valid, reason = False, "station disabled"
        elif active is False:
            still_valid, reason = False, "station user deactivated"
        else:
            # rotated through OCPP: the old password still works for a while
            still_valid, reason = until is not None and until > now, "credentials changed"
        newest = max(newest, at, policy_at or at)
        changed.append(Change(cid_key, still_valid, reason, at, policy))
    return changed, newest


class Change(NamedTuple):
    cid_key: str
    still_valid: bool  # the live connection may stay
    reason: str
    at: datetime.datetime
    validation_policy: str


def forget_deleted_stations() -> int:
    """Drop deletion records every process has long seen; returns how many."""
    from stations.models import DeletedStation

    cutoff = datetime.datetime.now(datetime.UTC) - DeletedStation.KEEP
    return DeletedStation.objects.filter(deleted_at__lt=cutoff).delete()[0]
