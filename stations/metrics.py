"""Prometheus metrics of a gateway process (docs/contract.md §3 `/metrics`).

Counters on the frame path are incremented where the event happens; queue depths and the
counters other modules already keep (log rows, auth cache, MQTT drops) are sampled once a second
by `sample_forever()` and at every scrape. Labels are bounded: an action label only takes names
from the OCPP action lists (else "other"), reasons come from fixed sets.

Several processes (`rungateway --processes N`) share one PROMETHEUS_MULTIPROC_DIR that the
supervisor creates: every process writes its values there and `/metrics`, served by any of them,
adds them up (prometheus-client's multiprocess mode; gauges are summed over live processes).
"""

import asyncio
import itertools
import os
import time

import orjson
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from stations.codes import ERROR_CODES, TYPE_NAMES
from stations.ocpp_actions import INITIATED_BY
from stations.refusals import label_of

MULTIPROCESS = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
SAMPLE_EVERY_S = 1.0

KNOWN_ACTIONS = frozenset(
    action for by in INITIATED_BY.values() for names in by.values() for action in names
)
CONNECTIONS = Gauge(
    "ocppgw_connections", "Stations connected to this gateway", multiprocess_mode="livesum"
)
FRAMES = Counter(
    "ocppgw_frames_total",
    "OCPP-J frames from (in) and to (out) stations",
    ["direction", "type", "action"],
)
CALLERRORS_SENT = Counter(
    "ocppgw_callerrors_sent_total", "CALLERRORs the gateway itself sent to stations", ["code"]
)
GATEWAY_ERRORS = Counter(
    "ocppgw_gateway_errors_total",
    "Gateway-written envelopes to the backend (error topic or notice topic), by reason",
    ["reason", "topic"],
)
FRAMES_AFTER_ABUSE = Counter(
    "ocppgw_frames_after_abuse_total",
    "Frames a station sent after it was closed 1008 for abuse (not taken, not logged)",
)
BACKEND_QUEUE = Gauge(
    "ocppgw_backend_calls_queued",
    "Backend CALLs waiting for their station, all stations",
    multiprocess_mode="livesum",
)
MQTT_BUFFER = Gauge(
    "ocppgw_mqtt_buffered",
    "Messages held while the broker is away",
    multiprocess_mode="livesum",
)
MQTT_DROPPED = Counter(
    "ocppgw_mqtt_dropped_total", "Messages dropped because the broker buffer was full"
)
BROKER_UP = Gauge(
    "ocppgw_broker_connected", "1 when the MQTT connection is up", multiprocess_mode="livemin"
)
# a reconnect storm as it happens: what is under way, and how much of it waits for a hash
HANDSHAKES = Gauge(
    "ocppgw_handshakes_in_progress",
    "WebSocket handshakes under way (request handed over, not yet open nor closed)",
    multiprocess_mode="livesum",
)
AUTH_PENDING = Gauge(
    "ocppgw_auth_checks_pending",
    "Handshakes queued for, or in, a password check",
    multiprocess_mode="livesum",
)
LOG_QUEUE = Gauge(
    "ocppgw_log_queued", "Message-log rows waiting for the database", multiprocess_mode="livesum"
)
LOG_WRITTEN = Counter("ocppgw_log_rows_written_total", "Message-log rows written")
LOG_DROPPED = Counter(
    "ocppgw_log_rows_dropped_total", "Message-log rows dropped (queue full past its bound)"
)
LOG_FAILURES = Counter("ocppgw_log_write_failures_total", "Failed message-log batch writes")
PUBLISH_LATENCY = Histogram(
    "ocppgw_publish_latency_seconds",
    "From a station frame's arrival to its MQTT publish handed to the client library",
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
AUTH_CACHE_HITS = Counter("ocppgw_auth_cache_hits_total", "Remembered password verifications")
AUTH_CACHE_MISSES = Counter(
    "ocppgw_auth_cache_misses_total", "Password checks that needed the database and a hash"
)
AUTH_SHARED_HITS = Counter(
    "ocppgw_auth_cache_shared_hits_total",
    "Verifications another gateway process remembered (Redis, OCPPGW_AUTH_SHARED_CACHE)",
)
AUTH_REFUSALS = Counter(
    "ocppgw_auth_refusals_total", "Connections refused before the upgrade, by reason", ["reason"]
)

_frame_children: dict[tuple, object] = {}


# --- the frame path --------------------------------------------------------------------------
def frame(direction: str, frame_type: int | None, action: str | None) -> None:
    """Count one frame from ("in") or to ("out") a station; other directions are ignored."""
    if direction not in ("in", "out"):
        return
    # keyed by the label, never by the station's raw action text: a hostile station sending
    # random action names once grew this cache by ~360 KB (up to 10,000 keys of its text)
    name = action if action in KNOWN_ACTIONS else ("none" if not action else "other")
    key = (direction, frame_type, name)
    child = _frame_children.get(key)
    if child is None:
        child = FRAMES.labels(direction, TYPE_NAMES.get(frame_type, "unparsed"), name)
        _frame_children[key] = child  # bounded: 2 directions x 6 types x the OCPP actions
    child.inc()


def callerror_sent(text: str) -> None:
    """Count a CALLERROR the gateway wrote (`text` is the OCPP-J array), by ErrorCode."""
    try:
        code = orjson.loads(text)[2]
    except (orjson.JSONDecodeError, IndexError, TypeError):
        code = "other"
    CALLERRORS_SENT.labels(code if code in ERROR_CODES else "other").inc()


def gateway_error(reason: str, notice: bool) -> None:
    GATEWAY_ERRORS.labels(reason or "other", "notice" if notice else "error").inc()


def published(pending, received_at: float) -> None:
    """A station frame went to the bridge: observe now, or when the buffer drains (broker away)."""
    if pending is None:
        return
    if pending.sent:
        PUBLISH_LATENCY.observe(time.monotonic() - received_at)
    else:
        pending.received = received_at


def handed_over(pending) -> None:
    """Called by the bridge when a buffered publish finally goes to paho."""
    if pending.received is not None:
        PUBLISH_LATENCY.observe(time.monotonic() - pending.received)


def refused(reason: str) -> None:
    """Count a refused handshake by its label (stations/refusals.py), "other" if it has none."""
    AUTH_REFUSALS.labels(label_of(reason)).inc()


# --- sampled values ----------------------------------------------------------------------------
_last: dict[str, int] = {}


def _sync(counter, name: str, value: int) -> None:
    """Move a counter by the growth of a plain int another module keeps."""
    last = _last.get(name, 0)
    if value < last:  # a new Gateway (tests, restart in process): its counts start at 0
        last = 0
    if value > last:
        counter.inc(value - last)
    _last[name] = value


def sample(gw, walk_sessions: bool = True) -> None:
    """Copy the gateway's queue depths and its own counters into the metrics."""
    CONNECTIONS.set(len(gw.registry))
    if walk_sessions:
        BACKEND_QUEUE.set(sum(len(c.backend_calls.queue) for c in gw.registry.all()))
    MQTT_BUFFER.set(gw.bridge.buffered())
    BROKER_UP.set(1 if gw.bridge.connected else 0)
    LOG_QUEUE.set(len(gw.writer.rows))
    edge = gw.edge_handshakes
    HANDSHAKES.set(edge() if edge is not None else gw.handshaking)
    AUTH_PENDING.set(gw.gatekeeper.pending)
    _sync(MQTT_DROPPED, "mqtt_dropped", gw.bridge.dropped)
    _sync(LOG_WRITTEN, "log_written", gw.writer.written)
    _sync(LOG_DROPPED, "log_dropped", gw.writer.dropped)
    _sync(LOG_FAILURES, "log_failures", gw.writer.failures)
    _sync(AUTH_CACHE_HITS, "auth_hits", gw.gatekeeper.cache.hits)
    shared = gw.gatekeeper.shared
    _sync(AUTH_SHARED_HITS, "auth_shared_hits", shared.hits if shared is not None else 0)
    # the checks that hashed: a local miss that Redis answered needed neither database nor hash
    _sync(AUTH_CACHE_MISSES, "auth_misses", gw.gatekeeper.checks)


async def sample_forever(gw) -> None:
    # summing every station's backend queue walks all sessions: every 5th sample only (5,000
    # idle stations: 0.6% of a core when done every second)
    for n in itertools.count():
        sample(gw, walk_sessions=n % 5 == 0)
        await asyncio.sleep(SAMPLE_EVERY_S)


def render() -> tuple[bytes, str]:
    """(body, content type) of the Prometheus text format, all processes added up."""
    if MULTIPROCESS:
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    else:
        registry = REGISTRY
    return generate_latest(registry), CONTENT_TYPE_LATEST
