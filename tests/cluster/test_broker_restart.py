"""Scenario 4 of issue #19: the broker restarts while 300 stations send through every node.

docs/contract.md "Broker outage": frames are buffered and published in order when the broker is
back, a CALL is either published within its call timeout or answered InternalError, never both;
past OCPPGW_BROKER_GRACE_S (10 s in this suite) every node closes its stations with 1013 and
refuses new ones until the broker is back. The broker stays away longer than that grace, so both
halves are exercised: the buffer for the first seconds, then 1013 on every node.
"""

import asyncio
import itertools
import statistics
import time
import uuid

import pytest

from tests.cluster.fleet import (
    STATIONS,
    Backend,
    Station,
    halt,
    overpublished,
    record,
    unaccounted,
    until,
)

pytestmark = [pytest.mark.cluster, pytest.mark.e2e]
DOWN_S = 14  # past the 10 s grace


async def test_broker_restart(cluster):
    await asyncio.to_thread(cluster.heal)
    backend = Backend(cluster.services, durable=True)
    stop = asyncio.Event()
    run = uuid.uuid4().hex[:5]
    stations = [Station(cluster.lb_url, f"M{run}x{i:03d}", {}) for i in range(STATIONS)]
    tasks = [asyncio.create_task(s.run(stop)) for s in stations]
    try:
        # every station talking (not retained presence: that is scenario 1's check, and one stale
        # "disconnected" under a loaded machine must not stop this scenario from running)
        await until(lambda: all(s.connected.is_set() and s.answered_at for s in stations), 120,
                    "every station answered once")  # fmt: skip
        nodes_used = {backend.presence.get(s.cid, {}).get("node") for s in stations} - {None}
        await asyncio.to_thread(cluster.services.stop_mosquitto)
        down_at = time.monotonic()
        await asyncio.sleep(DOWN_S)  # the outage itself: its length is the scenario
        await asyncio.to_thread(cluster.services.start_mosquitto)
        up_at = time.monotonic()

        def back():
            return [s for s in stations if s.connected.is_set() and s.answered_at
                    and s.answered_at[-1] > up_at]  # fmt: skip

        await until(lambda: len(back()) == STATIONS, 90,
                    lambda: f"stations answered again ({len(back())}/{STATIONS})")  # fmt: skip
        all_back_s = time.monotonic() - up_at
    finally:
        await halt(stop, tasks)
    await asyncio.sleep(2)  # in-flight publishes arrive
    backend.stop()
    reconnects = [r for s in stations for lost, r in s.reconnects if lost >= down_at]
    closed_1013 = sum(
        1 for s in stations if any(c == 1013 and t >= down_at for t, c in s.close_codes)
    )
    answered = {u for s in stations for u in s.answered}
    errored = {u for s in stations for u in s.errored}
    lost = unaccounted(stations, backend)  # sent, never published nor answered with an error
    # InternalError and published, for a CALL sent once. Not asserted: the station sees the same
    # InternalError for a CALL withdrawn unpublished (contract: never both) and for one already
    # handed to the MQTT client when the broker went, whose answer never came (allowed)
    both = [u for s in stations for u in s.errored if u in backend.published and s.sends[u] == 1]
    twice = overpublished(stations, backend)
    dups = sum(n - 1 for n in backend.published.values() if n > 1)
    out_of_order = []
    for s in stations:
        seq = [int(u.rsplit("-", 1)[1]) for u in backend.sequence if u.rsplit("-", 1)[0] == s.cid]
        if any(b < a for a, b in itertools.pairwise(seq)):
            out_of_order.append(s.cid)
    figures = {
        "stations": STATIONS, "nodes": len(nodes_used), "broker_down_s": round(up_at - down_at, 1),
        "closed_1013": closed_1013, "all_answered_again_s": round(all_back_s, 2),
        "reconnect_p50_s": round(statistics.median(reconnects), 2) if reconnects else None,
        "reconnect_p100_s": round(max(reconnects), 2) if reconnects else None,
        "frames_sent": sum(len(s.sent) for s in stations), "published": len(backend.published),
        "answered": len(answered), "internal_error": len(errored), "published_and_errored": len(both),
        "duplicates": dups, "published_more_than_sent": len(twice),
        "redelivered_by_broker": backend.redelivered, "out_of_order": len(out_of_order), "lost": len(lost),
    }  # fmt: skip
    record("broker_restart", figures)
    assert len(nodes_used) == len(cluster.nodes), nodes_used
    assert not lost, lost[:5]
    assert not out_of_order, out_of_order[:5]
    assert not twice, twice[:5]
    # every node closed its stations with 1013 once the grace ran out
    assert closed_1013 == STATIONS, closed_1013
