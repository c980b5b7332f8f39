"""Scenario 3 of issue #19: Redis cut off from one node (a firewall drops that host's packets to
and from Redis, both ways), while stations talk through every node.

Frames never touch Redis (docs/architecture.md), so they keep flowing everywhere. A station
connected to the cut node and to another node during the cut is held by both; when the cut heals
the claims are re-announced (stations/cluster.py) and the older socket is closed (1000).
"""

import asyncio
import shutil
import statistics
import time
import uuid

import pytest

from tests.cluster.fleet import (
    Backend,
    Station,
    all_connected,
    halt,
    overpublished,
    record,
    unaccounted,
    until,
)
from tests.reliability.clients import Station as RawStation
from tests.reliability.clients import close_all

pytestmark = [pytest.mark.cluster, pytest.mark.e2e]
# fewer than scenario 1's 300: this scenario is about coordination, and CI time is short
STATIONS = 120
CUT_S = 15  # longer than redis-py's health check (10 s): the listener's own socket is cut too


async def test_redis_cut_from_one_node(cluster):
    if not shutil.which("nft"):
        pytest.skip("scenario 3 needs `nft` (.ci/run installs nftables)")
    await asyncio.to_thread(cluster.heal)
    backend = Backend(cluster.services)
    stop = asyncio.Event()
    run = uuid.uuid4().hex[:5]
    stations = [Station(cluster.lb_url, f"R{run}x{i:03d}", {}) for i in range(STATIONS)]
    tasks = [asyncio.create_task(s.run(stop)) for s in stations]
    cut_i, other_i = 1, 2
    cut, other = cluster.nodes[cut_i], cluster.nodes[other_i]
    duplicates = []
    try:
        await all_connected(stations, backend)
        node_of = {s.cid: backend.presence[s.cid]["node"] for s in stations}
        on_node = {n.node: [s for s in stations if node_of[s.cid] == n.node] for n in cluster.nodes}
        assert on_node[cut.node], "HAProxy gave the node to cut no station"

        await asyncio.to_thread(cluster.cut_redis, cut_i)
        cut_at = time.monotonic()
        # during the cut: D1 on the cut node then on another (the cut node's is older), D2 the
        # other way round (the cut node's is newer); both nodes hold both
        d1, d2 = f"D{run}a", f"D{run}b"
        d1_old = await RawStation(cut.ws_url(d1), d1).open()
        await asyncio.sleep(0.3)
        d1_new = await RawStation(other.ws_url(d1), d1).open()
        d2_old = await RawStation(other.ws_url(d2), d2).open()
        await asyncio.sleep(0.3)
        d2_new = await RawStation(cut.ws_url(d2), d2).open()
        duplicates = [d1_old, d1_new, d2_old, d2_new]
        await until(lambda: "redis unavailable" in cut.log(), 30, "the cut node saw the cut")
        await asyncio.sleep(max(0.0, CUT_S - (time.monotonic() - cut_at)))
        both_held = not any(d.closed.is_set() for d in duplicates)
        await asyncio.to_thread(cluster.net.uncut, cut_i)
        healed_at = time.monotonic()
        await until(lambda: d1_old.closed.is_set() and d2_old.closed.is_set(), 30,
                    "both older sockets closed after the cut healed")  # fmt: skip
        resolved_s = time.monotonic() - healed_at
        await asyncio.sleep(2)  # the newest sockets must stay, not be closed in return
        newest_kept = not d1_new.closed.is_set() and not d2_new.closed.is_set()
    finally:
        await halt(stop, tasks)
        await close_all(duplicates)
        cluster.net.uncut(cut_i)
    await asyncio.sleep(2)  # in-flight publishes arrive
    backend.stop()
    # answers each node gave during the cut, by the node that held the station when it began
    during = {
        name: sum(1 for s in held for t in s.answered_at if cut_at < t < healed_at)
        for name, held in on_node.items()
        if held
    }
    reconnects = [r for s in stations for lost, r in s.reconnects if lost >= cut_at]
    answered = {u for s in stations for u in s.answered}
    lost = unaccounted(stations, backend)  # sent, never published nor answered with an error
    figures = {
        "stations": STATIONS, "cut_s": round(healed_at - cut_at, 1),
        "answers_during_cut_by_node": during,
        "reconnects": len(reconnects),
        "reconnect_p50_s": round(statistics.median(reconnects), 2) if reconnects else None,
        "reconnect_p100_s": round(max(reconnects), 2) if reconnects else None,
        "frames_sent": sum(len(s.sent) for s in stations), "published": len(backend.published),
        "answered": len(answered),
        "duplicates": sum(n - 1 for n in backend.published.values() if n > 1), "lost": len(lost),
        "duplicate_held_by_both_during_cut": both_held,
        "duplicate_resolved_after_heal_s": round(resolved_s, 2),
    }  # fmt: skip
    record("redis_cut", figures)
    assert not lost, lost[:5]
    twice = overpublished(stations, backend)
    assert not twice, twice[:5]
    assert all(during.values()), f"a node stopped answering during the cut: {during}"
    assert not reconnects, f"{len(reconnects)} stations lost their socket during the Redis cut"
    assert both_held, "a duplicate was resolved during the cut: Redis was not really cut off"
    assert d1_old.close_code == 1000 and d2_old.close_code == 1000, (
        d1_old.close_code, d2_old.close_code)  # fmt: skip
    assert newest_kept, (d1_new.close_code, d2_new.close_code)
