"""What a station's conversation may ask of the gateway: the narrow port it acts through.

The conversation (conversation.py) never touches the bridge, the registry, the database or the
socket itself: it calls this port (implemented by `gateway.Gateway`, faked by the tests'
`RecordingGateway`) and its `Link` (implemented by `ocppgw.edge.socket.SocketWriter`).
"""

import dataclasses
import datetime
from typing import Protocol


@dataclasses.dataclass(slots=True)
class StationInfo:
    """Who is on the other end of one connection, fixed once the handshake is done."""

    cid: str  # as the station spells it (as created, once authenticated)
    cid_key: str  # identity.key(cid): what stations are matched by
    station_id: int | None  # the Station row (None when answering for a station held nowhere)
    version: str  # "1.6", "2.0.1", "2.1"; "" when unknown
    connection_id: str = ""
    claim_seq: int = 0  # orders connections of one station across processes (cluster.py)
    authenticated_at: datetime.datetime | None = None
    validation_policy: str = ""  # the Station row's; "" = the gateway's (stations/quirks.py)


class Link(Protocol):
    """The station's socket."""

    def send(self, text: str) -> None: ...

    def close(self, code: int, reason: str | None = None) -> None: ...


class Writer(Protocol):
    """The batched message log (msglog.Writer)."""

    def add(self, **row) -> None: ...

    def count(self, station_id, inbound: bool) -> None: ...

    def lenient(self, station_id) -> None: ...

    def facts(self, station_id, version: str, action: str, payload) -> None: ...

    def disconnected(self, station_id, connection_id: str) -> None: ...


class GatewayPort(Protocol):
    settings: object
    node: str
    writer: Writer

    def publish(self, direction, station: StationInfo, action, frame, body: bytes):
        """Publish a station frame's envelope; returns (Pending or None, topic)."""

    def publish_raw(self, kind, station: StationInfo, action, unique_id, body: bytes) -> str:
        """Publish a gateway-written envelope on the error or notice topic; returns the topic."""

    def respond(self, response_topic: str, correlation, body: bytes) -> None:
        """The same envelope to an MQTT 5 Response Topic."""

    def publish_presence(self, cid, status, connection_id, version, reason) -> None: ...

    def check(self, direction, version, action, kind, payload):
        """A schema violation under the validation policy, or None."""

    def new_bucket(self): ...

    def store_password(self, station: StationInfo, secret: str) -> None:
        """The station accepted a new password (set through OCPP): store its hash, off the loop."""

    def unregister(self, conversation) -> bool:
        """Forget a connection; True when it was the station's current one."""
