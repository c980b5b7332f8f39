"""Whether a WebSocket handshake becomes a station connection (docs/contract.md §1).

Identity from the path, the gateway accepting, HTTP Basic against Django credentials, the
security profile against the transport, and the subprotocol: each check is one call into a core
module; the consumer only acts on the verdict.
"""

import dataclasses
import datetime
import secrets

from channels.db import database_sync_to_async

from ocppgw import logs
from stations import auth, gatekeeper, identity, proxy, subprotocols
from stations.port import StationInfo
from stations.refusals import Refusal


@dataclasses.dataclass(slots=True)
class Refused:
    reason: str  # a refusals.Refusal: its label is the metric's
    cid: str  # as seen in the path (shortened when it is not a valid id)
    known: bool = True  # a valid id: the refusal is written to the message log


@dataclasses.dataclass(slots=True)
class Admitted:
    station: StationInfo
    address: str
    subprotocol: str | None  # echoed as offered; None: it offered none and got the default
    no_version: Refusal | None = None  # no acceptable subprotocol: accept, then close 1002


async def admit(gw, scope) -> Refused | Admitted:
    """The verdict on one handshake."""
    s = gw.settings
    cid, problem = identity.parse_path(scope.get("raw_path") or b"")
    cid = cid or ""
    problem = problem or identity.validate(cid)  # the refusal names the rule
    if problem:
        return Refused(Refusal("bad_id", problem), cid[:48], known=False)
    logs.cid_var.set(cid)  # the consumer's task: every later log line names the station
    cid_key = identity.key(cid)
    if not gw.accepting:
        return Refused(Refusal("not_accepting", "gateway not accepting: broker unavailable"), cid)
    full = _capacity(gw, cid_key, gw.handshaking)  # this one is in gw.handshaking too
    if full:
        return Refused(full, cid, known=False)
    headers = dict(scope.get("headers") or [])
    client_ip = (scope.get("client") or [None])[0]
    tls, subject, address = proxy.transport(client_ip, headers, tuple(s.OCPPGW_TRUSTED_PROXIES))
    if s.OCPPGW_AUTH == "none":
        credentials = await _station_for(cid, cid_key)
    else:
        credentials, reason = await gw.gatekeeper.authenticate(
            cid_key, headers.get(b"authorization"), address
        )
        if credentials is None:
            return Refused(reason, cid)
    refusal = proxy.profile_refusal(credentials.security_profile, tls, subject, cid_key)
    if refusal:
        return Refused(Refusal("security_profile", refusal), cid)
    offered = scope.get("subprotocols") or []
    version, echoed, refusal = subprotocols.pick(
        offered, s.OCPPGW_SUBPROTOCOLS, s.OCPPGW_SUBPROTOCOL_ALIASES, s.OCPPGW_DEFAULT_SUBPROTOCOL
    )
    station = StationInfo(
        credentials.cid,  # as created
        cid_key,
        credentials.station_id,
        version or "",
        connection_id=secrets.token_hex(8),
        claim_seq=gw.cluster.next_seq(),
        authenticated_at=datetime.datetime.now(datetime.UTC),
        validation_policy=credentials.validation_policy,
    )
    no_version = Refusal("no_subprotocol", refusal) if refusal else None
    return Admitted(station, address, echoed, no_version)


def refuse_early(gw, raw_path: bytes, authorization: bytes | None) -> Refusal | None:
    """A retryable refusal decided from the request line and one header, before the application.

    A storm's refused stations come back within seconds, and each refusal made by admit() cost
    a whole ASGI application (bench/README.md, T9); this one costs a dict lookup. Only the two
    "not now" answers, and only when certain without I/O: the process is full, or its password
    checks (or the handshakes under way at the edge, which a storm's burst fills before any
    check is queued) are past OCPPGW_MAX_PENDING_HANDSHAKES and this password is not known
    verified, here or by another process of the node (its claims say so). Everything else is
    left to admit().
    """
    # asked before this connection is a WebSocket: neither a handshake nor an open socket yet
    handshakes, uncounted = gw.handshaking + 1, 1
    edge = gw.edge_handshakes
    backlogged = gw.gatekeeper.backlogged(edge() if edge is not None else 0)
    if not backlogged and not _over(gw, handshakes, uncounted):
        return None
    cid, problem = identity.parse_path(raw_path)
    if problem or not cid or identity.validate(cid):
        return None  # admit() refuses it with the rule it broke
    cid_key = identity.key(cid)
    full = _capacity(gw, cid_key, handshakes, uncounted)
    if full or cid_key in gw.registry:
        return full  # a station held here replaces its connection: never refused
    if (
        backlogged
        and gw.settings.OCPPGW_AUTH != "none"
        and not gw.gatekeeper.remembers(cid_key, authorization)
    ):
        return gatekeeper.AUTH_BACKLOG
    return None


def _over(gw, handshakes: int, uncounted: int = 0) -> bool:
    """Whether the places taken pass the process's bound: its open sockets where the edge
    counts them (plus `uncounted`, asked about before it counts them), else the stations held
    plus `handshakes` in progress. Sockets, because the bound is the fd limit's
    (stations/limits.py): a station whose old socket is gone but not yet released here,
    reconnecting, takes one place, not two."""
    sockets = gw.open_sockets
    taken = sockets() + uncounted if sockets is not None else len(gw.registry) + handshakes
    return taken > gw.max_stations


def _capacity(gw, cid_key: str, handshakes: int, uncounted: int = 0) -> Refusal | None:
    """The capacity refusal, if due; a station held here is never refused: its new connection
    replaces the old one."""
    if _over(gw, handshakes, uncounted) and cid_key not in gw.registry:
        return Refusal(
            "capacity", f"gateway full ({gw.max_stations} stations per process): retry later"
        )
    return None


@database_sync_to_async
def _station_for(cid: str, cid_key: str) -> auth.Credentials:
    """OCPPGW_AUTH=none: stations appear on first connect."""
    from stations.models import Station

    station, _ = Station.objects.get_or_create(cid_key=cid_key, defaults={"cid": cid})
    return auth.Credentials(station.id, station.cid, cid_key, True, True, 1, "", "", None)
