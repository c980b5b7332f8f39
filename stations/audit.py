"""Record operator actions (portal, API, admin) in the audit trail the portal shows.

Written by the view that acted, after the action: an entry says what happened, a refusal
included ("not sent: …"), never only what was attempted. Secrets are never recorded.
"""

from stations.models import AuditEntry

DETAIL_CHARS = 2000


def record(user, via: str, action: str, target: str, detail: str = "", result: str = "ok"):
    """One entry by `user` (a staff user: every acting view requires one)."""
    return AuditEntry.objects.create(
        user=user if getattr(user, "pk", None) else None,
        username=getattr(user, "username", "") or "?",
        via=via,
        action=action,
        target=target[:64],
        detail=detail[:DETAIL_CHARS],
        result=result[:255],
    )
