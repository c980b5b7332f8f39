"""One station's OCPP-J conversation, both directions, from handshake to goodbye.

The consumer feeds it the station's text (`on_text`) and the registry the backend's envelopes
(`on_downstream`); it acts only through its port (port.py) and its outbox (outbox.py). The
outstanding CALLs and their timers are calls.py's. A station that pipelines CALLs is not
punished (each CALL has its own timer); backend CALLs go out one at a time (docs/contract.md §2).
"""

import asyncio
import logging

from ocppgw import logs
from stations import facts, frames, quirks, rotation, validation
from stations.calls import RECENT_IDS, BackendCall, BackendCalls, StationCalls
from stations.frames import CALL, CALLERROR, CALLRESULT, CALLRESULTERROR, SEND, Frame
from stations.outbox import UNACKED_HIGH, Outbox
from stations.port import GatewayPort, Link, StationInfo

log = logging.getLogger("ocppgw.session")

THROTTLE_STRIKES = 10  # every 10th CALL refused in a row for rate, pause taking its frames
THROTTLE_S = 0.5


def backend_call(frame: Frame, props, version: str = "") -> BackendCall:
    """A backend CALL with its MQTT 5 reply address, and any password it sets kept out of the log."""
    secret = rotation.secret_in(version, frame.action, frame.payload)
    logged = None
    if secret:
        redacted = rotation.redact(version, frame.action, frame.payload)
        logged = frames.encode(Frame(CALL, frame.id, action=frame.action, payload=redacted))
    return BackendCall(
        frame,
        getattr(props, "ResponseTopic", None) if props else None,
        getattr(props, "CorrelationData", None) if props else None,
        secret,
        logged,
    )


class Conversation:
    def __init__(self, port: GatewayPort, station: StationInfo, link: Link, clock=None):
        self.port, self.station = port, station
        self.clock = clock or asyncio.get_running_loop()
        self.out = Outbox(port, station, link)
        s = port.settings
        # answered CALLs matter only to a [5] (CALLRESULTERROR), which OCPP 2.1 alone has;
        # elsewhere the window would be kilobytes per station kept for nothing
        answered = RECENT_IDS if station.version == "2.1" else 0
        timeout = s.OCPPGW_CALL_TIMEOUT_S
        self.station_calls = StationCalls(self.clock, timeout, self._station_call_expired, answered)
        self.backend_calls = BackendCalls(
            self.clock, timeout, s.OCPPGW_QUEUE_LEN, self._backend_call_expired, self.pump, answered
        )
        self.bucket = port.new_bucket()
        self.last_rx = self.clock.time()  # for OCPPGW_IDLE_TIMEOUT_S and the publish latency
        self.started = self.last_rx  # a young connection may lack its subscription (inbox.py)
        self.closed = False  # the socket is gone: nothing more is sent
        self.finished = False  # released from the registry
        self.abusive = False  # closed 1008: its later frames are not taken

    @property
    def cid(self) -> str:
        return self.station.cid

    # --- frames from the station ---------------------------------------------------------------------
    def on_text(self, text: str) -> None:
        """Handle one text message from the station."""
        self.last_rx = self.clock.time()
        self.port.writer.count(self.station.station_id, inbound=True)
        try:
            frame = frames.parse(text, self.station.version)
            logs.unique_id_var.set(frame.id)
        except frames.FrameError as exc:
            self.out.log("in", None, exc.unique_id, "", text, "rejected", exc.description)
            self._call_error(exc.unique_id, "", exc.code, exc.description, exc.code)
            return
        except frames.Ignored as exc:
            self.out.log("in", exc.frame_type, exc.unique_id, "", text, "ignored", exc.reason)
            return
        handler = {
            CALL: self._station_call,
            SEND: self._station_send,
            CALLRESULT: self._station_result,
            CALLERROR: self._station_error,
            CALLRESULTERROR: self._station_result_error,
        }
        handler[frame.type](frame, text)

    async def pushback(self) -> None:
        """Stop taking this station's frames for a while if it floods or the broker is behind."""
        strikes = self.bucket.strikes
        if strikes and strikes % THROTTLE_STRIKES == 0:
            # Daphne then stops reading its socket (ocppgw/edge/wsprotocol.py): it cannot
            # starve the other stations
            await asyncio.sleep(THROTTLE_S)
        if self.out.unacked >= UNACKED_HIGH:
            await self.out.broker_caught_up()

    def _call_error(self, unique_id, action, code, description, reason) -> None:
        text = frames.call_error(unique_id, code, description)
        self.out.send(text, CALLERROR, unique_id, action, "sent", reason)

    def _refuse_call(self, frame, text, code, description, reason) -> None:
        self.out.log("in", CALL, frame.id, frame.action, text, "rejected", reason)
        self._call_error(frame.id, frame.action, code, description, code)

    def _check(self, direction, action, kind, payload):
        """(violation that stops the frame or None, the envelope's Validation marker or None).

        A failing payload may still pass under the validation policy (log, or lenient for the
        documented firmware quirks, stations/quirks.py): it is forwarded unchanged, marked."""
        version = self.station.version
        violation = self.port.check(direction, version, action, kind, payload)
        if violation is None:
            return None, None
        policy = quirks.policy_for(
            self.station.validation_policy, self.port.settings.OCPPGW_VALIDATION_FAILURE
        )
        outcome = quirks.judge(
            policy,
            violation,
            lambda repaired: self.port.check(direction, version, action, kind, repaired),
            payload,
        )
        if outcome.lenient:
            self.port.writer.lenient(self.station.station_id)
        if outcome.stop is None:
            log.info(
                "%s %s %s: %s (passed: validation policy %s)",
                self.cid,
                direction,
                action,
                violation.description,
                policy,
            )
        return outcome.stop, outcome.marker

    def _station_call(self, frame: Frame, text: str) -> None:
        if not self.bucket.take(self.clock.time()):
            self._refuse_call(frame, text, "GenericError", "rate limit", "rate limit")
            if self.bucket.abusive():
                self.kick("", code=1008)
            return
        if frame.id in self.station_calls:
            code = frames.rpc_error_code(self.station.version)
            why = "UniqueId is already used by an outstanding CALL"
            self._refuse_call(frame, text, code, why, "duplicate id")
            return
        if not validation.is_known(self.station.version, frame.action):
            if self.port.settings.OCPPGW_UNKNOWN_ACTIONS == "reject":
                why = f"unknown action {frame.action}"
                self._refuse_call(frame, text, "NotImplemented", why, "unknown action")
                return
        violation, marker = self._check("upstream", frame.action, "call", frame.payload)
        if violation:
            self._refuse_call(frame, text, violation.code, violation.description, "invalid")
            return
        pending = self.out.publish(
            "upstream", frame, frame.action, text, self.last_rx, validation=marker
        )
        if frame.action in facts.ACTIONS:  # the portal's station facts, batched by the writer
            st = self.station
            self.port.writer.facts(st.station_id, st.version, frame.action, frame.payload)
        forgotten = self.station_calls.add(frame.id, frame.action, pending)
        if forgotten is not None:  # a backend answer to it becomes an "unmatched" notice
            why = f"over {len(self.station_calls)} unanswered CALLs: forgotten"
            self.out.log("gw", CALL, forgotten.unique_id, forgotten.action, "", "dropped", why)

    def _station_call_expired(self, call) -> None:
        # withdrawn before publishing (broker away): published or answered, never both
        withdrawn = call.pending is not None and call.pending.cancel()
        reason = (
            "never published: broker unreachable" if withdrawn else "no answer from the backend"
        )
        self._call_error(
            call.unique_id, call.action, "InternalError", "no answer from the backend", reason
        )

    def _station_send(self, frame: Frame, text: str) -> None:
        violation, marker = self._check("upstream", frame.action, "send", frame.payload)
        if violation:
            self.out.log(
                "in", SEND, frame.id, frame.action, text, "rejected", violation.description
            )
            return
        self.out.publish("upstream", frame, frame.action, text, self.last_rx, validation=marker)

    def _station_result(self, frame: Frame, text: str) -> None:
        call = self.backend_calls.in_flight(frame.id)
        if call is None:
            self._station_unmatched_answer(frame, text, "reply")
            return
        violation, marker = self._check("upstream", call.action, "result", frame.payload)
        self.backend_calls.finish()
        if violation:
            # the backend's own CALL: it gets the error envelope on the error topic
            self.out.reject_invalid(
                "in", CALLRESULT, frame.id, call.action, text, violation, call=call
            )
            if self.station.version == "2.1":  # 2.1 §4.2.4: the caller answers an invalid result
                answer = Frame(
                    CALLRESULTERROR,
                    frame.id,
                    code=violation.code,
                    description=violation.description,
                )
                self.out.send(frames.encode(answer), CALLRESULTERROR, frame.id, call.action)
        else:
            self.out.publish(
                "reply", frame, call.action, text, self.last_rx, call=call, validation=marker
            )
            if call.secret and rotation.accepted(self.station.version, frame.payload):
                self.port.store_password(self.station, call.secret)
        self.pump()

    def _station_error(self, frame: Frame, text: str) -> None:
        call = self.backend_calls.in_flight(frame.id)
        if call is None:
            self._station_unmatched_answer(frame, text, "error")
            return
        self.backend_calls.finish()
        self.out.publish("error", frame, call.action, text, self.last_rx, call=call)
        self.pump()

    def _station_unmatched_answer(self, frame: Frame, text: str, direction: str) -> None:
        action = self.backend_calls.expired.get(frame.id)
        if action is None:
            self.out.publish(direction, frame, None, text, self.last_rx)
            return
        # answered after the backend was told "timeout"
        self.out.publish(direction, frame, action, text, self.last_rx, late=True)
        why = "the station answered after the call timeout"
        self.out.gateway_error(frame.id, action, "GenericError", why, "late", notice=True)

    def _station_result_error(self, frame: Frame, text: str) -> None:
        # its UniqueId is the station's own CALL, whose backend answer it found invalid
        action = self.station_calls.answered.get(frame.id)
        self.out.publish("error", frame, action, text, self.last_rx)

    # --- envelopes from the backend ----------------------------------------------------------------
    def on_downstream(self, raw: bytes, props) -> None:
        """Handle one backend message addressed to this station."""
        # the bridge's socket reader runs every callback in one long-lived context: set and
        # reset, or the bridge's own later log lines (a broker disconnect) name this station
        token = logs.cid_var.set(self.cid)
        try:
            frame = self.out.read_envelope(raw)
            if frame is None:
                return
            if frame.type == CALL:
                self._backend_call(frame, raw, props)
            elif frame.type == SEND:
                self._backend_send(frame, raw)
            elif frame.type in (CALLRESULT, CALLERROR):
                self._backend_answer(frame, raw)
            else:
                self._backend_result_error(frame, raw)
        finally:
            logs.cid_var.reset(token)

    def _backend_call(self, frame: Frame, raw: bytes, props) -> None:
        if self.backend_calls.seen(frame.id) and frame.redelivered:
            # a gateway published it again for the station's new connection (stations/inbox.py),
            # but this one got the backend's own copy already: it is sent once
            self.out.log("gw", CALL, frame.id, frame.action, raw, "dropped", "redelivered copy")
            return
        call = backend_call(frame, props, self.station.version)
        raw = call.logged or raw
        violation, _ = self._check("downstream", frame.action, "call", frame.payload)
        if violation:
            self.out.reject_invalid("gw", CALL, frame.id, frame.action, raw, violation, call=call)
            return
        if self.backend_calls.full():
            queue_len = self.backend_calls.queue_len
            self.out.log("gw", CALL, frame.id, frame.action, raw, "rejected", "queue full")
            why = f"{queue_len} calls already wait for this station"
            self.out.gateway_error(
                frame.id, frame.action, "GenericError", why, "queue_full", call=call
            )
            return
        self.backend_calls.add(call)
        self.pump()

    def pump(self) -> None:
        """Send the next queued backend CALL if none is outstanding."""
        if self.closed:
            return
        call = self.backend_calls.next_to_send()
        if call is not None:
            text = frames.encode(call.frame)
            self.out.send(text, CALL, call.frame.id, call.action, logged=call.logged)

    def _backend_call_expired(self, call: BackendCall, description: str) -> None:
        self.out.gateway_error(
            call.frame.id, call.action, "GenericError", description, "timeout", call=call
        )

    def _backend_send(self, frame: Frame, raw: bytes) -> None:
        version = self.station.version
        if version != "2.1":
            why = f"SEND does not exist in OCPP {version}"
            self.out.gateway_error(
                frame.id, frame.action, "MessageTypeNotSupported", why, "invalid", notice=True
            )
            return
        violation, _ = self._check("downstream", frame.action, "send", frame.payload)
        if violation:
            self.out.reject_invalid("gw", SEND, frame.id, frame.action, raw, violation)
            return
        self.out.send(frames.encode(frame), SEND, frame.id, frame.action)

    def _backend_answer(self, frame: Frame, raw: bytes) -> None:
        call = self.station_calls.answer(frame.id)
        if call is None:
            action = self.station_calls.expired.get(frame.id)
            if action is not None:
                reason, why = "late", "the station's CALL already timed out"
            else:
                reason = "unmatched"
                why = "no CALL from the station is outstanding with this UniqueId"
            self.out.log("gw", frame.type, frame.id, action, raw, "rejected", why)
            self.out.gateway_error(frame.id, action, "GenericError", why, reason, notice=True)
            return
        action = call.action
        if frame.type == CALLRESULT:
            violation, _ = self._check("downstream", action, "result", frame.payload)
            if violation:
                self.out.reject_invalid("gw", CALLRESULT, frame.id, action, raw, violation)
                why = "the backend's answer failed validation"
                self._call_error(frame.id, action, "InternalError", why, "invalid backend answer")
                return
        else:
            frame.code = validation.spell(frame.code, self.station.version)
        self.station_calls.answered.remember(frame.id, action)
        self.out.send(frames.encode(frame), frame.type, frame.id, action)

    def _backend_result_error(self, frame: Frame, raw: bytes) -> None:
        version = self.station.version
        action = self.backend_calls.answered.get(frame.id)
        if version != "2.1" or action is None:
            why = (
                "CALLRESULTERROR does not exist in OCPP " + version
                if version != "2.1"
                else "no recently answered CALL has this UniqueId"
            )
            self.out.log("gw", CALLRESULTERROR, frame.id, action, raw, "rejected", why)
            self.out.gateway_error(frame.id, action, "GenericError", why, "unmatched", notice=True)
            return
        self.out.send(frames.encode(frame), CALLRESULTERROR, frame.id, action)

    # --- the end ----------------------------------------------------------------------------------------
    def kick(self, reason: str, code: int = 1000) -> None:
        """Close the socket (an operator, a credential change, idleness, a broker outage)."""
        if code == 1008:
            self.abusive = True
        self.out.close(code, reason[:120] or None)

    def replaced(self) -> None:
        """A newer connection of the same station won: close this one, never mark it offline."""
        if self.finished:
            return
        reason = "replaced by a newer connection"
        self.out.close(1000, reason)
        self.finished = True
        self._end(reason)
        self.port.unregister(self)
        self._log_gone(reason)

    def finish(self, reason: str) -> None:
        """The socket is gone: release the station once, and publish presence if it was current."""
        if self.finished:
            return
        self.finished = True
        self._end(reason)
        st = self.station
        if self.port.unregister(self):
            self.port.publish_presence(st.cid, "disconnected", st.connection_id, st.version, reason)
            self.port.writer.disconnected(st.station_id, st.connection_id)
        self._log_gone(reason)
        log.info("%s disconnected: %s", st.cid, reason)

    def _log_gone(self, reason: str) -> None:
        self.port.writer.add(
            cid=self.cid,
            station_id=self.station.station_id,
            direction="gw",
            outcome="disconnected",
            reason=reason,
        )

    def _end(self, reason: str) -> None:
        """Answer every backend CALL still queued or in flight with offline; drop the timers."""
        self.closed = True
        for call in self.backend_calls.drain():
            self.out.gateway_error(
                call.frame.id,
                call.action,
                "GenericError",
                f"the station disconnected ({reason})",
                "offline",
                call=call,
            )
        self.station_calls.clear()
        # the link refers to Daphne's protocol: dropping it lets reference counting free the
        # connection's objects as soon as the socket is gone (full GC passes are rare, see
        # ocppgw/edge/serve.py _tune_gc)
        self.out.link = None


def answer_offline(port: GatewayPort, cid: str, cid_key: str, raw: bytes, props) -> None:
    """A backend message for a station no gateway process holds: say so, never stay silent."""
    out = Outbox(port, StationInfo(cid, cid_key, None, ""))
    frame = out.read_envelope(raw)
    if frame is None:
        return
    is_call = frame.type == CALL
    out.gateway_error(
        frame.id,
        frame.action,
        "GenericError",
        "the station is not connected to any gateway process",
        "offline",
        call=backend_call(frame, props) if is_call else None,
        notice=not is_call,
    )
