"""Liveness and readiness for orchestrators and load balancers."""

from django.db import connection
from django.http import JsonResponse

from stations import gateway


def healthz(request):
    """The process answers."""
    return JsonResponse({"status": "ok"})


def readyz(request):
    """The database and the broker are reachable; 503 otherwise (docs/contract.md §3)."""
    checks = {}
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        checks["database"] = "ok"
    except Exception as exc:
        checks["database"] = f"unavailable: {exc.__class__.__name__}"
    gw = gateway.current()
    if gw is None:
        checks["broker"] = "not started"
    else:
        checks["broker"] = "ok" if gw.bridge.connected else "unavailable"
    ready = all(value == "ok" for value in checks.values())
    return JsonResponse({"ready": ready, **checks}, status=200 if ready else 503)
