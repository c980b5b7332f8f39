"""ASGI entry point: Django first, then the protocol router (HTTP for operators, /ocpp/ for stations)."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ocppgw.settings")
django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from ocppgw.routing import websocket_urlpatterns  # noqa: E402

# no AllowedHostsOriginValidator on /ocpp/: charge points send no Origin header
application = ProtocolTypeRouter(
    {"http": django_asgi_app, "websocket": URLRouter(websocket_urlpatterns)}
)
