"""The OCPP WebSocket consumer: a thin ASGI adapter between Daphne and a station's conversation.

connect -> admission.admit(); receive -> Conversation.on_text(); disconnect -> finish(). Nothing
else calls into it: the gateway holds the conversation, which writes to the socket through
ocppgw.edge.socket. Refusing before `accept()` makes Daphne answer HTTP 403 (it cannot send 401);
a retryable refusal (refusals.RETRYABLE) closes with 1013 before `accept()`, which ocppgw/edge
answers HTTP 503 with Retry-After.
"""

import asyncio
import logging

from channels.consumer import get_handler_name
from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncWebsocketConsumer

from ocppgw.edge.socket import SocketWriter, backlog
from stations import admission, identity, metrics, refusals
from stations.conversation import Conversation
from stations.gateway import get_gateway

log = logging.getLogger("ocppgw.consumer")


class OcppConsumer(AsyncWebsocketConsumer):
    conversation: Conversation | None = None

    async def __call__(self, scope, receive, send):
        # A plain receive loop instead of Channels' await_many_dispatch, which creates a task and
        # an asyncio.wait per frame. No channel layer: frames are routed by the gateway's
        # registry, so a station socket never polls Redis (a Redis outage only pauses
        # coordination between processes).
        self.scope, self.channel_layer, self.base_send = scope, None, send
        dispatch = self.dispatch
        waiting = backlog(receive)
        try:
            while True:
                await dispatch(await receive())
                if waiting is not None and waiting.qsize():
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
        gw.handshaking += 1  # counted against capacity until held or refused (admission.py)
        try:
            await self._connect(gw)
        finally:
            gw.handshaking -= 1

    async def _connect(self, gw):
        verdict = await admission.admit(gw, self.scope)
        if isinstance(verdict, admission.Refused) and refusals.retryable(verdict.reason):
            log.info("refused %r: %s", verdict.cid, verdict.reason)
            metrics.refused(verdict.reason)
            after = refusals.retry_after(gw.settings.OCPPGW_RETRY_AFTER_S)
            close = {"type": "websocket.close", "code": 1013, "reason": verdict.reason}
            return await self.base_send(close | {"retry_after": after})
        if isinstance(verdict, admission.Refused):
            log.warning("refused %r: %s", verdict.cid, verdict.reason)
            metrics.refused(verdict.reason)
            if verdict.known:
                gw.writer.refused(identity.key(verdict.cid), verdict.reason)
                gw.writer.add(
                    cid=verdict.cid,
                    station_id=None,
                    direction="gw",
                    outcome="refused",
                    reason=verdict.reason,
                )
            return await self.close()
        st = verdict.station
        reason = verdict.no_version
        if reason:
            # 1.6J §3.1.2, 2.0.1 §3.2: complete the handshake without a subprotocol, then close
            await self.accept()
            log.warning("refused %r: %s", st.cid, reason)
            metrics.refused(reason)
            gw.writer.refused(st.cid_key, reason)  # the portal's "last refused connection"
            gw.writer.add(
                cid=st.cid,
                station_id=st.station_id,
                direction="gw",
                outcome="refused",
                reason=reason,
            )
            return await self.close(code=1002)
        self.conversation = Conversation(gw, st, SocketWriter(self.base_send, st.cid))
        await self.accept(subprotocol=verdict.subprotocol)
        await gw.attach(self.conversation, verdict.address)
        log.info("%s connected (OCPP %s, %s)", st.cid, st.version, verdict.address)

    async def receive(self, text_data=None, bytes_data=None):
        if bytes_data is not None:
            return await self.close(code=1003)  # OCPP-J frames are text
        limit = self.gw.settings.OCPPGW_MAX_FRAME_BYTES
        if len(text_data) * 4 > limit and len(text_data.encode()) > limit:
            return await self.close(code=1009)
        conversation = self.conversation
        if conversation.abusive:
            # closed for abuse: what it sent meanwhile is not taken nor logged, only counted
            metrics.FRAMES_AFTER_ABUSE.inc()
            return
        conversation.on_text(text_data)
        await conversation.pushback()

    async def disconnect(self, code):
        if self.conversation is not None:
            self.conversation.finish(f"closed ({code})")

    async def websocket_disconnect(self, message):
        # Channels' version also runs close_old_connections() through the one thread-sensitive
        # executor thread: a thread hop per closed socket. In a reconnect storm every station's
        # old socket closes at once; without the hop a remembered storm of 8,000 on one process
        # took ~10% less CPU per handshake (bench/README.md). The ORM is used only inside
        # database_sync_to_async, which closes old connections itself; there are no groups.
        await self.disconnect(message["code"])
        raise StopConsumer()
