"""Charge point identity rules (2.0.1 §3.1.1 identifierString, docs/contract.md §1). Pure."""

import re
from urllib.parse import unquote

MAX_CID_CHARS = 48
# identifierString minus ':' (it separates user and password in HTTP Basic)
_ALLOWED = re.compile(r"[A-Za-z0-9*\-_=+|@.]{1,48}\Z")


def validate(cid: str) -> str | None:
    """Why a cid is refused, or None when it is acceptable."""
    if not cid:
        return "the charge point id is empty"
    if len(cid) > MAX_CID_CHARS:
        return f"the charge point id is longer than {MAX_CID_CHARS} characters"
    if not _ALLOWED.match(cid):
        return "the charge point id may use only a-z A-Z 0-9 * - _ = + | @ ."
    return None


def key(cid: str) -> str:
    """The case-insensitive form a cid is looked up by."""
    return cid.lower()


def cid_from_raw_path(raw_path: bytes, prefix: bytes = b"/ocpp/") -> str | None:
    """The cid from the undecoded request path: one segment, percent-decoded once; None if absent.

    Daphne's scope["path"] is already decoded, so %2F would look like a separator there.
    """
    if not raw_path.startswith(prefix):
        return None
    segment = raw_path[len(prefix) :].split(b"?", 1)[0]
    if not segment or b"/" in segment:
        return None
    try:
        return unquote(segment.decode("ascii"), errors="strict")
    except (UnicodeDecodeError, UnicodeEncodeError):
        return ""
