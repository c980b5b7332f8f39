"""One station's OCPP-J conversation: its frames, its outstanding CALLs, the state both sides share.

The consumer feeds it text from the socket and the gateway feeds it backend envelopes (handled by
`downstream.BackendSide`); it answers through `send` (text to the station) and `close` (code), and
publishes through the gateway. A station that pipelines CALLs is not punished (each CALL has its
own timer).
"""

import asyncio
import collections
import logging
import time

from channels.db import database_sync_to_async

from ocppgw import logs
from stations import envelopes, frames, metrics, rotation, services, validation
from stations.downstream import BackendCall, BackendSide
from stations.frames import CALL, CALLERROR, CALLRESULT, CALLRESULTERROR, SEND, Frame

log = logging.getLogger("ocppgw.session")

# answered or expired CALL ids remembered per direction, for [5] frames and late answers: a [5]
# follows the answer it rejects, and a late answer its timeout, so a short window serves both
RECENT_IDS = 64
# station CALLs awaiting the backend; bounds memory when the call timeout is off (0)
MAX_PENDING_CP_CALLS = 1000
# a station with this many frames not yet acknowledged by the broker is not read until it is
# down to LOW: a station (or a thousand) sending past what the broker path takes cannot pile
# messages up in memory, and well-behaved stations (one outstanding CALL) never wait
UNACKED_HIGH, UNACKED_LOW = 16, 8


class _Recent(collections.OrderedDict):
    """A small LRU of UniqueId -> action; of size 0, it remembers nothing."""

    def __init__(self, size: int = RECENT_IDS):
        super().__init__()
        self.size = size

    def remember(self, key, value):
        if self.size:
            self[key] = value
            if len(self) > self.size:
                self.popitem(last=False)


class Session(BackendSide):
    def __init__(self, gw, *, cid, cid_key, station_id, version, connection, send, close):
        self.gw = gw
        self.cid, self.cid_key, self.station_id = cid, cid_key, station_id
        self.version = version
        self.connection = connection
        self._send, self._close = send, close
        self.loop = asyncio.get_running_loop()
        s = gw.settings
        self.call_timeout = s.OCPPGW_CALL_TIMEOUT_S
        self.queue_len = s.OCPPGW_QUEUE_LEN
        self.bucket = gw.new_bucket()
        # station -> backend CALLs awaiting the backend's answer: id -> [action, timer, pending]
        self.cp_pending: dict[str, list] = {}
        # answered CALLs matter only to a [5] (CALLRESULTERROR), which OCPP 2.1 alone has;
        # elsewhere the window would be kilobytes per station kept for nothing
        answered = RECENT_IDS if version == "2.1" else 0
        self.cp_answered, self.cp_expired = _Recent(answered), _Recent()
        # backend -> station CALLs: one in flight, the rest queued
        self.queue: collections.deque[BackendCall] = collections.deque()
        self.inflight: BackendCall | None = None
        self.backend_answered, self.backend_expired = _Recent(answered), _Recent()
        self.closed = False
        self.last_rx = time.monotonic()  # for OCPPGW_IDLE_TIMEOUT_S
        self.unacked = 0  # this station's frames published, not yet acknowledged by the broker
        self._acked_enough: asyncio.Event | None = None

    # --- helpers ---------------------------------------------------------------------------------
    def send(self, text, frame_type, unique_id, action, outcome="sent", reason="", logged=None):
        """Send text to the station and log it (`logged` replaces text that holds a secret)."""
        self._send(text)
        if frame_type == CALLERROR and reason:  # gateway-made (a forwarded one has no reason)
            metrics.callerror_sent(text)
        self.gw.writer.count(self.station_id, inbound=False)
        self.log("out", frame_type, unique_id, action, logged or text, outcome, reason)

    def log(self, direction, frame_type, unique_id, action, raw, outcome, reason="", topic=""):
        metrics.frame(direction, frame_type, action)
        self.gw.writer.add(
            cid=self.cid,
            station_id=self.station_id,
            direction=direction,
            message_type=frame_type,
            unique_id=unique_id,
            action=action or "",
            raw=raw,
            outcome=outcome,
            reason=reason,
            topic=topic,
        )

    def _publish(self, direction, frame: Frame, action, raw_in, *, late=False, call=None):
        body = envelopes.upstream(frame, action, late=late)
        pending, topic = self.gw.publish(direction, self, action, frame, body)
        if pending is not None and pending.qos:
            self.unacked += 1
            pending.done = self._acked
        metrics.published(pending, self.last_rx)
        self.log(
            "in",
            frame.type,
            frame.id,
            action,
            raw_in,
            "published" if pending else "dropped",
            "" if pending else "broker buffer full",
            topic,
        )
        if call is not None and call.response_topic:
            self.gw.respond(call.response_topic, call.correlation, body)
        return pending

    def _acked(self) -> None:
        self.unacked -= 1
        if self._acked_enough is not None and self.unacked <= UNACKED_LOW:
            self._acked_enough.set()
            self._acked_enough = None

    async def broker_caught_up(self) -> None:
        """Wait until the broker has taken most of this station's frames (see UNACKED_HIGH)."""
        if self.unacked >= UNACKED_HIGH:
            if self._acked_enough is None:
                self._acked_enough = asyncio.Event()
            await self._acked_enough.wait()

    def _gateway_error(
        self, unique_id, action, code, description, reason, *, call=None, notice=False, extra=None
    ):
        """Tell the backend what the gateway could not do (error topic) or noticed (notice topic)."""
        body = envelopes.gateway_error(
            unique_id, action, code, description, reason, self.gw.node, extra
        )
        metrics.gateway_error(reason, notice)
        topic = self.gw.publish_raw("notice" if notice else "error", self, action, unique_id, body)
        self.log("gw", CALLERROR, unique_id, action, body, "published", reason, topic)
        if call is not None and call.response_topic:
            self.gw.respond(call.response_topic, call.correlation, body)

    def _reject_invalid(
        self, direction, frame_type, unique_id, action, raw, violation, *, call=None
    ):
        """Log a frame that failed its schema and tell the backend, naming the path and rule:
        on the error topic when it answers the backend's own `call`, else as a notice."""
        self.log(direction, frame_type, unique_id, action, raw, "rejected", violation.description)
        self._gateway_error(
            unique_id,
            action,
            violation.code,
            violation.description,
            "invalid",
            call=call,
            notice=call is None,
            extra={"path": violation.path, "rule": violation.rule},
        )

    def _check(self, direction, action, kind, payload):
        """A schema violation that must stop the frame, or None (logged-only violations pass)."""
        violation = self.gw.check(direction, self.version, action, kind, payload)
        if violation and self.gw.settings.OCPPGW_VALIDATION_FAILURE == "log":
            log.info(
                "%s %s %s: %s (passed: validation failure mode is log)",
                self.cid,
                direction,
                action,
                violation.description,
            )
            return None
        return violation

    # --- frames from the station -----------------------------------------------------------------
    def on_text(self, text: str) -> None:
        """Handle one text message from the station."""
        self.last_rx = time.monotonic()
        self.gw.writer.count(self.station_id, inbound=True)
        try:
            frame = frames.parse(text, self.version)
            logs.unique_id_var.set(frame.id)
        except frames.FrameError as exc:
            self.log("in", None, exc.unique_id, "", text, "rejected", exc.description)
            self.send(
                frames.call_error(exc.unique_id, exc.code, exc.description),
                CALLERROR,
                exc.unique_id,
                "",
                "sent",
                exc.code,
            )
            return
        except frames.Ignored as exc:
            self.log("in", exc.frame_type, exc.unique_id, "", text, "ignored", exc.reason)
            return
        handler = {
            CALL: self._cp_call,
            SEND: self._cp_send,
            CALLRESULT: self._cp_result,
            CALLERROR: self._cp_error,
            CALLRESULTERROR: self._cp_result_error,
        }
        handler[frame.type](frame, text)

    def _refuse_call(self, frame, text, code, description, reason):
        self.log("in", CALL, frame.id, frame.action, text, "rejected", reason)
        self.send(
            frames.call_error(frame.id, code, description),
            CALLERROR,
            frame.id,
            frame.action,
            "sent",
            code,
        )

    def _cp_call(self, frame: Frame, text: str) -> None:
        if not self.bucket.take(time.monotonic()):
            self._refuse_call(frame, text, "GenericError", "rate limit", "rate limit")
            if self.bucket.abusive():
                self._close(1008)
            return
        if frame.id in self.cp_pending:
            self._refuse_call(
                frame,
                text,
                frames.rpc_error_code(self.version),
                "UniqueId is already used by an outstanding CALL",
                "duplicate id",
            )
            return
        if not validation.is_known(self.version, frame.action):
            if self.gw.settings.OCPPGW_UNKNOWN_ACTIONS == "reject":
                self._refuse_call(
                    frame,
                    text,
                    "NotImplemented",
                    f"unknown action {frame.action}",
                    "unknown action",
                )
                return
        violation = self._check("upstream", frame.action, "call", frame.payload)
        if violation:
            self._refuse_call(frame, text, violation.code, violation.description, "invalid")
            return
        pending = self._publish("upstream", frame, frame.action, text)
        timer = None
        if self.call_timeout:
            timer = self.loop.call_later(self.call_timeout, self._cp_call_expired, frame.id)
        self.cp_pending[frame.id] = [frame.action, timer, pending]
        if len(self.cp_pending) > MAX_PENDING_CP_CALLS:
            # the oldest is forgotten: a backend answer to it becomes an "unmatched" notice
            oldest = next(iter(self.cp_pending))
            old_action, old_timer, _ = self.cp_pending.pop(oldest)
            if old_timer:
                old_timer.cancel()
            self.log(
                "gw",
                CALL,
                oldest,
                old_action,
                "",
                "dropped",
                f"over {MAX_PENDING_CP_CALLS} unanswered CALLs: forgotten",
            )

    def _cp_call_expired(self, unique_id: str) -> None:
        action, _, pending = self.cp_pending.pop(unique_id)
        self.cp_expired.remember(unique_id, action)
        # withdrawn before publishing (broker away): published or answered, never both
        withdrawn = pending is not None and pending.cancel()
        reason = (
            "never published: broker unreachable" if withdrawn else "no answer from the backend"
        )
        self.send(
            frames.call_error(unique_id, "InternalError", "no answer from the backend"),
            CALLERROR,
            unique_id,
            action,
            "sent",
            reason,
        )

    def _cp_send(self, frame: Frame, text: str) -> None:
        violation = self._check("upstream", frame.action, "send", frame.payload)
        if violation:
            self.log("in", SEND, frame.id, frame.action, text, "rejected", violation.description)
            return
        self._publish("upstream", frame, frame.action, text)

    def _cp_result(self, frame: Frame, text: str) -> None:
        call = self.inflight if self.inflight and self.inflight.frame.id == frame.id else None
        if call is None:
            self._cp_unmatched_answer(frame, text, "reply")
            return
        violation = self._check("upstream", call.action, "result", frame.payload)
        self._finish_inflight()
        if violation:
            self._reject_invalid("in", CALLRESULT, frame.id, call.action, text, violation)
            if self.version == "2.1":  # 2.1 §4.2.4: the caller answers an invalid result
                self.send(
                    frames.encode(
                        Frame(
                            CALLRESULTERROR,
                            frame.id,
                            code=violation.code,
                            description=violation.description,
                        )
                    ),
                    CALLRESULTERROR,
                    frame.id,
                    call.action,
                )
        else:
            self._publish("reply", frame, call.action, text, call=call)
            if call.secret and rotation.accepted(self.version, frame.payload):
                self._store_password(call.secret)
        self.pump()

    def _store_password(self, secret: str) -> None:
        """The station accepted a new password: store its hash; the old one works for a while."""
        self.gw.gatekeeper.cache.forget(self.cid_key)
        grace = self.gw.settings.OCPPGW_ROTATION_GRACE_S
        task = self.loop.create_task(
            database_sync_to_async(services.rotate_password)(self.station_id, secret, grace)
        )
        task.add_done_callback(
            lambda t: (
                t.exception()
                and log.error("%s: storing the new password failed: %s", self.cid, t.exception())
            )
        )

    def _cp_error(self, frame: Frame, text: str) -> None:
        call = self.inflight if self.inflight and self.inflight.frame.id == frame.id else None
        if call is None:
            self._cp_unmatched_answer(frame, text, "error")
            return
        self._finish_inflight()
        self._publish("error", frame, call.action, text, call=call)
        self.pump()

    def _cp_unmatched_answer(self, frame: Frame, text: str, direction: str) -> None:
        action = self.backend_expired.get(frame.id)
        if action is not None:  # answered after the backend was told "timeout"
            self._publish(direction, frame, action, text, late=True)
            self._gateway_error(
                frame.id,
                action,
                "GenericError",
                "the station answered after the call timeout",
                "late",
                notice=True,
            )
            return
        self._publish(direction, frame, None, text)

    def _cp_result_error(self, frame: Frame, text: str) -> None:
        # its UniqueId is the station's own CALL, whose backend answer it found invalid
        self._publish("error", frame, self.cp_answered.get(frame.id), text)

    def _finish_inflight(self) -> None:
        call, self.inflight = self.inflight, None
        if call.timer:
            call.timer.cancel()
        self.backend_answered.remember(call.frame.id, call.action)

    # --- the end ---------------------------------------------------------------------------------
    def end(self, reason: str) -> None:
        """The socket is gone: answer every backend CALL still queued or in flight with offline."""
        self.closed = True
        calls = ([self.inflight] if self.inflight else []) + list(self.queue)
        self.inflight = None
        self.queue.clear()
        for call in calls:
            if call.timer:
                call.timer.cancel()
            self._gateway_error(
                call.frame.id,
                call.action,
                "GenericError",
                f"the station disconnected ({reason})",
                "offline",
                call=call,
            )
        for _, timer, _ in self.cp_pending.values():
            if timer:
                timer.cancel()
        self.cp_pending.clear()
        # `send` and `close` are the consumer's bound methods: a cycle with the consumer that
        # only a full GC pass (rare, see rungateway._tune_gc) would free; without it reference
        # counting frees the connection's objects as soon as the socket is gone
        self._send = self._close = _after_end


def _after_end(*_) -> None:
    """A station's socket is gone: nothing more is sent to it."""


class OfflineStation(Session):
    """Answers backend messages for a station that no gateway process holds (docs/contract.md §2)."""

    def __init__(self, gw, cid: str, cid_key: str):
        self.gw, self.cid, self.cid_key = gw, cid, cid_key
        self.station_id, self.version = None, ""

    def on_downstream(self, raw: bytes, props) -> None:
        frame = self._read_envelope(raw)
        if frame is None:
            return
        is_call = frame.type == CALL
        self._gateway_error(
            frame.id,
            frame.action,
            "GenericError",
            "the station is not connected to any gateway process",
            "offline",
            call=BackendCall(frame, props) if is_call else None,
            notice=not is_call,
        )
