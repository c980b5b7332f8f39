"""The audit trail page: operator actions, newest first, filtered by station/user and action."""

from django.db.models import Q
from django.shortcuts import render
from django.utils.http import urlencode

from portal.access import staff_required
from stations.models import AuditEntry

PAGE_SIZE = 50


@staff_required
def audit_trail(request):
    """Who did what, when, with what result (two queries a page)."""
    search = request.GET.get("q", "").strip()[:64]
    action = request.GET.get("action", "").strip()[:32]
    entries = AuditEntry.objects.all()
    if search:
        entries = entries.filter(Q(target__icontains=search) | Q(username__icontains=search))
    if action:
        entries = entries.filter(action=action)
    try:
        page = max(1, int(request.GET.get("page", 1)))
    except ValueError:
        page = 1
    start = (page - 1) * PAGE_SIZE
    rows = list(entries[start : start + PAGE_SIZE + 1])
    query = {k: v for k, v in (("q", search), ("action", action)) if v}
    context = {
        "rows": rows[:PAGE_SIZE],
        "search": search,
        "action": action,
        "page": page,
        "prev": urlencode({**query, "page": page - 1}) if page > 1 else "",
        "next": urlencode({**query, "page": page + 1}) if len(rows) > PAGE_SIZE else "",
    }
    return render(request, "portal/audit.html", context)
