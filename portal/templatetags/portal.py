"""Display helpers for portal templates: frame-type names, direction labels, compact times."""

from django import template

register = template.Library()

TYPE_NAMES = {2: "CALL", 3: "RESULT", 4: "ERROR", 5: "RESULTERROR", 6: "SEND"}
DIRECTION_LABELS = {"in": "from station", "out": "to station", "gw": "gateway"}


@register.filter
def frame_type(value) -> str:
    """2 -> "CALL"; empty for rows that are no frame (presence, refusals)."""
    return TYPE_NAMES.get(value, "" if value is None else str(value))


@register.filter
def direction_label(value) -> str:
    return DIRECTION_LABELS.get(value, value)


@register.filter
def utc(value) -> str:
    """A time as operators read it across sites: UTC, to the second."""
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else "—"


@register.filter
def utc_ms(value) -> str:
    """A log time to the millisecond: frames of one exchange are milliseconds apart."""
    return value.strftime("%H:%M:%S.%f")[:-3] if value else "—"
