from django.contrib import admin
from django.contrib.staticfiles.views import serve as serve_static
from django.urls import include, path, re_path
from django.views.generic import RedirectView

from ocppgw import health, metrics

urlpatterns = [
    path("", RedirectView.as_view(pattern_name="portal:stations")),
    path("admin/", admin.site.urls),
    path("portal/", include("portal.urls")),
    path("api/", include("portal.api_urls")),
    path("healthz", health.healthz),
    path("readyz", health.readyz),
    # the gateway serves its few static files itself (portal, admin; no proxy needed on a laptop);
    # behind a proxy, `collectstatic` into STATIC_ROOT and let the proxy serve /static/ instead
    re_path(r"^static/(?P<path>.*)$", serve_static, {"insecure": True}),
    path("metrics", metrics.metrics),
]
