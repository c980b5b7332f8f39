"""Redis outage: frames keep flowing; only cross-process coordination (newest connection wins
across processes) pauses, and it comes back with Redis, without restarting anything."""

import asyncio
import contextlib
import json
import time

import pytest

from tests.conftest import until
from tests.reliability.clients import Station, close_all, open_all
from tests.reliability.test_database_outage import responder

pytestmark = pytest.mark.e2e


async def _replaced_across(gw_a, gw_b, cid: str, wait_s: float = 1.5) -> bool:
    """Connect `cid` to A, then to B: True when A's socket was closed (1000) as replaced."""
    first = await Station(gw_a.url(cid), cid).open()
    await asyncio.sleep(0.3)  # A's claim is out before B's
    second = await Station(gw_b.url(cid), cid).open()
    try:
        await asyncio.wait_for(first.closed.wait(), wait_s)
        return first.close_code == 1000
    except TimeoutError:
        return False
    finally:
        await close_all([first, second])


async def _traffic(stations, sent, seconds: float) -> None:
    async def one(station):
        for _ in range(int(seconds / 0.1)):
            uid = f"{station.cid}-{len(sent[station.cid])}"
            assert await station.send([2, uid, "Heartbeat", {}]), f"{station.cid} closed"
            sent[station.cid].append(uid)
            await asyncio.sleep(0.1)

    await asyncio.gather(*(one(s) for s in stations))


async def test_redis_outage_keeps_frames_flowing_and_coordination_recovers(
    private_redis, gateway_factory, recorder_factory
):
    env = {"REDIS_URL": private_redis.url, "OCPPGW_AUTH": "none", "OCPPGW_RATE_PER_S": "0"}
    gw_a, gw_b = gateway_factory(env), gateway_factory(env)
    prefix = f"rd{int(time.time()) % 100000}x"
    recorder = recorder_factory(1883, ("ocpp/cp/+/Heartbeat",), respond=responder(prefix))
    await asyncio.sleep(1)  # both processes listen on Redis
    assert await _replaced_across(gw_a, gw_b, f"{prefix}dup0"), "coordination never worked"

    stations = [
        Station(gw.url(f"{prefix}{i}"), f"{prefix}{i}")
        for i in range(10)
        for gw in [(gw_a, gw_b)[i % 2]]
    ]
    await open_all(stations)
    sent = {s.cid: [] for s in stations}
    await _traffic(stations, sent, 1)
    await asyncio.to_thread(private_redis.stop)
    outage_started = time.monotonic()
    await _traffic(stations, sent, 4)  # through the outage: nothing may stop
    assert (await asyncio.to_thread(gw_a.readyz))[0] == 200  # Redis is not needed to serve
    degraded = not await _replaced_across(gw_a, gw_b, f"{prefix}dup1")
    await asyncio.to_thread(private_redis.start)
    outage_s = time.monotonic() - outage_started
    recovered_after = None
    for attempt in range(10):
        if await _replaced_across(gw_a, gw_b, f"{prefix}dup{attempt + 2}"):
            recovered_after = time.monotonic() - outage_started - outage_s
            break
        await asyncio.sleep(1)
    await _traffic(stations, sent, 1)
    all_sent = [uid for ids in sent.values() for uid in ids]

    def published():
        return [
            json.loads(p)["UniqueId"]
            for _, t, p, _ in recorder.snapshot()
            if t.split("/")[2].startswith(prefix)
        ]

    await until(lambda: len(published()) >= len(all_sent), 10, "every frame sent on the broker")
    published = published()

    def answered():
        return {uid for s in stations for uid, a in s.answers().items() if a[0][1][0] == 3}

    # the last answers cross the broker twice after their frame was published
    with contextlib.suppress(AssertionError):
        await until(lambda: answered() >= set(all_sent), 10, "every frame answered")
    answered = answered()
    print(
        "redis outage figures:",
        {
            "sent": len(all_sent),
            "published": len(published),
            "answered": len(answered),
            "duplicate_cid_resolved_during_outage": not degraded,
            "coordination_recovered_after_s": recovered_after,
        },
    )
    assert sorted(published) == sorted(all_sent)
    assert answered == set(all_sent)
    assert all(s.close_code is None for s in stations)
    assert recovered_after is not None, "cross-process claims never came back"
    for gw in (gw_a, gw_b):
        assert "Traceback" not in gw.log(), gw.log()[-3000:]
    await close_all(stations)


async def test_duplicate_made_during_redis_outage_is_resolved_when_redis_returns(
    private_redis, gateway_factory
):
    """A station on A, then on B, while Redis is down: both hold it. When Redis returns, the
    claims are re-announced (stations/cluster.py) and A's older socket closes as replaced."""
    env = {"REDIS_URL": private_redis.url, "OCPPGW_AUTH": "none", "OCPPGW_RATE_PER_S": "0"}
    gw_a, gw_b = gateway_factory(env), gateway_factory(env)
    cid = f"rdx{int(time.time()) % 100000}"
    for attempt in range(10):  # both processes listen on Redis: a duplicate is resolved
        if await _replaced_across(gw_a, gw_b, f"{cid}ok{attempt}"):
            break
    else:
        raise AssertionError("coordination never worked before the outage")
    await asyncio.to_thread(private_redis.stop)
    await until(
        lambda: all("lost redis" in gw.log() for gw in (gw_a, gw_b)), 10, "both saw Redis go"
    )
    first = await Station(gw_a.url(cid), cid).open()
    await asyncio.sleep(0.3)  # B's connection is the newer one
    second = await Station(gw_b.url(cid), cid).open()
    try:
        await asyncio.sleep(1)
        assert not first.closed.is_set(), "closed without Redis: the outage was not real"
        await asyncio.to_thread(private_redis.start)
        back = time.monotonic()
        await asyncio.wait_for(first.closed.wait(), 10)
        resolved_s = time.monotonic() - back
        await asyncio.sleep(1)  # B must keep the newest connection, not close it in return
        print("redis outage duplicate:", {"resolved_after_s": round(resolved_s, 2)})
        assert first.close_code == 1000, first.close_code
        assert not second.closed.is_set(), second.close_code
        assert await second.send([2, "after", "Heartbeat", {}])
        for gw in (gw_a, gw_b):
            assert "Traceback" not in gw.log(), gw.log()[-3000:]
    finally:
        await close_all([first, second])
