"""Operator control of a station, shared by the portal and the API: send a command, kick, answer.

A command is published on the station's downstream topic exactly as a backend would publish it, so
there is one downstream path (queueing, timeouts, validation, logging all happen in the gateway).
Views are sync; the gateway's loop runs in another thread of the same process, or not at all here.
"""

import asyncio
import uuid

import orjson
from django.conf import settings

from stations import cluster, config_rows, gateway, mqtt_url, topics, validation
from stations.models import MessageLog, TopicRule
from stations.policy import ValidationPolicy

# what stands in for a `#` or `+` level of the downstream filter in the topic the portal publishes on
PORTAL_LEVEL = "portal"
KICK_WAIT_S = 5.0
PUBLISH_WAIT_S = 5.0


class Refused(Exception):
    """The command cannot be sent; `path` and `rule` name the schema violation, if that is why."""

    def __init__(self, message: str, path: str = "", rule: str = ""):
        super().__init__(message)
        self.message, self.path, self.rule = message, path, rule


# commands that interrupt a station or a charge: the portal asks before it sends them
DISRUPTIVE = {
    "Reset": "restarts the station; a charge in progress may stop",
    "UnlockConnector": "releases the cable, even during a charge",
    "ClearCache": "drops the station's authorization cache (offline charging may be refused)",
    "ChangeAvailability": "can take the station or a connector out of service",
    "UpdateFirmware": "installs firmware and restarts the station",
    "RemoteStopTransaction": "stops a charge in progress",
    "RequestStopTransaction": "stops a charge in progress",
    "ClearChargingProfile": "removes charging limits the station enforces",
    "SetNetworkProfile": "changes how the station reaches its backend (it may not come back)",
    "DeleteCertificate": "removes a certificate the station may need to connect",
}


def disruptive(action: str, payload: dict) -> str | None:
    """Why `action` needs the operator's confirmation, or None."""
    why = DISRUPTIVE.get(action)
    if why is None:
        return None
    kind = payload.get("type") if isinstance(payload, dict) else None
    return f"{action}{f' ({kind})' if kind else ''} {why}"


def version_of(station) -> str:
    """The OCPP version the station last connected with; commands are checked against it."""
    return station.ocpp_version or ""


def actions(station) -> list[str]:
    """Actions a CSMS may send to this station (empty while its version is unknown)."""
    version = version_of(station)
    return validation.actions(version, "csms") if version in validation.VERSIONS else []


def examples(version: str) -> dict[str, dict]:
    """A minimal valid payload per action of the version, to pre-fill the editor."""
    if version not in validation.VERSIONS:
        return {}
    return {a: validation.example(version, a) for a in validation.actions(version, "csms")}


def concrete(topic_filter: str) -> str:
    """A publishable topic inside a subscription filter: wildcard levels become "portal"."""
    return "/".join(
        PORTAL_LEVEL if level in ("#", "+") else level for level in topic_filter.split("/")
    )


def downstream_topic(station) -> str:
    """The topic a backend would publish this station's commands on, honouring topic rules."""
    gw = gateway.current()
    if gw is not None:
        rule_set = gw.rules
    else:
        defaults = {"downstream": settings.OCPPGW_DOWNSTREAM_TOPIC}
        rule_set = config_rows.rule_set(defaults, TopicRule.DOWNSTREAM)
    template = rule_set.template("downstream", None, station.cid_key)
    return concrete(topics.downstream_filter(template, station.cid, version_of(station)))


def envelope(unique_id: str, action: str, payload: dict) -> bytes:
    """The backend's CALL envelope (docs/contract.md §2)."""
    return orjson.dumps(
        {"MessageTypeId": 2, "UniqueId": unique_id, "Action": action, "Payload": payload}
    )


def send(station, action: str, payload) -> tuple[str, str]:
    """Validate and publish a CALL to the station; returns (UniqueId, topic) or raises Refused."""
    check(station, action, payload)
    unique_id = str(uuid.uuid4())
    topic = downstream_topic(station)
    publish(topic, envelope(unique_id, action, payload))
    return unique_id, topic


def check(station, action: str, payload) -> None:
    """Raise Refused unless the station's version takes this CALL with this payload."""
    version = version_of(station)
    if version not in validation.VERSIONS:
        raise Refused("the station has never connected, so its OCPP version is unknown")
    if action not in validation.actions(version, "csms"):
        raise Refused(f"{action!r} is not an action a CSMS sends in OCPP {version}")
    if not isinstance(payload, dict):
        raise Refused("the payload must be a JSON object")
    policy = ValidationPolicy(settings.OCPPGW_VALIDATION, config_rows.exemptions())
    # refused even in log mode: an operator typing a command is better told than the station
    violation = policy.check("downstream", version, action, "call", payload)
    if violation:
        raise Refused(violation.description, violation.path, violation.rule)


def publish(topic: str, body: bytes) -> None:
    """Publish through this process's gateway (on its loop), else with a short-lived MQTT client."""
    gw = gateway.current()
    if gw is not None:
        # the bridge belongs to the gateway's loop: never call it from a view's thread
        future = asyncio.run_coroutine_threadsafe(_publish_on_loop(gw, topic, body), gw.loop)
        if future.result(PUBLISH_WAIT_S) is None:
            raise Refused("the gateway's broker buffer is full; try again shortly")
        return
    _publish_once(topic, body)


async def _publish_on_loop(gw, topic: str, body: bytes):
    return gw.bridge.publish(topic, body)


def _publish_once(topic: str, body: bytes) -> None:
    import paho.mqtt.client as mqtt

    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2, client_id=f"ocppgw-portal-{uuid.uuid4()}"
    )
    host, port = mqtt_url.configure(client, settings.MQTT_URL)
    try:
        # blocking calls are fine here: this runs in a sync view's worker thread, not on a loop
        client.connect(host, port, 10)
        client.loop_start()
        info = client.publish(topic, body, qos=max(1, settings.OCPPGW_MQTT_QOS))
        info.wait_for_publish(PUBLISH_WAIT_S)
        if not info.is_published():
            raise Refused("the MQTT broker did not acknowledge the command")
    except OSError as exc:
        raise Refused(f"cannot reach the MQTT broker: {exc}") from exc
    finally:
        client.disconnect()
        client.loop_stop()


def kick(station, reason: str) -> None:
    """Close the station's socket in whichever gateway process holds it; raises Refused."""
    reason = reason or "kicked by an operator"
    gw = gateway.current()
    if gw is not None:
        future = asyncio.run_coroutine_threadsafe(gw.cluster.kick(station.cid_key, reason), gw.loop)
        future.result(KICK_WAIT_S)
        return
    if not settings.REDIS_URL:
        raise Refused("no gateway runs in this process and REDIS_URL is unset: cannot reach it")
    import redis

    client = redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=2, socket_timeout=2)
    try:
        client.publish(cluster.CHANNEL, cluster.kick_message(station.cid_key, reason, "portal"))
    except redis.RedisError as exc:
        raise Refused(f"cannot reach Redis: {exc}") from exc
    finally:
        client.close()


def answer(station, unique_id: str) -> dict:
    """What became of a command so far: state waiting|sent|answered|error, with the rows seen.

    The station's answer is an "in" row of type 3/4; a gateway error (invalid, offline, timeout,
    queue full) is a "gw" row with the command's UniqueId.
    """
    rows = list(
        MessageLog.objects.filter(unique_id=unique_id, cid=station.cid).order_by("created", "id")[
            :10
        ]
    )
    state, final = "waiting", None
    for row in rows:
        if row.direction == MessageLog.OUT and row.message_type == 2 and state == "waiting":
            state = "sent"
        elif row.direction == MessageLog.IN and row.message_type in (3, 4):
            state, final = ("answered" if row.message_type == 3 else "error"), row
        elif row.direction == MessageLog.GATEWAY and row.message_type == 4:
            state, final = "error", row
    return {
        "unique_id": unique_id,
        "state": state,
        "answer": _answer_body(final),
        "rows": [_row(r) for r in rows],
    }


def _answer_body(row):
    """The answer as a backend would see it: the payload, or the error's code and description."""
    if row is None:
        return None
    try:
        body = orjson.loads(row.payload)
    except orjson.JSONDecodeError:
        return row.payload  # truncated in the log (OCPPGW_LOG_PAYLOAD_BYTES)
    if isinstance(body, list) and len(body) == 3 and body[0] == 3:
        return body[2]
    if isinstance(body, list) and len(body) == 5 and body[0] == 4:
        return {"ErrorCode": body[2], "ErrorDescription": body[3], "ErrorDetails": body[4]}
    return body


def _row(row) -> dict:
    return {
        "id": row.id,
        "created": row.created.isoformat(),
        "direction": row.direction,
        "message_type": row.message_type,
        "outcome": row.outcome,
        "reason": row.reason,
    }
