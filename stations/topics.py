"""MQTT topic templates: validation, rendering, cid escaping and matching downstream topics.

Pure: no Django, no I/O. Templates use `${name}` placeholders (docs/contract.md §2).
"""

import re
from functools import lru_cache
from urllib.parse import quote

PLACEHOLDERS = ("cid", "clientid", "action", "id", "type", "version")
_PLACEHOLDER = re.compile(r"\$\{([^}]*)\}")
_PLAIN_LEVEL = re.compile(r"[A-Za-z0-9_.~-]*\Z")


def escape_cid(cid: str) -> str:
    """Percent-encode the characters that would become MQTT wildcards (`+`, `*` kept apart too)."""
    # `%` itself never reaches here: the identity rules refuse it before the upgrade
    return cid.replace("+", "%2B").replace("*", "%2A")


def validate(template: str, *, downstream: bool = False) -> str | None:
    """Return why a template cannot be used, or None when it can."""
    if not template or len(template) > 200:
        return "a topic template must have 1 to 200 characters"
    unknown = [name for name in _PLACEHOLDER.findall(template) if name not in PLACEHOLDERS]
    if unknown:
        return f"unknown placeholder ${{{unknown[0]}}}; known: " + ", ".join(
            f"${{{p}}}" for p in PLACEHOLDERS
        )
    if "$" in _PLACEHOLDER.sub("", template):
        return "a lone '$' (placeholders are written ${name})"
    if "\x00" in template:
        return "a topic cannot contain NUL"
    if downstream:
        if "${cid}" not in template and "${clientid}" not in template:
            return "a downstream filter must contain ${cid}, or stations would share commands"
        if any(p in template for p in ("${action}", "${id}", "${type}")):
            return "a downstream filter can use only ${cid} and ${version}"
        levels = template.split("/")
        if any(
            "#" in level and (level != "#" or i != len(levels) - 1)
            for i, level in enumerate(levels)
        ):
            return "'#' must be the last level of a filter"
        if any("+" in level and level != "+" for level in levels):
            return "'+' must stand alone in a filter level"
    elif "+" in template or "#" in template:
        return "a publish topic cannot contain the wildcards '+' or '#'"
    return None


@lru_cache(maxsize=4096)
def _compile(template: str):
    # split once into literal and placeholder parts, so rendering is a join
    parts = []
    last = 0
    for match in _PLACEHOLDER.finditer(template):
        parts.append((False, template[last : match.start()]))
        name = match.group(1)
        parts.append((True, "cid" if name == "clientid" else name))
        last = match.end()
    parts.append((False, template[last:]))
    return tuple(part for part in parts if part[1] or part[0])


def render(template: str, **values: str) -> str:
    """Fill a template's placeholders; each value is escaped so it stays one topic level."""
    out = []
    for is_placeholder, text in _compile(template):
        if not is_placeholder:
            out.append(text)
        elif text == "cid":
            out.append(escape_cid(values["cid"]))
        else:
            out.append(escape_level(str(values.get(text, ""))))
    return "".join(out)


def escape_level(value: str) -> str:
    """Percent-encode a station-supplied value (Action, UniqueId) unless it is a plain name:
    `+`/`#` make paho raise, `/` adds levels, and NUL or control characters make the broker
    drop the whole connection as a malformed packet (MQTT 4.7.3, Mosquitto)."""
    if _PLAIN_LEVEL.match(value):
        return value
    return quote(value, safe="", errors="backslashreplace")


@lru_cache(maxsize=64)
def matcher(template: str):
    """A regex matching the topics a template (upstream or a downstream filter) stands for,
    capturing the escaped cid."""
    pattern = []
    for is_placeholder, text in _compile(template):
        if is_placeholder:
            pattern.append("(?P<cid>[^/]+)" if text == "cid" else "[^/]+")
            continue
        for i, level in enumerate(text.split("/")):
            if i:
                pattern.append("/")
            if level == "+":
                pattern.append("[^/]+")
            elif level == "#":
                # MQTT: "a/#" also matches "a" itself, so the slash before '#' is optional
                if pattern and pattern[-1] == "/":
                    pattern.pop()
                pattern.append("(?:/.*)?")
            else:
                pattern.append(re.escape(level))
    return re.compile("".join(pattern) + r"\Z")


def downstream_filter(template: str, cid: str, version: str = "") -> str:
    """The concrete MQTT subscription filter for one station."""
    return render(template, cid=cid, version=version)


def wildcard_filter(template: str) -> str:
    """The filter covering every station (cid and version as `+`), for offline detection."""
    out = []
    for is_placeholder, text in _compile(template):
        out.append("+" if is_placeholder else text)
    return "".join(out)


def share_group(name: str) -> str:
    """A `$share/<group>/` group name: one non-empty topic level without wildcards."""
    if not name or any(c in name for c in "/+#\0") or len(name) > 64:
        raise ValueError(f"{name!r}: one topic level (no '/', '+', '#'), 1-64 characters")
    return name


def unescape_cid(escaped: str) -> str:
    """Inverse of escape_cid, for a cid captured from a downstream topic."""
    return escaped.replace("%2B", "+").replace("%2A", "*")
