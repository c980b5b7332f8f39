"""The JSON envelope backends see on MQTT (the EMQX gateway's format, seed 000), both directions.

Pure: no Django, no I/O.
"""

import datetime

import orjson

from stations.frames import CALL, CALLERROR, CALLRESULT, CALLRESULTERROR, SEND, Frame

EXCERPT_CHARS = 512
# the key a gateway adds to a backend CALL it publishes again for a station that reconnected
# elsewhere (docs/contract.md §2): its value counts the redeliveries, its holder deduplicates
REDELIVERED = "Redelivered"
MAX_REDELIVERIES = 3


def upstream(
    frame: Frame, action: str | None, late: bool = False, validation: dict | None = None
) -> bytes:
    """The envelope published for a frame from a station; `action` is known for answers too.

    `validation` ({"path", "rule", "policy"}) marks a payload that failed its schema and was
    forwarded anyway (policy log or lenient), so a backend can tell checked from unchecked data.
    """
    body: dict = {"MessageTypeId": frame.type, "UniqueId": frame.id}
    if action:
        body["Action"] = action
    if frame.type in (CALL, SEND, CALLRESULT):
        body["Payload"] = frame.payload
    else:
        body["ErrorCode"] = frame.code
        body["ErrorDescription"] = frame.description
        body["ErrorDetails"] = frame.details
    if late:
        body["Late"] = True
    if validation:
        body["Validation"] = validation
    return orjson.dumps(body)


def gateway_error(
    unique_id: str,
    action: str | None,
    code: str,
    description: str,
    reason: str,
    node: str,
    extra: dict | None = None,
) -> bytes:
    """A CALLERROR envelope written by the gateway itself (an answer, or a notice)."""
    details = {
        "origin": "gateway",
        "reason": reason,
        "node": node,
        "at": datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds"),
    }
    if extra:
        details.update(extra)
    body = {"MessageTypeId": CALLERROR, "UniqueId": unique_id}
    if action:
        body["Action"] = action
    body.update(ErrorCode=code, ErrorDescription=description[:254], ErrorDetails=details)
    return orjson.dumps(body)


class EnvelopeError(Exception):
    """A downstream message that cannot become a frame; carries what the notice needs."""

    def __init__(self, why: str, unique_id: str = "-1", action: str | None = None):
        super().__init__(why)
        self.why = why
        self.unique_id = unique_id
        self.action = action


def _unique_id(body: dict) -> str:
    value = body.get("UniqueId")
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)  # backends often number their calls
    if isinstance(value, str) and 0 < len(value) <= 36:
        return value
    raise EnvelopeError("UniqueId missing, or not a string of 1 to 36 characters")


def downstream(raw: bytes) -> Frame:
    """Turn a backend's envelope into a frame; raise EnvelopeError naming what is wrong."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise EnvelopeError("payload is not valid JSON") from None
    if not isinstance(body, dict):
        raise EnvelopeError("payload is not a JSON object")
    msg_type = body.get("MessageTypeId")
    uid = "-1"
    try:
        uid = _unique_id(body)
        if msg_type in (CALL, SEND):
            action, payload = body.get("Action"), body.get("Payload")
            if not isinstance(action, str) or not action:
                raise EnvelopeError("Action missing or not a string", uid)
            if not isinstance(payload, dict):
                raise EnvelopeError("Payload missing or not a JSON object", uid, action)
            frame = Frame(msg_type, uid, action=action, payload=payload)
            if REDELIVERED in body:
                frame.redelivered = _redelivered(body)
            return frame
        if msg_type == CALLRESULT:
            payload = body.get("Payload")
            if not isinstance(payload, dict):
                raise EnvelopeError("Payload missing or not a JSON object", uid)
            return Frame(CALLRESULT, uid, payload=payload)
        if msg_type in (CALLERROR, CALLRESULTERROR):
            code, desc = body.get("ErrorCode"), body.get("ErrorDescription")
            details = body.get("ErrorDetails") or {}
            if not isinstance(code, str) or not code:
                raise EnvelopeError("ErrorCode missing or not a string", uid)
            if not isinstance(desc, str) or not isinstance(details, dict):
                raise EnvelopeError(
                    "ErrorDescription missing or not a string, or ErrorDetails not an object", uid
                )
            return Frame(msg_type, uid, code=code, description=desc, details=details)
        raise EnvelopeError(f"MessageTypeId must be 2, 3, 4, 5 or 6, got {msg_type!r}", uid)
    except EnvelopeError as exc:
        exc.unique_id = uid if exc.unique_id == "-1" else exc.unique_id
        raise


def _redelivered(body: dict) -> int:
    count = body.get(REDELIVERED)
    return count if isinstance(count, int) and not isinstance(count, bool) and count > 0 else 0


def redelivery(raw: bytes) -> tuple[bytes, int] | None:
    """A backend CALL marked for publishing again, with its new redelivery count; None when it
    is no CALL or was redelivered MAX_REDELIVERIES times already (no loop between gateways)."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(body, dict) or body.get("MessageTypeId") != CALL:
        return None
    count = _redelivered(body) + 1
    if count > MAX_REDELIVERIES:
        return None
    body[REDELIVERED] = count
    return orjson.dumps(body), count


def excerpt(raw: bytes) -> str:
    """A bounded copy of a message that could not be used, for ErrorDetails and the log."""
    return raw[:EXCERPT_CHARS].decode("utf-8", "replace")


def presence(cid: str, status: str, connection: str, node: str, version: str, reason: str) -> bytes:
    """The retained presence event for a station."""
    return orjson.dumps(
        {
            "cid": cid,
            "status": status,
            "connection": connection,
            "node": node,
            "version": version,
            "at": datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds"),
            "reason": reason,
        }
    )
