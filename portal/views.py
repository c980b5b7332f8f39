"""Portal pages about stations: the inventory, one station's page, kick and send a command.

The truth is the database: the gateway processes write presence and counters there in batches
(every ~0.5 s and ~1 s), so every portal page is correct whichever process holds a station.
"""

import orjson
from django.contrib import messages
from django.http import Http404, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse

from portal import control, inventory
from portal.access import post_with_permission, staff_required
from portal.forms import CommandForm
from stations import audit, identity
from stations.models import MessageLog, Station

RECENT_FRAMES = 25
PRESENCE_ROWS = 15
PRESENCE_OUTCOMES = ("connected", "disconnected", "refused")


def _station_or_404(cid: str) -> Station:
    station = Station.objects.filter(cid_key=identity.key(cid)).select_related("user").first()
    if station is None:
        raise Http404(f"no station {cid!r}")
    return station


@staff_required
def stations(request):
    """The inventory: every station, filtered, searched, sorted, paged; refreshed by live.js."""
    wanted = request.GET.get("open", "").strip()
    if wanted:
        problem = identity.validate(wanted)
        if not problem:
            return redirect("portal:station", cid=wanted)
        messages.error(request, f"{wanted!r}: {problem}")
    result = inventory.page(inventory.Query.from_params(request.GET))
    q = result.query
    context = {
        "page": result,
        "q": q,
        "states": [
            (s, result.counts[s], q.params(state=s, page=1), s == q.state) for s in inventory.STATES
        ],
        "sorts": [
            (s.replace("_", " "), q.params(sort=s, page=1), s == q.sort) for s in inventory.SORTS
        ],
        "prev": q.params(page=q.page - 1) if q.page > 1 else "",
        "next": q.params(page=q.page + 1) if q.page < result.pages else "",
        "refused": Station.objects.filter(last_refused_at__isnull=False)
        .order_by("-last_refused_at")
        .values("cid", "last_refused_at", "last_refused_reason")[:5],
    }
    return render(request, "portal/stations.html", context)


@staff_required
def stations_live(request):
    """The same page of the inventory as JSON, for live.js (three queries)."""
    result = inventory.page(inventory.Query.from_params(request.GET))
    for row in result.rows:
        row["url"] = reverse("portal:station", args=[row["cid"]])
    return JsonResponse(
        {
            "stations": result.rows,
            "matching": result.matching,
            "counts": result.counts,
            "page": result.query.page,
            "pages": result.pages,
        }
    )


def _recent(station):
    frames = (
        MessageLog.objects.filter(cid=station.cid)
        .exclude(outcome__in=PRESENCE_OUTCOMES)
        .order_by("-created", "-id")[:RECENT_FRAMES]
    )
    presence = MessageLog.objects.filter(
        cid=station.cid, direction=MessageLog.GATEWAY, outcome__in=PRESENCE_OUTCOMES
    ).order_by("-created", "-id")[:PRESENCE_ROWS]
    return list(frames), list(presence)


@staff_required
def station(request, cid):
    """One station: status, recent frames, presence history, kick, send a command."""
    station = _station_or_404(cid)
    frames, presence = _recent(station)
    version = control.version_of(station)
    context = {
        "station": station,
        "frames": frames,
        "presence": presence,
        "actions": control.actions(station),
        "examples": control.examples(version),
        "version": version,
        "form": CommandForm(initial={"action": "Reset" if version else ""}),
        "pending": request.GET.get("command", "")[:36],
        "policies": Station.POLICIES,
    }
    return render(request, "portal/station.html", context)


@staff_required
def station_live(request, cid):
    """Status and recent frames of one station as JSON, polled by live.js (three queries)."""
    station = _station_or_404(cid)
    frames, presence = _recent(station)
    return JsonResponse(
        {
            "station": {
                "cid": station.cid,
                "connected": station.is_connected,
                "ocpp_version": station.ocpp_version,
                "node": station.node,
                "connected_at": station.connected_at,
                "disconnected_at": station.disconnected_at,
                "last_frame_at": station.last_frame_at,
                "frames_in": station.frames_in,
                "frames_out": station.frames_out,
                "frames_lenient": station.frames_lenient,
                "vendor": station.vendor,
                "model": station.model,
                "serial_number": station.serial_number,
                "firmware_version": station.firmware_version,
                "last_boot_at": station.last_boot_at,
                "last_heartbeat_at": station.last_heartbeat_at,
                "connectors": station.connectors,
                "last_refused_at": station.last_refused_at,
                "last_refused_reason": station.last_refused_reason,
            },
            "frames": [_frame(r) for r in frames],
            "presence": [_frame(r) for r in presence],
        }
    )


def _frame(row) -> dict:
    return {
        "id": row.id,
        "created": row.created,
        "direction": row.direction,
        "message_type": row.message_type,
        "action": row.action,
        "unique_id": row.unique_id,
        "outcome": row.outcome,
        "reason": row.reason,
        "size": row.size,
        "payload": row.payload[:300],
        "url": reverse("portal:message", args=[row.id]),
    }


@post_with_permission("stations.kick_station")
def kick(request, cid):
    """Close the station's socket wherever it is held (across processes through Redis)."""
    station = _station_or_404(cid)
    reason = request.POST.get("reason", "").strip()[:120] or f"kicked by {request.user}"
    result = "ok"
    try:
        control.kick(station, reason)
    except control.Refused as exc:
        result = f"failed: {exc.message}"
        messages.error(request, f"Could not kick {station.cid}: {exc.message}")
    except TimeoutError:
        result = "failed: the gateway did not confirm in time"
        messages.error(request, f"The gateway did not confirm the kick of {station.cid} in time.")
    else:
        messages.success(request, f"{station.cid} was asked to disconnect ({reason}).")
    audit.record(request.user, "portal", "kick", station.cid, reason, result)
    return redirect("portal:station", cid=station.cid)


@post_with_permission("stations.change_station")
def set_policy(request, cid):
    """The station's validation policy (strict / lenient / log / gateway default)."""
    station = _station_or_404(cid)
    policy = request.POST.get("validation_policy", "")
    if policy not in dict(Station.POLICIES):
        messages.error(request, f"Unknown validation policy {policy[:20]!r}.")
    elif policy != station.validation_policy:
        old = station.validation_policy or "default"
        station.validation_policy = policy
        station.save(update_fields=["validation_policy", "policy_changed_at"])
        audit.record(
            request.user, "portal", "policy", station.cid, f"{old} -> {policy or 'default'}"
        )
        shown = station.get_validation_policy_display()
        messages.success(request, f"{station.cid}: validation policy is now {shown}.")
    return redirect("portal:station", cid=station.cid)


@post_with_permission("stations.send_command")
def send_command(request, cid):
    """Validate and publish a command; JSON for command.js, a redirect for a plain form post."""
    station = _station_or_404(cid)
    wants_json = request.accepts("application/json") and not request.accepts("text/html")
    form = CommandForm(request.POST)
    if not form.is_valid():
        error = "; ".join(f"{k}: {' '.join(v)}" for k, v in form.errors.items())
        return _refused(request, station, wants_json, control.Refused(error))
    action, payload = form.cleaned_data["action"], form.cleaned_data["payload"]
    warning = control.disruptive(action, payload)
    if warning and not form.cleaned_data["confirm"]:
        try:  # a command that cannot be sent is refused before anyone is asked to confirm it
            control.check(station, action, payload)
        except control.Refused as exc:
            return _refused(request, station, wants_json, exc)
        # nothing is sent or audited until the operator confirms (command.js asks)
        refusal = control.Refused(f"{warning}. Confirm to send it.")
        return _refused(request, station, wants_json, refusal, confirm=True)
    detail = f"{action} {orjson.dumps(payload).decode()}"
    try:
        unique_id, topic = control.send(station, action, payload)
    except control.Refused as exc:
        audit.record(
            request.user, "portal", "command", station.cid, detail, f"not sent: {exc.message}"
        )
        return _refused(request, station, wants_json, exc)
    audit.record(request.user, "portal", "command", station.cid, detail, f"sent as {unique_id}")
    if wants_json:
        return JsonResponse({"unique_id": unique_id, "topic": topic}, status=202)
    messages.success(request, f"Sent {form.cleaned_data['action']} on {topic}.")
    return redirect(reverse("portal:station", args=[station.cid]) + f"?command={unique_id}")


def _refused(request, station, wants_json, exc, confirm=False):
    if wants_json:
        body = {"error": exc.message, "path": exc.path, "rule": exc.rule, "confirm": confirm}
        return JsonResponse(body, status=400)
    messages.error(request, f"Not sent: {exc.message}")
    return redirect("portal:station", cid=station.cid)


@staff_required
def command_answer(request, cid, unique_id):
    """What became of a command: polled by command.js until answered or failed."""
    return JsonResponse(control.answer(_station_or_404(cid), unique_id))
