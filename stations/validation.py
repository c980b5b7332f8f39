"""Validate OCPP payloads against the official JSON schemas shipped in the `ocpp` package.

Pure module: no Django, no I/O except reading the package's schema files, each once. Schemas are
compiled with fastjsonschema on first use per (version, action, kind) and kept; given a disk
cache (`use_cache`), compiled once per machine rather than per process.
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.util import find_spec

import fastjsonschema
from fastjsonschema import JsonSchemaDefinitionException, JsonSchemaValueException

from stations import codes
from stations.ocpp_actions import INITIATED_BY

log = logging.getLogger(__name__)

VERSIONS = ("1.6", "2.0.1", "2.1")
KINDS = ("call", "result", "send")
_DIRS = {"1.6": "v16", "2.0.1": "v201", "2.1": "v21"}

_OCCURRENCE_RULES = frozenset(
    ("required", "minItems", "maxItems", "minProperties", "maxProperties")
)
_PROPERTY_RULES = frozenset(
    "additionalProperties enum const pattern maxLength minLength minimum maximum exclusiveMinimum "
    "exclusiveMaximum multipleOf format".split()
)


@dataclass(frozen=True, slots=True)
class Violation:
    code: str
    path: str
    rule: str
    description: str
    # the failing value and its schema node, for the lenient policy (stations/quirks.py)
    value: object = field(default=None, compare=False, repr=False)
    definition: dict | None = field(default=None, compare=False, repr=False)


# the error-code table lives in codes.py; these names stay for the modules that use them
generic_code, normalize_code, spell = codes.generic_code, codes.normalize, codes.spell


def _code(version: str, rule: str) -> str:
    """The error code OCPP-J names for a failed schema rule."""
    if rule == "type":
        return codes.TYPE_CONSTRAINT
    if rule in _OCCURRENCE_RULES:
        return codes.OCCURRENCE[version]
    if rule in _PROPERTY_RULES:
        return codes.PROPERTY_CONSTRAINT
    return codes.GENERIC[version]


# --- schema files -------------------------------------------------------------------------------

_index: dict[tuple[str, str, str], str] | None = None
_compiled: dict[tuple[str, str, str], Callable] = {}
_lock = threading.Lock()
_cache = None  # a schema_cache.SchemaCache once `use_cache` is called (stations/apps.py)


def use_cache(cache) -> None:
    """Load and keep compiled validators through `cache` (stations/schema_cache.py)."""
    global _cache
    _cache = cache


def _schema_index() -> dict[tuple[str, str, str], str]:
    """(version, action, kind) -> schema file path, from one directory listing per version."""
    global _index
    if _index is None:
        root = find_spec("ocpp").submodule_search_locations[0]  # no need to import the package
        index = {}
        for version, sub in _DIRS.items():
            folder = os.path.join(root, sub, "schemas")
            files = {
                n[:-5]: os.path.join(folder, n) for n in os.listdir(folder) if n[-5:] == ".json"
            }
            for stem, path in files.items():
                if stem.endswith("Response"):
                    index[(version, stem[:-8], "result")] = path
                elif stem.endswith("Request"):
                    index[(version, stem[:-7], "call")] = path
                    # a SEND of an action without its own SEND schema is checked like a CALL
                    index.setdefault((version, stem[:-7], "send"), path)
                elif version == "1.6":  # 1.6 request schemas carry no suffix
                    index[(version, stem, "call")] = index[(version, stem, "send")] = path
                else:  # 2.1 SEND messages (NotifyPeriodicEventStream) carry no suffix
                    index[(version, stem, "send")] = path
        _index = index
    return _index


def _schema(version: str, action: str, kind: str) -> dict | None:
    path = _schema_index().get((version, action, kind))
    if path is None:
        return None
    with open(path, encoding="utf-8-sig") as f:  # OCPP 2.0 schemas shipped with a BOM
        return json.load(f)


class _NoFetch(dict):
    """Handler table claiming every URI scheme, so a non-local $ref fails instead of fetching."""

    def __contains__(self, scheme):
        return True

    def __getitem__(self, scheme):
        def refuse(uri):
            raise JsonSchemaDefinitionException(f"remote $ref not allowed: {uri}")

        return refuse


_ANNOTATIONS = frozenset(("description", "comment", "$comment", "javaType", "title"))


def _strip(node):
    if isinstance(node, list):
        return [_strip(x) for x in node]
    if not isinstance(node, dict):
        return node
    return {
        k: {name: _strip(x) for name, x in sub.items()}
        if k in ("properties", "definitions")  # keys here are names, not keywords
        else _strip(sub)
        for k, sub in node.items()
        if k not in _ANNOTATIONS
    }


def _lean(schema: dict) -> dict:
    """The schema without annotations, its body moved under definitions.

    fastjsonschema rebuilds the failing node's definition as a dict literal on every raise; at the
    root that node is the whole document, which made root-level violations ~7x slower.
    """
    body = _strip(schema)
    top = {k: body.pop(k) for k in ("$schema", "$id", "id") if k in body}
    definitions = body.pop("definitions", {})
    return {
        **top,
        "$ref": "#/definitions/_payload",
        "definitions": {**definitions, "_payload": body},
    }


def _passes(payload):
    return payload


def _compile(key: tuple[str, str, str]) -> Callable | None:
    if key[0] not in _DIRS:
        raise ValueError(f"unknown OCPP version {key[0]!r}")
    if key[2] not in KINDS:
        raise ValueError(f"unknown kind {key[2]!r}")
    with _lock:
        fn = _compiled.get(key)
        if fn is None:
            schema = _schema(*key)
            if schema is None:
                return None  # not cached: vendor actions must not grow the cache
            try:
                # use_default=False: fastjsonschema would otherwise write "default" values into
                # the payload we forward.
                lean = _lean(schema)
                if _cache is not None:
                    fn = _cache.validator(lean, _NoFetch(), use_default=False)
                else:
                    fn = fastjsonschema.compile(lean, handlers=_NoFetch(), use_default=False)
            except JsonSchemaDefinitionException:
                # A schema the compiler rejects must not break the frame path: skip validation.
                log.exception("cannot compile OCPP %s schema %s/%s; not validating it", *key)
                fn = _passes
            _compiled[key] = fn
        return fn


def warm(version: str) -> int:
    """Compile every schema of a version now rather than on first use; returns how many."""
    keys = [key for key in _schema_index() if key[0] == version]
    for key in keys:
        _compile(key)
    return len(keys)


# What every station sends while it connects, and the answers to it (a reconnect storm's frames).
BOOT_ACTIONS = (
    "Authorize BootNotification Heartbeat MeterValues NotifyEvent SecurityEventNotification "
    "StartTransaction StatusNotification StopTransaction TransactionEvent"
).split()


def warm_boot_path(version: str) -> int:
    """Compile the schemas of BOOT_ACTIONS' requests and answers now; returns how many.

    16 schemas a version, 0.65 s of CPU for the three versions measured on the shared 2-core
    machine; every station-initiated action's (226) took 3.6 s and every schema 7.2 s, which
    made a start-up on the loaded machine last 25 s (all compiled afresh; loaded from the schema
    cache they take ~0.1 s). The rest is compiled by `warm` in the background once the process
    serves (stations/gateway.py), or on first use.
    """
    index = _schema_index()
    keys = [
        (version, action, kind)
        for action in BOOT_ACTIONS
        for kind in ("call", "result")
        if (version, action, kind) in index
    ]
    for key in keys:
        _compile(key)
    return len(keys)


# --- checking ------------------------------------------------------------------------------------


def is_known(version: str, action: str) -> bool:
    """True when the version has a request (or SEND) schema for the action."""
    index = _schema_index()
    return (version, action, "call") in index or (version, action, "send") in index


def check(version: str, action: str, kind: str, payload) -> Violation | None:
    """First schema violation of a "call", "result" or "send" payload; None if valid or unknown."""
    fn = _compiled.get((version, action, kind))
    if fn is None:
        fn = _compile((version, action, kind))
        if fn is None:
            return None
    if not isinstance(payload, dict):
        return Violation(codes.TYPE_CONSTRAINT, "", "type", "payload: must be object (type)")
    try:
        fn(payload)
    except JsonSchemaValueException as exc:
        return _violation(version, exc)
    return None


def _violation(version: str, exc: JsonSchemaValueException) -> Violation:
    rule = exc.rule or ""
    name = exc.name or "data"
    path = name[5:] if name.startswith("data.") else name[4:]
    detail = None
    value, definition = exc.value, exc.definition or {}
    # For these two fastjsonschema names the enclosing object; point at the key instead.
    if rule == "required" and isinstance(value, dict):
        missing = next((k for k in definition.get("required", ()) if k not in value), None)
        if missing is not None:
            path, detail = _join(path, missing), "required property missing"
    elif rule == "additionalProperties" and isinstance(value, dict):
        allowed = definition.get("properties", {})
        extra = next((k for k in value if k not in allowed), None)
        if extra is not None:
            path, detail = _join(path, str(extra)), "property not allowed (additionalProperties)"
    if detail is None:
        message = exc.message or ""
        if message.startswith(name + " "):
            message = message[len(name) + 1 :]
        detail = f"{message} ({rule})"
    path = path[:254]
    description = f"{path or 'payload'}: {detail}"[:254]
    return Violation(_code(version, rule), path, rule, description, value, definition)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


# --- discovery and examples ----------------------------------------------------------------------


def actions(version: str, initiator: str = "any") -> list[str]:
    """Sorted actions with a schema in the version; initiator "cp", "csms" or "any"."""
    if version not in _DIRS:
        raise ValueError(f"unknown OCPP version {version!r}")
    known = {a for (v, a, k) in _schema_index() if v == version and k in ("call", "send")}
    if initiator == "any":
        return sorted(known)
    if initiator not in ("cp", "csms"):
        raise ValueError(f"initiator must be 'cp', 'csms' or 'any', not {initiator!r}")
    return sorted(known & INITIATED_BY[version][initiator])


def example(version: str, action: str, kind: str = "call") -> dict:
    """A minimal payload (required properties only) that passes check(version, action, kind)."""
    schema = _schema(version, action, kind)
    if schema is None and kind == "call":
        schema = _schema(version, action, "send")
    if schema is None:
        raise KeyError(f"no {kind} schema for {action} in OCPP {version}")
    return _build(schema, schema, "", 0)


_PLACEHOLDER = {"date-time": "2025-01-01T00:00:00Z", "uri": "https://example.com/"}


def _build(node: dict, root: dict, name: str, depth: int):
    if depth > 32:
        raise ValueError("schema nests too deeply to build an example")
    while "$ref" in node:  # OCPP schemas only use local "#/definitions/..." references
        target = root
        for part in node["$ref"].lstrip("#").split("/")[1:]:
            target = target[part]
        node = target
    if "const" in node:
        return node["const"]
    if node.get("enum"):
        return node["enum"][0]
    typ = node.get("type", "object" if "properties" in node else None)
    if isinstance(typ, list):
        typ = next((t for t in typ if t != "null"), None)
    if typ == "object":
        props = node.get("properties", {})
        return {k: _build(props.get(k, {}), root, k, depth + 1) for k in node.get("required", ())}
    if typ == "array":
        item = node.get("items", {})
        return [_build(item, root, name, depth + 1) for _ in range(node.get("minItems", 0))]
    if typ in ("integer", "number"):
        value = node["minimum"] if "minimum" in node else min(0, node.get("maximum", 0))
        return math.ceil(value) if typ == "integer" else value
    if typ == "boolean":
        return False
    if typ == "string":
        text = _PLACEHOLDER.get(node.get("format"), name or "example")
        text = text.ljust(node.get("minLength", 0), "x")
        return text[: node["maxLength"]] if "maxLength" in node else text
    return None  # untyped ("any" value): null is as good as anything
