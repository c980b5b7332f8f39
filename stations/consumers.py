"""The OCPP WebSocket consumer: connect (identity, subprotocol, auth), receive, disconnect.

Orchestration only: each step is one call into a core module. Refusing before `accept()` makes
Daphne answer HTTP 403 (it cannot send 401).
"""

import asyncio
import datetime
import functools
import logging
import secrets

from channels.consumer import get_handler_name
from channels.db import database_sync_to_async
from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncWebsocketConsumer

from ocppgw import logs
from stations import auth, identity, metrics, proxy
from stations.gateway import get_gateway
from stations.session import UNACKED_HIGH, Session

log = logging.getLogger("ocppgw.consumer")

THROTTLE_STRIKES = 10  # every 10th CALL refused in a row for rate, pause taking its frames
THROTTLE_S = 0.5


class OcppConsumer(AsyncWebsocketConsumer):
    session: Session | None = None
    finished = False
    abusive = False  # closed 1008: its later frames are dropped unread

    async def __call__(self, scope, receive, send):
        # A plain receive loop instead of Channels' await_many_dispatch, which creates a task and
        # an asyncio.wait per frame. No channel layer: frames are routed by the gateway's
        # registry, so a station socket never polls Redis (a Redis outage only pauses
        # coordination between processes).
        self.scope, self.channel_layer, self.base_send = scope, None, send
        dispatch = self.dispatch
        backlog = getattr(receive, "__self__", None)  # the queue Daphne fills with its frames
        try:
            while True:
                await dispatch(await receive())
                if backlog is not None and backlog.qsize():
                    # more frames wait: take the next one after the other stations' frames;
                    # a thousand flooders' backlogs taken whole held a polite station for
                    # seconds (measured with 1,000 flooders: p99 2.9 s -> 0.2-0.4 s)
                    await asyncio.sleep(0)
        except StopConsumer:
            pass

    async def dispatch(self, message):
        # Channels' dispatch runs close_old_connections() on the database thread before every
        # message: one thread hop per frame, queued behind the message-log writer. The ORM is
        # used only at connect, inside database_sync_to_async, which closes old connections.
        if message["type"] == "websocket.receive":
            await self.receive(message.get("text"), message.get("bytes"))
        else:
            await getattr(self, get_handler_name(message))(message)

    async def connect(self):
        gw = self.gw = get_gateway()
        s = gw.settings
        self.cid = identity.cid_from_raw_path(self.scope.get("raw_path") or b"") or ""
        problem = identity.validate(self.cid)
        if problem:
            return await self._refuse(problem, self.cid[:48], log_it=False)
        logs.cid_var.set(self.cid)  # this consumer's task: every later log line names it
        self.cid_key = identity.key(self.cid)
        if not gw.accepting:
            return await self._refuse("gateway not accepting: broker unavailable")
        headers = dict(self.scope.get("headers") or [])
        client_ip = (self.scope.get("client") or [None])[0]
        tls, subject, address = proxy.transport(client_ip, headers, tuple(s.OCPPGW_TRUSTED_PROXIES))
        if s.OCPPGW_AUTH == "none":
            credentials = await _station_for(self.cid, self.cid_key)
        else:
            credentials, reason = await gw.gatekeeper.authenticate(
                self.cid_key, headers.get(b"authorization"), address
            )
            if credentials is None:
                return await self._refuse(reason)
        refusal = proxy.profile_refusal(credentials.security_profile, tls, subject, self.cid_key)
        if refusal:
            return await self._refuse(refusal)
        self.cid, self.station_id = credentials.cid, credentials.station_id  # shown as created
        self.version = self._pick_version(s)
        if self.version is None:
            # 1.6J §3.1.2, 2.0.1 §3.2: complete the handshake without a subprotocol, then close
            await self.accept()
            gw.writer.add(
                cid=self.cid,
                station_id=self.station_id,
                direction="gw",
                outcome="refused",
                reason="no acceptable OCPP subprotocol offered",
            )
            return await self.close(code=1002)
        self.connection_id = secrets.token_hex(8)
        self.claim_seq = gw.cluster.next_seq()
        self.authenticated_at = datetime.datetime.now(datetime.UTC)
        self.session = Session(
            gw,
            cid=self.cid,
            cid_key=self.cid_key,
            station_id=self.station_id,
            version=self.version,
            connection=self.connection_id,
            send=self._send_text,
            close=self._close_soon,
        )
        offered = self.scope.get("subprotocols") or []
        await self.accept(subprotocol=f"ocpp{self.version}" if offered else None)
        await gw.register(self)
        gw.publish_presence(self.cid, "connected", self.connection_id, self.version, "connected")
        gw.writer.connected(self.station_id, self.connection_id, gw.node, self.version)
        gw.writer.add(
            cid=self.cid,
            station_id=self.station_id,
            direction="gw",
            outcome="connected",
            reason=f"OCPP {self.version} from {address}",
        )
        log.info("%s connected (OCPP %s, %s)", self.cid, self.version, address)

    def _pick_version(self, s) -> str | None:
        offered = self.scope.get("subprotocols") or []
        for name in offered:  # the station's order of preference
            if name in s.OCPPGW_SUBPROTOCOLS:
                return name.removeprefix("ocpp")
        if not offered and s.OCPPGW_DEFAULT_SUBPROTOCOL:
            return s.OCPPGW_DEFAULT_SUBPROTOCOL.removeprefix("ocpp")
        return None

    async def _refuse(self, reason: str, cid: str | None = None, log_it: bool = True):
        cid = cid if cid is not None else self.cid
        log.warning("refused %r: %s", cid, reason)
        metrics.refused(reason)
        if log_it:
            self.gw.writer.refused(self.cid_key, reason)
            self.gw.writer.add(
                cid=cid, station_id=None, direction="gw", outcome="refused", reason=reason
            )
        await self.close()

    async def receive(self, text_data=None, bytes_data=None):
        if bytes_data is not None:
            return await self.close(code=1003)  # OCPP-J frames are text
        limit = self.gw.settings.OCPPGW_MAX_FRAME_BYTES
        if len(text_data) * 4 > limit and len(text_data.encode()) > limit:
            return await self.close(code=1009)
        session = self.session
        if self.abusive:
            return  # closed for abuse: what it sent meanwhile is not taken (nor logged: cheap)
        session.on_text(text_data)
        if session.bucket.strikes and session.bucket.strikes % THROTTLE_STRIKES == 0:
            # a station far over its rate: stop taking its frames for a moment, so Daphne stops
            # reading its socket (ocppgw/wsprotocol.py) and it cannot starve the others
            await asyncio.sleep(THROTTLE_S)
        if session.unacked >= UNACKED_HIGH:
            await session.broker_caught_up()  # the same pushback, from the broker side

    async def disconnect(self, code):
        self.finish(f"closed ({code})")

    def finish(self, reason: str) -> None:
        """Release the station once: answer pending backend calls, publish presence if current."""
        if self.session is None or self.finished:
            return
        self.finished = True
        self.session.end(reason)
        gw = self.gw
        if gw.unregister(self):
            gw.publish_presence(self.cid, "disconnected", self.connection_id, self.version, reason)
            gw.writer.disconnected(self.station_id, self.connection_id)
        gw.writer.add(
            cid=self.cid,
            station_id=self.station_id,
            direction="gw",
            outcome="disconnected",
            reason=reason,
        )
        log.info("%s disconnected: %s", self.cid, reason)

    # --- called by the gateway and the session (on the loop) ----------------------------------------
    def replaced(self) -> None:
        """A newer connection of the same station won: close this one, never mark it offline."""
        if self.finished:
            return
        self.finished = True
        self.session.end("replaced by a newer connection")
        self.gw.unregister(self)
        self.gw.writer.add(
            cid=self.cid,
            station_id=self.station_id,
            direction="gw",
            outcome="disconnected",
            reason="replaced by a newer connection",
        )
        self._close_soon(1000, "replaced by a newer connection")

    def kick(self, reason: str, code: int = 1000) -> None:
        self._close_soon(code, reason[:120])

    def _send_text(self, text: str) -> None:
        self._send_now({"type": "websocket.send", "text": text})

    def _close_soon(self, code: int, reason: str | None = None) -> None:
        if code == 1008:
            self.abusive = True
        message = {"type": "websocket.close", "code": code}
        if reason:
            message["reason"] = reason
        self._send_now(message)

    def _send_now(self, message: dict) -> None:
        """Hand a message to the socket without awaiting (the session's callers are not async)."""
        send = self.base_send
        if isinstance(send, functools.partial) and send.func.__name__ == "handle_reply":
            # Daphne's ASGI send is a coroutine that only calls the Twisted protocol: call it
            # here, as Daphne would, rather than a task per frame (~4 objects and a loop step)
            server, protocol = send.func.__self__, send.args[0]
            state = server.connections.get(protocol)
            if state is None or state.get("disconnected"):
                return
            try:
                protocol.handle_reply(message)
            except Exception as exc:
                log.debug("%s: write on a closing socket: %s", self.cid, exc)
        else:  # another ASGI server, or the test communicator
            asyncio.get_running_loop().create_task(self._quietly(send(message)))

    async def _quietly(self, operation) -> None:
        # the socket may close between a decision and its write: disconnect() then follows,
        # which answers the station's pending work; nothing to do here but not to raise
        try:
            await operation
        except Exception as exc:
            log.debug("%s: write on a closing socket: %s", self.cid, exc)


@database_sync_to_async
def _station_for(cid: str, cid_key: str) -> auth.Credentials:
    """OCPPGW_AUTH=none: stations appear on first connect."""
    from stations.models import Station

    station, _ = Station.objects.get_or_create(cid_key=cid_key, defaults={"cid": cid})
    return auth.Credentials(station.id, station.cid, cid_key, True, True, 1, "", "", None)
