"""The backend's side of a station's conversation: envelopes from MQTT to the station.

Backend CALLs wait in a bounded queue and go out one at a time (OCPP-J allows one outstanding
CALL per direction); the backend's answers go to the station's outstanding CALLs. A mixin of
`Session`, which holds the state both directions share (`log`, `send`, the pending tables).
"""

import asyncio

from ocppgw import logs
from stations import envelopes, frames, rotation, validation
from stations.frames import CALL, CALLERROR, CALLRESULT, CALLRESULTERROR, SEND, Frame


class BackendCall:
    __slots__ = ("action", "correlation", "frame", "logged", "response_topic", "secret", "timer")

    def __init__(self, frame: Frame, props, version: str = ""):
        self.frame = frame
        self.action = frame.action
        # a password set through OCPP: stored once accepted, never written to the log
        self.secret = rotation.secret_in(version, frame.action, frame.payload)
        self.logged = (
            frames.encode(
                Frame(
                    CALL,
                    frame.id,
                    action=frame.action,
                    payload=rotation.redact(version, frame.action, frame.payload),
                )
            )
            if self.secret
            else None
        )
        self.response_topic = getattr(props, "ResponseTopic", None) if props else None
        self.correlation = getattr(props, "CorrelationData", None) if props else None
        self.timer: asyncio.TimerHandle | None = None


class BackendSide:
    """Backend envelopes for one station; mixed into `Session`."""

    def on_downstream(self, raw: bytes, props) -> None:
        """Handle one backend message addressed to this station."""
        logs.cid_var.set(self.cid)  # runs in the bridge callback's own context copy
        frame = self._read_envelope(raw)
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

    def _read_envelope(self, raw: bytes) -> Frame | None:
        """The backend's envelope as a frame; an unreadable one becomes a notice (None)."""
        try:
            return envelopes.downstream(raw)
        except envelopes.EnvelopeError as exc:
            self.log("gw", None, exc.unique_id, exc.action, raw, "rejected", exc.why)
            self._gateway_error(
                exc.unique_id,
                exc.action,
                "FormatViolation",
                exc.why,
                "invalid",
                notice=True,
                extra={"message": envelopes.excerpt(raw)},
            )
            return None

    def _backend_call(self, frame: Frame, raw: bytes, props) -> None:
        call = BackendCall(frame, props, self.version)
        raw = call.logged or raw
        violation = self._check("downstream", frame.action, "call", frame.payload)
        if violation:
            self._reject_invalid("gw", CALL, frame.id, frame.action, raw, violation, call=call)
            return
        if len(self.queue) >= self.queue_len:
            self.log("gw", CALL, frame.id, frame.action, raw, "rejected", "queue full")
            self._gateway_error(
                frame.id,
                frame.action,
                "GenericError",
                f"{self.queue_len} calls already wait for this station",
                "queue_full",
                call=call,
            )
            return
        if self.call_timeout:
            call.timer = self.loop.call_later(self.call_timeout, self._backend_call_expired, call)
        self.queue.append(call)
        self.pump()

    def pump(self) -> None:
        """Send the next queued backend CALL if none is outstanding."""
        if self.inflight is None and self.queue and not self.closed:
            call = self.queue[0]
            left_s = call.timer.when() - self.loop.time() if call.timer else None
            if left_s is not None and left_s < min(1.0, self.call_timeout / 10):
                # too little time left to be answered: never send it (a Reset would still run
                # while the backend is told "timeout"); it times out now, the next one goes
                call.timer.cancel()
                self._backend_call_expired(call)
                return
            self.inflight = self.queue.popleft()
            self.send(
                frames.encode(call.frame), CALL, call.frame.id, call.action, logged=call.logged
            )

    def _backend_call_expired(self, call: BackendCall) -> None:
        if call is self.inflight:
            self.inflight = None
            self.backend_expired.remember(call.frame.id, call.action)
            description = "the station did not answer in time"
        else:
            self.queue.remove(call)  # it ran out while queued: it is never sent
            description = "the call waited in the queue past its timeout"
        self._gateway_error(
            call.frame.id, call.action, "GenericError", description, "timeout", call=call
        )
        self.pump()

    def _backend_send(self, frame: Frame, raw: bytes) -> None:
        if self.version != "2.1":
            self._gateway_error(
                frame.id,
                frame.action,
                "MessageTypeNotSupported",
                f"SEND does not exist in OCPP {self.version}",
                "invalid",
                notice=True,
            )
            return
        violation = self._check("downstream", frame.action, "send", frame.payload)
        if violation:
            self._reject_invalid("gw", SEND, frame.id, frame.action, raw, violation)
            return
        self.send(frames.encode(frame), SEND, frame.id, frame.action)

    def _backend_answer(self, frame: Frame, raw: bytes) -> None:
        entry = self.cp_pending.pop(frame.id, None)
        if entry is None:
            action = self.cp_expired.get(frame.id)
            reason = "late" if action is not None else "unmatched"
            why = (
                "the station's CALL already timed out"
                if action is not None
                else "no CALL from the station is outstanding with this UniqueId"
            )
            self.log("gw", frame.type, frame.id, action, raw, "rejected", why)
            self._gateway_error(frame.id, action, "GenericError", why, reason, notice=True)
            return
        action, timer, _ = entry
        if timer:
            timer.cancel()
        if frame.type == CALLRESULT:
            violation = self._check("downstream", action, "result", frame.payload)
            if violation:
                self._reject_invalid("gw", CALLRESULT, frame.id, action, raw, violation)
                self.send(
                    frames.call_error(
                        frame.id, "InternalError", "the backend's answer failed validation"
                    ),
                    CALLERROR,
                    frame.id,
                    action,
                    "sent",
                    "invalid backend answer",
                )
                return
        else:
            frame.code = validation.spell(frame.code, self.version)
        self.cp_answered.remember(frame.id, action)
        self.send(frames.encode(frame), frame.type, frame.id, action)

    def _backend_result_error(self, frame: Frame, raw: bytes) -> None:
        action = self.backend_answered.get(frame.id)
        if self.version != "2.1" or action is None:
            why = (
                "CALLRESULTERROR does not exist in OCPP " + self.version
                if self.version != "2.1"
                else "no recently answered CALL has this UniqueId"
            )
            self.log("gw", CALLRESULTERROR, frame.id, action, raw, "rejected", why)
            self._gateway_error(frame.id, action, "GenericError", why, "unmatched", notice=True)
            return
        self.send(frames.encode(frame), CALLRESULTERROR, frame.id, action)
