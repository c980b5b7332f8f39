from django.urls import re_path

from stations.consumers import OcppConsumer

# the cid is taken from scope["raw_path"] by the consumer (one segment, decoded once);
# this pattern only routes, so it accepts anything after /ocpp/ and lets the consumer refuse
websocket_urlpatterns = [re_path(r"^ocpp/(?P<rest>.*)$", OcppConsumer.as_asgi())]
