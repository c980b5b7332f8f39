"""Per-station validation policy: strict, lenient or log (docs/contract.md §2). Pure.

`lenient` accepts exactly these firmware quirks, and nothing structural:

- a date-time without an offset (read as UTC) or with a space for `T`;
- a numeric string where a number or integer is required;
- a property the schema does not allow (additionalProperties);
- a number off its `multipleOf` by at most 1e-9 (float noise: 10.100000000000001 for 0.1).

The payload is never changed: a copy is repaired quirk by quirk and checked again, and when the
copy passes, the original is forwarded with the `Validation` marker. The repaired copy only
proves that nothing but quirks failed.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal

from stations.validation import Violation

STRICT, LENIENT, LOG = "strict", "lenient", "log"
POLICIES = (STRICT, LENIENT, LOG)
MULTIPLE_OF_TOLERANCE = 1e-9
MAX_QUIRKS = 64  # repairs per frame before it is refused anyway (bounds the work per frame)

_DATE_TIME = re.compile(
    r"(\d{4}-\d{2}-\d{2})[T ](\d{2}:\d{2}:\d{2}(?:\.\d+)?)"
    r"(Z|z|[+-]\d{2}:?\d{2})?\Z"
)
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?\Z")
_STEP = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


@dataclass(frozen=True, slots=True)
class Outcome:
    stop: Violation | None  # refuse the frame with this violation
    marker: dict | None  # the envelope's "Validation" entry when a failing payload passes
    lenient: bool = False  # passed only because the station's policy is lenient


PASSED = Outcome(None, None)


def policy_for(station_policy: str | None, failure_mode: str) -> str:
    """A station's own policy, else the gateway's (`OCPPGW_VALIDATION_FAILURE`)."""
    if station_policy in POLICIES:
        return station_policy
    return LOG if failure_mode == "log" else STRICT


def marker(violation: Violation, policy: str) -> dict:
    return {"path": violation.path, "rule": violation.rule, "policy": policy}


def judge(
    policy: str, violation: Violation | None, check: Callable[[dict], Violation | None], payload
) -> Outcome:
    """What to do with a payload whose first violation (from `check`) is `violation`."""
    if violation is None:
        return PASSED
    if policy == LOG:
        return Outcome(None, marker(violation, LOG))
    if policy != LENIENT or not isinstance(payload, dict):
        return Outcome(violation, None)
    repaired, current = copy.deepcopy(payload), violation
    for _ in range(MAX_QUIRKS):
        if not repair(repaired, current):
            return Outcome(current, None)  # a structural error: refused as in strict
        current = check(repaired)
        if current is None:
            return Outcome(None, marker(violation, LENIENT), lenient=True)
    return Outcome(current, None)


def repair(payload: dict, violation: Violation) -> bool:
    """Fix one documented quirk in `payload` in place; False when the violation is not one."""
    located = _locate(payload, violation.path)
    if located is None:
        return False
    parent, key = located
    rule, definition = violation.rule, violation.definition or {}
    if rule == "additionalProperties":
        if isinstance(parent, dict) and key in parent:
            del parent[key]
            return True
        return False
    try:
        value = parent[key]
    except (KeyError, IndexError, TypeError):
        return False
    fixed = _fixed(rule, definition, value)
    if fixed is None:
        return False
    parent[key] = fixed
    return True


def _fixed(rule: str, definition: dict, value):
    if rule == "format" and definition.get("format") == "date-time" and isinstance(value, str):
        match = _DATE_TIME.match(value)
        if match is None:
            return None
        date, time, offset = match.groups()
        fixed = f"{date}T{time}{offset or 'Z'}"
        return fixed if fixed != value else None
    if rule == "type" and isinstance(value, str) and _NUMBER.match(value):
        wanted = definition.get("type")
        wanted = set(wanted) if isinstance(wanted, list) else {wanted}
        number = float(value)
        if "integer" in wanted and number.is_integer() and "." not in value:
            return int(value) if "e" not in value.lower() else int(number)
        if "number" in wanted:
            return number
        return None
    if rule == "multipleOf" and isinstance(value, int | float) and not isinstance(value, bool):
        step = definition.get("multipleOf")
        if not isinstance(step, int | float) or not step:
            return None
        steps = round(value / step)
        if abs(value - steps * step) > MULTIPLE_OF_TOLERANCE:
            return None
        # through decimals, as the checker does: 101 * 0.1 would be 10.100000000000001 again
        return float(Decimal(steps) * Decimal(repr(step)))
    return None


def _locate(payload: dict, path: str):
    """(container, key) of a dotted path such as `meterValue[0].timestamp`; None if absent."""
    steps = [name if name else int(index) for name, index in _STEP.findall(path)]
    if not steps:
        return None
    node = payload
    for step in steps[:-1]:
        try:
            node = node[step]
        except (KeyError, IndexError, TypeError):
            return None
    return node, steps[-1]
