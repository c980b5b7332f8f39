"""A charge point on the real ASGI application, in process (no Daphne), with the scope Daphne builds.

WebsocketCommunicator bypasses Daphne (no 403, no frame limit, no raw_path): the scope is built
here as Daphne builds it; tests/e2e/ covers what only Daphne does. The `gateway` and
`station_factory` fixtures are in tests/conftest.py.
"""

import json

from asgiref.testing import ApplicationCommunicator
from channels.testing import WebsocketCommunicator
from prometheus_client import REGISTRY

from ocppgw.asgi import application
from tests.conftest import PASSWORD, basic

MARKER = '[2, "marker", "Heartbeat", []]'  # fails its schema: answered at once with a CALLERROR


class ChargePoint(WebsocketCommunicator):
    """A charge point talking to the real application, with the scope Daphne would build."""

    def __init__(self, path: str, *, auth=None, subprotocols=("ocpp1.6",), headers=()):
        all_headers = [(b"host", b"127.0.0.1"), *headers]
        if auth is not None:
            all_headers.append((b"authorization", auth.encode()))
        self.scope = {
            "type": "websocket",
            "path": path.split("?")[0],
            "raw_path": path.encode(),  # Daphne passes the undecoded bytes here
            "query_string": b"",
            "headers": all_headers,
            "subprotocols": list(subprotocols),
            "client": ("127.0.0.1", 40000),
            "server": ("127.0.0.1", 33033),
        }
        ApplicationCommunicator.__init__(self, application, self.scope)
        self.response_headers = None

    async def close_code(self, timeout_s=2) -> int:
        """The code of the close the application sends next."""
        output = await self.receive_output(timeout_s)
        assert output["type"] == "websocket.close", output
        return output.get("code", 1000)

    async def answer(self, timeout_s=2) -> list:
        """The next frame the gateway sends to the station, decoded."""
        return json.loads(await self.receive_from(timeout_s))


async def connect(cid, *, user=None, password=PASSWORD, version="1.6", path_cid=None):
    """Connect as `cid` and assert the handshake was accepted with the version."""
    station = ChargePoint(
        f"/ocpp/{path_cid or cid}",
        auth=basic(user or cid, password),
        subprotocols=[f"ocpp{version}"],
    )
    connected, subprotocol = await station.connect(timeout=5)
    assert connected, "the station was refused"
    assert subprotocol == f"ocpp{version}"
    return station


async def probe_for(mqtt_probe, cid):
    probe = mqtt_probe(
        [
            f"ocpp/cp/{cid}/#",
            f"ocpp/cp/Reply/{cid}",
            f"ocpp/cp/Error/{cid}",
            f"ocpp/gw/Notice/{cid}",
            f"ocpp/presence/{cid}",
        ]
    )
    return probe


# the code for a frame that cannot be classified, per version
RPC = {"1.6": "FormationViolation", "2.0.1": "RpcFrameworkError", "2.1": "RpcFrameworkError"}


def refusals(label: str) -> float:
    """Handshakes refused so far with this metric label."""
    return REGISTRY.get_sample_value("ocppgw_auth_refusals_total", {"reason": label}) or 0.0
