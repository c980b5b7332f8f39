from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView

from ocppgw import health

urlpatterns = [
    path("", RedirectView.as_view(pattern_name="portal:stations")),
    path("admin/", admin.site.urls),
    path("portal/", include("portal.urls")),
    path("api/", include("portal.api_urls")),
    path("healthz", health.healthz),
    path("readyz", health.readyz),
]
