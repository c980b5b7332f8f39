"""OCPP-J frames: text <-> Frame, and the answers the spec names for frames that are not right.

Pure: no Django, no I/O. Which frame gets which answer is the §1 table of docs/contract.md:
- FrameError: answer the frame with a CALLERROR (only ever for something that is, or may be, a CALL);
- Ignored: log it with the reason, answer nothing.
"""

from dataclasses import dataclass, field

import orjson

from stations.codes import (
    CALL,
    CALLERROR,
    CALLRESULT,
    CALLRESULTERROR,
    SEND,
    TYPE_NAMES,
    TYPES_BY_VERSION,
    rpc_error_code,
)

MAX_ID_CHARS = 36
MAX_DESCRIPTION_CHARS = 254
MAX_DEPTH = 128  # nesting levels; OCPP payloads nest < 10, orjson encodes at most 254


@dataclass(slots=True)
class Frame:
    type: int
    id: str
    action: str | None = None
    payload: object = None
    code: str | None = None
    description: str = ""
    details: dict = field(default_factory=dict)
    redelivered: int = 0  # a backend CALL the gateway published again (stations/inbox.py)

    @property
    def is_error(self) -> bool:
        return self.type in (CALLERROR, CALLRESULTERROR)


class FrameError(Exception):
    """A frame that gets a CALLERROR: code and description, and the UniqueId to answer with."""

    def __init__(self, code: str, description: str, unique_id: str = "-1"):
        super().__init__(description)
        self.code = code
        self.description = description[:MAX_DESCRIPTION_CHARS]
        self.unique_id = unique_id


class Ignored(Exception):
    """A frame the spec says to ignore; the reason goes to the message log."""

    def __init__(self, reason: str, frame_type: int | None = None, unique_id: str = ""):
        super().__init__(reason)
        self.reason = reason
        self.frame_type = frame_type
        self.unique_id = unique_id


def _readable_id(item) -> str:
    if isinstance(item, str) and 0 < len(item) <= MAX_ID_CHARS:
        return item
    return "-1"


def parse(text: str | bytes, version: str) -> Frame:
    """Parse one WebSocket text message; raise FrameError or Ignored as the table of docs/contract.md says."""
    rpc = rpc_error_code(version)
    try:
        data = orjson.loads(text)
    except orjson.JSONDecodeError:
        raise FrameError(rpc, "frame is not valid JSON") from None
    if not isinstance(data, list):
        raise FrameError(rpc, "frame is not a JSON array")
    # a frame whose MessageTypeId names an answer or a SEND is never answered, however broken:
    # a CALLERROR answers only a CALL (2.0.1 §4.2.3)
    head = data[0] if data else None
    silent = type(head) is int and head != CALL and head in TYPES_BY_VERSION[version]
    if len(data) < 3:
        if silent:
            raise Ignored(f"{TYPE_NAMES[head]} has fewer than 3 elements", head)
        raise FrameError(
            rpc, "frame has fewer than 3 elements", _readable_id(data[1:2] and data[1])
        )
    msg_type, unique_id = data[0], data[1]
    if silent and _readable_id(unique_id) == "-1":
        raise Ignored(f"UniqueId must be a string of 1 to {MAX_ID_CHARS} characters", head)
    if not isinstance(unique_id, str):
        raise FrameError(rpc, "UniqueId is not a string")
    if not unique_id or len(unique_id) > MAX_ID_CHARS:
        raise FrameError(rpc, f"UniqueId must have 1 to {MAX_ID_CHARS} characters")
    if type(msg_type) is not int:  # bool is an int subclass: `true` is no MessageTypeId
        raise FrameError(rpc, "MessageTypeId is not an integer", unique_id)
    if msg_type not in TYPES_BY_VERSION[version]:
        if version == "2.0.1":
            raise FrameError(
                "MessageTypeNotSupported", f"MessageTypeId {msg_type} is not supported", unique_id
            )
        raise Ignored(f"unknown MessageTypeId {msg_type}", msg_type, unique_id)
    opening = ("[", "{") if isinstance(text, str) else (b"[", b"{")
    if text.count(opening[0]) + text.count(opening[1]) > MAX_DEPTH and _too_deep(data, MAX_DEPTH):
        # valid JSON, but the envelope could not be encoded again (orjson nests 254 levels)
        why = f"frame nested deeper than {MAX_DEPTH} levels"
        if msg_type == CALL:
            raise FrameError(rpc, why, unique_id)
        raise Ignored(why, msg_type, unique_id)
    if msg_type in (CALL, SEND):
        return _parse_call(data, msg_type, unique_id, rpc)
    if msg_type == CALLRESULT:
        if len(data) != 3:
            raise Ignored("CALLRESULT must have 3 elements", msg_type, unique_id)
        if not isinstance(data[2], dict):
            raise Ignored("CALLRESULT payload is not a JSON object", msg_type, unique_id)
        return Frame(CALLRESULT, unique_id, payload=data[2])
    return _parse_error(data, msg_type, unique_id)


def _too_deep(data, limit: int) -> bool:
    """True when lists/objects nest deeper than `limit` (the frame's own array is level 1)."""
    level = [(data, 1)]
    while level:
        value, depth = level.pop()
        if depth > limit:
            return True
        children = value.values() if isinstance(value, dict) else value
        level.extend((c, depth + 1) for c in children if isinstance(c, (list, dict)))
    return False


def _parse_call(data: list, msg_type: int, unique_id: str, rpc: str) -> Frame:
    name = TYPE_NAMES[msg_type]
    # a malformed SEND is never answered (2.1 §4.2.5); a malformed CALL always is
    fail = (
        (lambda why: Ignored(why, msg_type, unique_id))
        if msg_type == SEND
        else (lambda why: FrameError(rpc, why, unique_id))
    )
    if len(data) != 4:
        raise fail(f"{name} must have 4 elements, has {len(data)}")
    action, payload = data[2], data[3]
    if not isinstance(action, str) or not action or len(action) > 64:
        raise fail(f"{name} Action must be a non-empty string of at most 64 characters")
    return Frame(msg_type, unique_id, action=action, payload=payload)


def _parse_error(data: list, msg_type: int, unique_id: str) -> Frame:
    name = TYPE_NAMES[msg_type]
    if len(data) not in (4, 5):
        raise Ignored(f"{name} must have 5 elements, has {len(data)}", msg_type, unique_id)
    code, description = data[2], data[3]
    details = data[4] if len(data) == 5 else {}
    if not isinstance(code, str) or not isinstance(description, str):
        raise Ignored(f"{name} ErrorCode and ErrorDescription must be strings", msg_type, unique_id)
    if not isinstance(details, dict):
        raise Ignored(f"{name} ErrorDetails is not a JSON object", msg_type, unique_id)
    return Frame(msg_type, unique_id, code=code, description=description, details=details)


def encode(frame: Frame) -> str:
    """The OCPP-J text of a frame."""
    if frame.type in (CALL, SEND):
        data = [frame.type, frame.id, frame.action, frame.payload]
    elif frame.type == CALLRESULT:
        data = [frame.type, frame.id, frame.payload]
    else:
        data = [frame.type, frame.id, frame.code, frame.description, frame.details]
    return orjson.dumps(data).decode()


def call_error(unique_id: str, code: str, description: str, details: dict | None = None) -> str:
    """The text of a CALLERROR answering the CALL `unique_id`."""
    return encode(
        Frame(
            CALLERROR,
            unique_id,
            code=code,
            description=description[:MAX_DESCRIPTION_CHARS],
            details=details or {},
        )
    )
