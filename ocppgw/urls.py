from django.contrib import admin
from django.urls import include, path

from ocppgw import health

urlpatterns = [
    path("admin/", admin.site.urls),
    path("portal/", include("portal.urls")),
    path("healthz", health.healthz),
    path("readyz", health.readyz),
]
