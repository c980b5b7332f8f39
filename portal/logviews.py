"""Portal pages over the message log: the filtered, keyset-paginated log, one row, traffic."""

import datetime

import orjson
from django.conf import settings
from django.http import HttpResponseBadRequest, JsonResponse, StreamingHttpResponse
from django.shortcuts import get_object_or_404, render
from django.utils.http import urlencode

from portal import export, msgsearch, traffic
from portal.access import staff_required
from portal.forms import MessageFilterForm
from stations.models import MessageLog


@staff_required
def messages(request):
    """The message log, filtered, newest first, one keyset page at a time (3 queries at most)."""
    form = MessageFilterForm(request.GET or None)
    filters = form.filters() if form.is_valid() else msgsearch.Filters()
    result = msgsearch.page(filters, request.GET.get("after", ""))
    partners = msgsearch.partners(result.rows)
    for row in result.rows:
        row.partner = partners.get(row.id)
    query = {k: v for k, v in request.GET.items() if k != "after" and v}
    context = {
        "form": form,
        "page": result,
        "retention": settings.OCPPGW_LOG_RETENTION_DAYS,
        "next_query": urlencode({**query, "after": result.next_cursor})
        if result.next_cursor
        else "",
        "first_query": urlencode(query),
        "paged": bool(request.GET.get("after")),
        "filtered": bool(query),
    }
    return render(request, "portal/messages.html", context)


@staff_required
def messages_export(request):
    """The filtered log as a streamed download: ?format=csv (default) or ndjson."""
    form = MessageFilterForm(request.GET)
    if not form.is_valid():
        return HttpResponseBadRequest(
            "; ".join(f"{k}: {' '.join(v)}" for k, v in form.errors.items())
        )
    filters = form.filters()
    kind = request.GET.get("format", "csv")
    if kind not in export.FORMATS:
        return HttpResponseBadRequest("format: csv or ndjson")
    body = export.as_csv(filters) if kind == "csv" else export.as_ndjson(filters)
    response = StreamingHttpResponse(body, content_type=export.FORMATS[kind])
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    response["Content-Disposition"] = f'attachment; filename="ocppgw-log-{stamp}.{kind}"'
    return response


@staff_required
def message(request, pk):
    """One log row in full, with the other half of its request/answer pair."""
    row = get_object_or_404(MessageLog.objects.select_related("station"), pk=pk)
    partner = msgsearch.partners([row]).get(row.id)
    try:
        pretty = orjson.dumps(orjson.loads(row.payload), option=orjson.OPT_INDENT_2).decode()
    except orjson.JSONDecodeError:
        pretty = row.payload
    same_id = urlencode({"station": row.cid, "uid": row.unique_id}) if row.unique_id else ""
    context = {"row": row, "partner": partner, "pretty": pretty, "same_id": same_id}
    return render(request, "portal/message.html", context)


@staff_required
def traffic_page(request):
    """Frames per minute over the last hour, for the gateway or one station."""
    cid = request.GET.get("station", "").strip()
    station = msgsearch.resolve_station(cid)
    context = {"cid": station.cid if station else cid, "busiest": traffic.busiest()}
    return render(request, "portal/traffic.html", context)


@staff_required
def traffic_data(request):
    """The chart's series as JSON (one GROUP BY query, two with a station)."""
    cid = request.GET.get("station", "").strip()
    station = msgsearch.resolve_station(cid) if cid else None
    return JsonResponse(traffic.per_minute(station.cid if station else cid))
