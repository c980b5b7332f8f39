"""`/metrics`: Prometheus text format, no login (served only where the operator surfaces are:
with OCPPGW_ADMIN_PORT set, the stations' port answers 404 for it, see ocppgw/asgi.py)."""

from django.http import HttpResponse

from stations import gateway
from stations import metrics as gateway_metrics


async def metrics(request):
    """All metrics of this process (of every process under `rungateway --processes N`)."""
    gw = gateway.current()
    if gw is not None:
        gateway_metrics.sample(gw)  # this process's depths are exact at scrape time
    body, content_type = gateway_metrics.render()
    return HttpResponse(body, content_type=content_type)
