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
    return parse_path(raw_path, prefix)[0]


def parse_path(raw_path: bytes, prefix: bytes = b"/ocpp/") -> tuple[str | None, str | None]:
    """(cid, None) from a station's raw request path, or (None or "", why) naming the rule.

    Stations configured with a base URL ending in `/` are common, so one trailing slash and
    repeated slashes before the id are accepted (`/ocpp/CP1/`, `/ocpp//CP1`).
    """
    path = raw_path.split(b"?", 1)[0]
    if not path.startswith(prefix):
        return None, f"path {_show(path)}: rule 'under {prefix.decode()}': it must start with it"
    rest = path[len(prefix) :].lstrip(b"/")  # rule: repeated slashes before the id
    if rest.endswith(b"/"):
        rest = rest[:-1]  # rule: one trailing slash
    if not rest:
        return None, f"path {_show(path)}: rule 'id present': the charge point id is empty"
    if b"/" in rest:
        return None, (
            f"path {_show(path)}: rule 'one segment': the charge point id must be one path "
            "segment after /ocpp/ (one trailing slash is allowed)"
        )
    try:
        return unquote(rest.decode("ascii"), errors="strict"), None
    except (UnicodeDecodeError, UnicodeEncodeError):
        return "", f"path {_show(path)}: rule 'percent-encoded UTF-8': the id is not valid UTF-8"


def _show(path: bytes) -> str:
    return repr(path[:80].decode("ascii", "backslashreplace"))
