"""Flooding stations in their own process, so they do not share the test's event loop and GIL.

python flood.py URL_PREFIX N SECONDS: connects N stations (URL_PREFIX + cid), prints
{"event": "connected", ...}, waits for "go" on stdin, then each sends bursts of 20 CALLs every
20 ms (~1,000 CALLs/s each, far past any station's rate) for SECONDS and prints
{"event": "done", ...} with what was sent and what came back.
"""

import asyncio
import collections
import json
import resource
import sys
import time

import websockets


async def _station(url: str, cid: str, go: asyncio.Event, stop: list, counts, opened) -> None:
    try:
        for attempt in range(3):  # like a station, try again: this measures overload, not storms
            try:
                ws = await websockets.connect(url + cid, subprotocols=["ocpp1.6"], compression=None)
                break
            except Exception as exc:
                counts[f"connect_error_{type(exc).__name__}"] += 1
                if attempt == 2:
                    counts["connect_failed"] += 1
                    return
                await asyncio.sleep(1)
    finally:
        opened.set()
    counts["connected"] += 1

    async def read():
        async for message in ws:
            frame = json.loads(message)
            if frame[0] == 4 and frame[3] == "rate limit":
                counts["rate_limit_errors"] += 1
            else:
                counts[f"answers_{frame[0]}"] += 1

    reader = asyncio.create_task(read())
    await go.wait()
    k = 0
    try:
        while time.monotonic() < stop[0]:
            for i in range(20):
                await ws.send(json.dumps([2, f"{cid}-{k + i}", "VendorFlood", {}]))
            k += 20
            counts["sent"] += 20
            await asyncio.sleep(0.02)
    except websockets.ConnectionClosed:
        pass
    await asyncio.sleep(1)  # the last answers
    code = ws.close_code
    if code is not None:
        counts[f"closed_{code}"] += 1
    reader.cancel()
    await ws.close()


async def main(prefix: str, n: int, seconds: float) -> None:
    counts: collections.Counter = collections.Counter()
    go, stop = asyncio.Event(), [0.0]
    tasks, opened = [], []
    for i in range(n):
        opened.append(asyncio.Event())
        tasks.append(
            asyncio.create_task(_station(prefix, f"fl{i:04d}", go, stop, counts, opened[-1]))
        )
        if i % 100 == 99:
            await asyncio.sleep(0.05)
    for event in opened:
        await event.wait()
    print(json.dumps({"event": "connected", **counts}), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    stop[0] = time.monotonic() + seconds
    go.set()
    await asyncio.gather(*tasks)
    print(json.dumps({"event": "done", **counts}), flush=True)


if __name__ == "__main__":
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)  # one socket per station
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), float(sys.argv[3])))
