"""What operators configure in the database, read as the gateway's pure types.

One home for these queries: the gateway's poll (housekeeping.py) and the portal read the same
topic rules, exemptions and credential changes. Sync ORM: call from a thread.
"""

import datetime

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
    """Stations whose credentials changed after `since`: ([(cid_key, still_valid, reason, at)], newest)."""
    from stations.models import Station

    now = datetime.datetime.now(datetime.UTC)
    newest, changed = since, []
    rows = Station.objects.filter(credentials_changed_at__gt=since).values_list(
        "cid_key", "enabled", "user__is_active", "previous_password_until", "credentials_changed_at"
    )
    for cid_key, enabled, active, until, at in rows:
        newest = max(newest, at)
        if not enabled:
            changed.append((cid_key, False, "station disabled", at))
        elif active is False:
            changed.append((cid_key, False, "station user deactivated", at))
        else:
            # rotated through OCPP: the old password still works for a while
            in_grace = until is not None and until > now
            changed.append((cid_key, in_grace, "credentials changed", at))
    return changed, newest
