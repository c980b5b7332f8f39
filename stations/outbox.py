"""Everything one conversation says: frames to the station, envelopes to the backend, log rows.

Each output is logged once, counted once and, for a backend CALL with an MQTT 5 Response Topic,
also sent there. It also keeps the station's count of frames the broker has not acknowledged
yet, which the consumer uses to stop reading a station that sends faster than the broker takes.
"""

import asyncio

from stations import envelopes, metrics
from stations.frames import CALLERROR, Frame
from stations.port import GatewayPort, Link, StationInfo

# a station with this many frames not yet acknowledged by the broker is not read until it is
# down to LOW: a station (or a thousand) sending past what the broker path takes cannot pile
# messages up in memory, and well-behaved stations (one outstanding CALL) never wait
UNACKED_HIGH, UNACKED_LOW = 16, 8


class Outbox:
    __slots__ = ("_acked_enough", "link", "port", "station", "unacked")

    def __init__(self, port: GatewayPort, station: StationInfo, link: Link | None = None):
        self.port, self.station, self.link = port, station, link
        self.unacked = 0  # this station's frames published, not yet acknowledged by the broker
        self._acked_enough: asyncio.Event | None = None

    # --- to the station ----------------------------------------------------------------------------
    def send(self, text, frame_type, unique_id, action, outcome="sent", reason="", logged=None):
        """Send text to the station and log it (`logged` replaces text that holds a secret)."""
        if self.link is not None:
            self.link.send(text)
        if frame_type == CALLERROR and reason:  # gateway-made (a forwarded one has no reason)
            metrics.callerror_sent(text)
        self.port.writer.count(self.station.station_id, inbound=False)
        self.log("out", frame_type, unique_id, action, logged or text, outcome, reason)

    def close(self, code: int, reason: str | None = None) -> None:
        if self.link is not None:
            self.link.close(code, reason)

    # --- the log ------------------------------------------------------------------------------------
    def log(self, direction, frame_type, unique_id, action, raw, outcome, reason="", topic=""):
        metrics.frame(direction, frame_type, action)
        self.port.writer.add(
            cid=self.station.cid,
            station_id=self.station.station_id,
            direction=direction,
            message_type=frame_type,
            unique_id=unique_id,
            action=action or "",
            raw=raw,
            outcome=outcome,
            reason=reason,
            topic=topic,
        )

    # --- to the backend -----------------------------------------------------------------------------
    def publish(
        self, direction, frame: Frame, action, raw_in, received_at, *, late=False, call=None,
        validation=None,
    ):  # fmt: skip
        """Publish a station frame's envelope and log it; returns the bridge's Pending or None.

        `validation` marks a payload that failed its schema and passed under the policy."""
        body = envelopes.upstream(frame, action, late=late, validation=validation)
        pending, topic = self.port.publish(direction, self.station, action, frame, body)
        if pending is not None and pending.qos:
            self.unacked += 1
            pending.done = self._acked
        metrics.published(pending, received_at)
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
            self.port.respond(call.response_topic, call.correlation, body)
        return pending

    def gateway_error(
        self, unique_id, action, code, description, reason, *, call=None, notice=False, extra=None
    ):
        """Tell the backend what the gateway could not do (error topic) or noticed (notice topic)."""
        body = envelopes.gateway_error(
            unique_id, action, code, description, reason, self.port.node, extra
        )
        metrics.gateway_error(reason, notice)
        kind = "notice" if notice else "error"
        topic = self.port.publish_raw(kind, self.station, action, unique_id, body)
        self.log("gw", CALLERROR, unique_id, action, body, "published", reason, topic)
        if call is not None and call.response_topic:
            self.port.respond(call.response_topic, call.correlation, body)

    def reject_invalid(
        self, direction, frame_type, unique_id, action, raw, violation, *, call=None
    ):
        """Log a frame that failed its schema and tell the backend, naming the path and rule:
        on the error topic when it answers the backend's own `call`, else as a notice."""
        self.log(direction, frame_type, unique_id, action, raw, "rejected", violation.description)
        self.gateway_error(
            unique_id,
            action,
            violation.code,
            violation.description,
            "invalid",
            call=call,
            notice=call is None,
            extra={"path": violation.path, "rule": violation.rule},
        )

    def read_envelope(self, raw: bytes) -> Frame | None:
        """A backend message as a frame; an unreadable one becomes a notice (None)."""
        try:
            return envelopes.downstream(raw)
        except envelopes.EnvelopeError as exc:
            self.log("gw", None, exc.unique_id, exc.action, raw, "rejected", exc.why)
            self.gateway_error(
                exc.unique_id,
                exc.action,
                "FormatViolation",
                exc.why,
                "invalid",
                notice=True,
                extra={"message": envelopes.excerpt(raw)},
            )
            return None

    # --- broker pushback ----------------------------------------------------------------------------
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
