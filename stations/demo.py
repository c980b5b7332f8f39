"""What `manage.py demobackend` answers: a schema-valid CALLRESULT for any station CALL. Pure.

A demo, not business logic (that is the operator's backend): every BootNotification is
Accepted, every Authorize too, and times are now. Answers are built from the official schemas
of the station's OCPP version (stations/validation.py), so they pass the gateway's checks.
"""

import datetime

from stations import topics, validation

HEARTBEAT_INTERVAL_S = 300


def now_iso() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def answer(version: str, action: str, at: str | None = None) -> dict | None:
    """The CALLRESULT payload for a station's `action`, or None when its version has no such
    action (a vendor action: the demo does not pretend to know it)."""
    try:
        payload = validation.example(version, action, "result")
    except KeyError:
        return None
    at = at or now_iso()
    if "currentTime" in payload:
        payload["currentTime"] = at
    if action == "BootNotification" and "interval" in payload:
        payload["interval"] = HEARTBEAT_INTERVAL_S
    return payload


def reply_topic(downstream_template: str, cid: str, action: str) -> str:
    """Where a backend publishes the answer: inside the station's downstream filter (the seed
    puts it at `ocpp/cs/<cid>/Reply/<action>`)."""
    topic_filter = topics.downstream_filter(downstream_template, topics.escape_cid(cid))
    if topic_filter.endswith("/#"):
        return f"{topic_filter[:-1]}Reply/{topics.escape_level(action)}"
    return topic_filter
