from django.urls import re_path

from stations.consumers import OcppConsumer

# the cid is taken from scope["raw_path"] by the consumer (one segment, decoded once);
# this pattern only routes, so it accepts anything after /ocpp/ and lets the consumer refuse
# ("/ocpp" itself too: refused like an empty cid, not a 500 from an unrouted path)
websocket_urlpatterns = [re_path(r"^ocpp(?:/(?P<rest>.*))?$", OcppConsumer.as_asgi())]
