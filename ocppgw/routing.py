from channels.auth import AuthMiddlewareStack
from channels.security.websocket import AllowedHostsOriginValidator
from django.urls import re_path

from portal.live import LiveConsumer
from stations.consumers import OcppConsumer

# the cid is taken from scope["raw_path"] by the consumer (one segment, decoded once);
# this pattern only routes, so it accepts anything after /ocpp/ and lets the consumer refuse
# ("/ocpp" itself too: refused like an empty cid, not a 500 from an unrouted path)
# (?s): a percent-decoded newline in the path must still route, to be refused by the consumer
# No origin check on /ocpp/ (charge points send no Origin header); the portal's socket is a
# browser's, so its Origin must be one of ALLOWED_HOSTS (cross-site WebSocket hijacking)
websocket_urlpatterns = [
    re_path(r"(?s)^ocpp(?:/(?P<rest>.*))?$", OcppConsumer.as_asgi()),
    re_path(
        r"^portal/live/$", AllowedHostsOriginValidator(AuthMiddlewareStack(LiveConsumer.as_asgi()))
    ),
]
