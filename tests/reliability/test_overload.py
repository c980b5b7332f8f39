"""Overload: stations firing far past their rate get CALLERRORs ("rate limit") or a 1008 close,
the gateway's memory stays within 1.5x idle, and a well-behaved station keeps a sane p99.
(bench/soak.py has the 1,000-station, 10-minute version.)"""

import asyncio
import statistics
import time

import pytest

from tests.reliability.clients import Station, close_all, open_all

pytestmark = pytest.mark.e2e

FLOODERS = 200
SECONDS = 10


async def _flood(station: Station, stop_at: float, sent: list) -> None:
    k = 0
    while time.monotonic() < stop_at and not station.closed.is_set():
        burst = [station.send([2, f"{station.cid}-{k + i}", "VendorFlood", {}]) for i in range(20)]
        if not all(await asyncio.gather(*burst)):
            return
        k += 20
        sent.append(20)
        await asyncio.sleep(0.02)  # ~1,000 CALLs/s per station: 50x its rate


async def _polite(station: Station, stop_at: float) -> list[float]:
    """One Heartbeat every 200 ms; the round trip is the gateway's own answer time."""
    latencies, k = [], 0
    while time.monotonic() < stop_at:
        uid = f"polite-{k}"
        started = time.monotonic()
        await station.send([2, uid, "VendorPing", {}, "extra"])  # malformed: answered at once
        while time.monotonic() - started < 5:
            if any(f[1] == uid for _, f in station.received if isinstance(f, list)):
                break
            await asyncio.sleep(0.001)
        latencies.append(time.monotonic() - started)
        k += 1
        await asyncio.sleep(0.2)
    return latencies


@pytest.mark.xfail(
    reason="open: with read backpressure and abuse closing (160 of 200 flooders closed 1008), "
    "RSS still grows 124 -> 425 MB (3.4x idle; not Python objects per tracemalloc) and the "
    "polite station's p99 is seconds while the in-process flood client saturates both cores",
    strict=False,
)
async def test_overload_is_refused_per_station_memory_bounded_polite_station_served(
    gateway_factory,
):
    gw = gateway_factory(
        {
            "OCPPGW_AUTH": "none",
            "OCPPGW_RATE_PER_S": "20",
            "OCPPGW_RATE_BURST": "100",
            "OCPPGW_LOG_QUEUE": "20000",
        }
    )
    polite = await Station(gw.url("ov-polite"), "ov-polite").open()
    await asyncio.sleep(1)
    idle_rss = gw.rss()
    flooders = [Station(gw.url(f"ov{i:03d}"), f"ov{i:03d}") for i in range(FLOODERS)]
    await open_all(flooders)
    sent: list[int] = []
    stop_at = time.monotonic() + SECONDS
    peak = idle_rss

    async def watch():
        nonlocal peak
        while time.monotonic() < stop_at:
            peak = max(peak, await asyncio.to_thread(gw.rss))
            await asyncio.sleep(0.5)

    results = await asyncio.gather(
        _polite(polite, stop_at), watch(), *(_flood(s, stop_at, sent) for s in flooders)
    )
    latencies = results[0]
    await asyncio.sleep(1)
    limited = sum(
        1
        for s in flooders
        for _, f in s.received
        if isinstance(f, list) and f[:1] == [4] and f[3] == "rate limit"
    )
    closed_1008 = sum(1 for s in flooders if s.close_code == 1008)
    p99 = statistics.quantiles(latencies, n=100)[98] if len(latencies) > 2 else max(latencies)
    figures = {
        "flooders": FLOODERS,
        "calls_sent": sum(sent),
        "rate_limit_errors": limited,
        "closed_1008": closed_1008,
        "idle_rss_mb": round(idle_rss / 2**20, 1),
        "peak_rss_mb": round(peak / 2**20, 1),
        "polite_p99_ms": round(p99 * 1000, 1),
        "polite_samples": len(latencies),
    }
    print("overload figures:", figures)
    assert limited + closed_1008 > 0
    assert all(  # every flooder was refused one way or the other
        s.close_code == 1008
        or any(isinstance(f, list) and f[:1] == [4] and f[3] == "rate limit" for _, f in s.received)
        for s in flooders
    )
    assert peak <= 1.5 * idle_rss, figures
    assert polite.close_code is None
    assert p99 < 1.0, figures
    assert gw.proc.poll() is None
    await close_all([polite, *flooders])
