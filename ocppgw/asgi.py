"""ASGI entry point: Django first, then the protocol router (HTTP for operators, /ocpp/ for stations).

With OCPPGW_ADMIN_PORT set, the listener a request arrived on decides what it may reach
(docs/contract.md §3): the stations' port serves only `/ocpp/` WebSockets (everything else 404, or 403 for
other WebSockets), and the admin port serves portal, admin, API, metrics and health but refuses
`/ocpp/`. The port is Daphne's `scope["server"][1]`, the local port the socket was accepted on.
"""

import logging
import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ocppgw.settings")
django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.conf import settings  # noqa: E402

from ocppgw.routing import websocket_urlpatterns  # noqa: E402


def _is_station_path(path: str) -> bool:
    return path == "/ocpp" or path.startswith("/ocpp/")


log = logging.getLogger("ocppgw.asgi")


def _is_routed(path: str) -> bool:
    return any(route.pattern.regex.search(path[1:]) for route in websocket_urlpatterns)


def known_paths_only(app):
    """Wrap the WebSocket router: a socket on no route (only /ocpp/ and the portal's live socket
    have one) is refused with one log line (HTTP 403 under Daphne, which cannot send 404 to a
    WebSocket), never Channels' "No route found" 500 and a traceback."""

    async def refuse_others(scope, receive, send):
        if _is_routed(scope.get("path", "")):
            return await app(scope, receive, send)
        path = (scope.get("raw_path") or b"")[:120].decode("ascii", "backslashreplace")
        log.warning("refused WebSocket on %r: stations connect to /ocpp/<charge point id>", path)
        await receive()  # websocket.connect; closing before accept = HTTP 403
        await send({"type": "websocket.close", "code": 1008})

    return refuse_others


def split_ports(app):
    """Wrap `app` so operator surfaces and station sockets stay on their own listeners."""

    async def by_port(scope, receive, send):
        admin_port = settings.OCPPGW_ADMIN_PORT  # read per connection: rungateway may set it
        if not admin_port or scope["type"] not in ("http", "websocket"):
            return await app(scope, receive, send)
        server = scope.get("server")
        on_admin = bool(server) and server[1] == admin_port
        station_path = _is_station_path(scope.get("path", ""))
        allowed = (
            (not station_path) if on_admin else (scope["type"] == "websocket" and station_path)
        )
        if allowed:
            return await app(scope, receive, send)
        if scope["type"] == "websocket":
            await receive()  # websocket.connect; closing before accept = HTTP 403 under Daphne
            await send({"type": "websocket.close", "code": 1008})
            return
        await send(
            {
                "type": "http.response.start",
                "status": 404,
                "headers": [(b"content-type", b"text/plain; charset=utf-8")],
            }
        )
        await send({"type": "http.response.body", "body": b"Not Found\n"})

    return by_port


# no AllowedHostsOriginValidator on /ocpp/: charge points send no Origin header
application = split_ports(
    ProtocolTypeRouter(
        {"http": django_asgi_app, "websocket": known_paths_only(URLRouter(websocket_urlpatterns))}
    )
)
