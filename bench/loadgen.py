"""Load generator: N simulated charge points over WebSocket, in its own process(es).

Modes (see README.md):
  fire   every CP sends Heartbeat CALLs back to back for --duration s; with --shm the total
         in flight (sent, not yet seen by the counter) is held under --max-inflight
  open   open loop at a fixed total --rate msg/s spread round-robin over the CPs; each UniqueId
         is `<worker>-<seq>.<CLOCK_MONOTONIC ns>` so the counter computes latency from it
  rtt    CPs answer every CALL they receive with [3,id,{"status":"Accepted"}] (responder.py
         drives the CALLs)
  storm  on "go" all CPs connect at once (with --warm: first connect and disconnect them all,
         so the gateway has seen every password); reports time until all are connected
  idle   CPs connect and stay idle for --duration s

Control (stdin) and events (stdout), one line each, so run.py can sample the server exactly at
the window's edges:  -> ready  <- connect  -> connected  <- go  -> done  <- close  -> closed.
With --auto the phases run without waiting for commands.
"""

import argparse
import asyncio
import base64
import contextlib
import multiprocessing as mp
import sys
import threading
import time
from collections import Counter

import orjson
from shm import Slots
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

CMD_TIMEOUT = 600.0  # no phase waits longer than this for its command


class Stats:
    """Per-worker counters, merged by the parent."""

    def __init__(self) -> None:
        self.sent = 0
        self.rx = Counter()  # frames received from the gateway, by MessageTypeId
        self.answered = 0
        self.send_errors = 0
        self.closed = Counter()  # close codes of sockets the server closed during the run
        self.lag_max_ms = 0.0


def headers_for(args: argparse.Namespace, cid: str) -> dict:
    """Basic auth `cid:password` when a password is configured ({cid} and {i} are filled in)."""
    if args.password is None:
        return {}
    pw = args.password.format(cid=cid, i=cid[len(args.prefix) :])
    return {"Authorization": "Basic " + base64.b64encode(f"{cid}:{pw}".encode()).decode()}


def cid_of(args: argparse.Namespace, i: int) -> str:
    """Charge point id number i."""
    return f"{args.prefix}{i:05d}"


async def open_one(args: argparse.Namespace, i: int):
    """Open one CP connection; no compression and no client pings (the server pings)."""
    cid = cid_of(args, i)
    return await connect(
        f"{args.url.rstrip('/')}/{cid}",
        subprotocols=[args.subprotocol],
        additional_headers=headers_for(args, cid),
        compression=None,
        ping_interval=None,
        open_timeout=args.open_timeout,
        close_timeout=2,
        max_size=1 << 20,
        # Small user-space write buffer: backlog belongs in the gateway, not in this process.
        write_limit=4096,
    )


async def open_many(args, indices, concurrency: int) -> tuple[list, dict]:
    """Connect every index with at most `concurrency` handshakes in flight."""
    sem = asyncio.Semaphore(concurrency)
    errors: Counter = Counter()
    done_ns: list[int] = []

    async def one(i):
        async with sem:
            try:
                ws = await open_one(args, i)
                done_ns.append(time.monotonic_ns())
                return ws
            except InvalidStatus as exc:
                errors[f"http {exc.response.status_code}"] += 1
            except (OSError, TimeoutError, ConnectionClosed) as exc:
                errors[type(exc).__name__] += 1
            except Exception as exc:  # any other handshake failure is a failure, not a crash
                errors[type(exc).__name__] += 1
            return None

    t0 = time.monotonic_ns()
    result = await asyncio.gather(*(one(i) for i in indices))
    ok = [ws for ws in result if ws is not None]
    info = {
        "connected": len(ok),
        "failed": sum(errors.values()),
        "errors": dict(errors),
        "t_start_ns": t0,
        "t_last_ns": max(done_ns) if done_ns else t0,
    }
    return ok, info


async def reader(ws, st: Stats, answer: bool) -> None:
    """Drain what the gateway sends; in rtt mode answer every CALL."""
    try:
        async for text in ws:
            try:
                frame = orjson.loads(text)
                kind = frame[0]
            except (orjson.JSONDecodeError, IndexError, KeyError, TypeError):
                st.rx["bad"] += 1
                continue
            st.rx[str(kind)] += 1
            if kind == 2 and answer:
                await ws.send(orjson.dumps([3, frame[1], {"status": "Accepted"}]).decode())
                st.answered += 1
    except ConnectionClosed:
        pass
    if ws.close_code is not None and ws.close_code != 1000:
        st.closed[str(ws.close_code)] += 1


async def fire(args, wid: int, socks: list, st: Stats, slots: Slots | None) -> None:
    """Back-to-back Heartbeats from every CP, total in-flight bounded through the slots."""
    loop = asyncio.get_running_loop()
    end = loop.time() + args.duration
    budget = asyncio.Event()
    budget.set()
    cap = args.max_inflight
    tag = args.tag

    def over() -> bool:
        return slots is not None and cap > 0 and slots.sent_total() - slots.v[0] >= cap

    async def watch() -> None:
        # One poller re-opens the budget instead of 1000 tasks polling on timers.
        while loop.time() < end:
            if not budget.is_set() and not over():
                budget.set()
            await asyncio.sleep(0.001)
        budget.set()

    async def one(ws) -> None:
        seq = 0
        try:
            while loop.time() < end:
                for _ in range(args.burst):
                    seq += 1
                    await ws.send(f'[2,"{tag}{seq}","Heartbeat",{{}}]')
                    st.sent += 1
                if slots is not None:
                    slots.v[1 + wid] = st.sent
                if over():
                    budget.clear()
                    await budget.wait()
                else:
                    await asyncio.sleep(0)
        except ConnectionClosed:
            st.send_errors += 1
        if slots is not None:
            slots.v[1 + wid] = st.sent

    watcher = asyncio.create_task(watch())
    await asyncio.gather(*(one(ws) for ws in socks))
    await watcher


async def open_loop(args, wid: int, socks: list, st: Stats) -> None:
    """Fixed-rate schedule; the id carries the send time (taken just before the write)."""
    loop = asyncio.get_running_loop()
    rate = args.rate / args.workers
    start = loop.time()
    end = start + args.duration
    k = 0
    n = len(socks)
    while (now := loop.time()) < end:
        due = int((now - start) * rate)
        st.lag_max_ms = max(st.lag_max_ms, (due - k) / rate * 1000)
        while k < due:
            ws = socks[k % n]
            try:
                uid = f"{args.tag}{wid}-{k}.{time.monotonic_ns()}"
                await ws.send(f'[2,"{uid}","Heartbeat",{{}}]')
                st.sent += 1
            except ConnectionClosed:
                st.send_errors += 1
            k += 1
        await asyncio.sleep(0.0005)


async def close_all(socks: list) -> None:
    """Close every socket cleanly (bounded by each socket's close_timeout)."""
    await asyncio.gather(*(ws.close() for ws in socks), return_exceptions=True)


async def worker(args, wid: int, indices: list, ctl) -> None:
    """One worker's whole life: the phases in the module docstring."""
    st = Stats()
    slots = Slots(args.shm) if args.shm else None
    socks: list = []
    readers: list = []
    await ctl.send({"event": "ready"})
    await ctl.wait("connect")
    concurrency = len(indices) if args.mode == "storm" and not args.warm else args.concurrency
    socks, info = await open_many(args, indices, concurrency)
    if args.mode == "storm" and args.warm:
        await close_all(socks)
        socks = []
    else:
        readers = [asyncio.create_task(reader(ws, st, args.mode == "rtt")) for ws in socks]
    await ctl.send({"event": "connected", **info})
    await ctl.wait("go")
    t0 = time.monotonic_ns()
    extra: dict = {}
    if args.mode == "fire":
        await fire(args, wid, socks, st, slots)
    elif args.mode == "open":
        await open_loop(args, wid, socks, st)
    elif args.mode == "idle":
        await asyncio.sleep(args.duration)
    # rtt: the readers answer from connect to close; responder.py times the window
    elif args.mode == "storm":
        socks, storm = await open_many(args, indices, len(indices))
        readers = [asyncio.create_task(reader(ws, st, False)) for ws in socks]
        extra = {"storm": storm}
    t1 = time.monotonic_ns()
    await ctl.send(
        {"event": "done", "t0_ns": t0, "t1_ns": t1, "sent": st.sent, "send_errors": st.send_errors}
        | {"lag_max_ms": round(st.lag_max_ms, 2)}
        | extra
    )
    await ctl.wait("close")
    await close_all(socks)
    for r in readers:
        r.cancel()
    await asyncio.gather(*readers, return_exceptions=True)
    await ctl.send(
        {"event": "closed", "sent": st.sent, "rx": dict(st.rx), "answered": st.answered}
        | {"closed_by_server": dict(st.closed)}
    )


class StdioCtl:
    """Commands from stdin, events to stdout (single-process case and the parent)."""

    def __init__(self, auto: bool) -> None:
        self.auto = auto
        self.lines: asyncio.Queue = asyncio.Queue()
        if not auto:
            loop = asyncio.get_running_loop()

            def pump() -> None:
                for line in sys.stdin:
                    loop.call_soon_threadsafe(self.lines.put_nowait, line.strip())
                loop.call_soon_threadsafe(self.lines.put_nowait, "eof")

            threading.Thread(target=pump, daemon=True).start()

    async def send(self, obj: dict) -> None:
        sys.stdout.write(orjson.dumps(obj).decode() + "\n")
        sys.stdout.flush()

    async def wait(self, word: str) -> None:
        if self.auto:
            return
        # EOF or timeout falls through: the phase runs and the process ends by itself.
        with contextlib.suppress(TimeoutError):
            while (await asyncio.wait_for(self.lines.get(), CMD_TIMEOUT)) not in (word, "eof"):
                pass


class PipeCtl:
    """Commands and events over a multiprocessing pipe (child workers)."""

    def __init__(self, conn) -> None:
        self.conn = conn

    async def send(self, obj: dict) -> None:
        self.conn.send(obj)

    async def wait(self, word: str) -> None:
        loop = asyncio.get_running_loop()
        ok = await loop.run_in_executor(None, self.conn.poll, CMD_TIMEOUT)
        if ok:
            self.conn.recv()


def child_main(args, wid: int, indices: list, conn) -> None:
    """Entry point of a forked worker process."""
    asyncio.run(worker(args, wid, indices, PipeCtl(conn)))


def merge(events: list[dict]) -> dict:
    """Merge the same event from every worker: sum counts, widest window, merged dicts."""
    out: dict = {"event": events[0].get("event"), "workers": len(events)}
    for ev in events:
        for k, v in ev.items():
            if k in ("event",):
                continue
            if k.endswith("_ns"):
                pick = min if "start" in k or k == "t0_ns" else max
                out[k] = pick(out[k], v) if k in out else v
            elif k == "lag_max_ms":
                out[k] = max(out.get(k, 0), v)
            elif isinstance(v, dict):
                out[k] = merge([out[k], v]) if k in out else dict(v)
                out[k].pop("event", None)
                out[k].pop("workers", None)
            elif isinstance(v, int | float):
                out[k] = out.get(k, 0) + v
    return out


def fork_workers(args) -> tuple[list, list]:
    """Fork the workers before any event loop exists; CPs are dealt round-robin."""
    ctx = mp.get_context("fork")
    pipes, procs = [], []
    for wid in range(args.workers):
        mine, theirs = ctx.Pipe()
        indices = list(range(wid, args.n, args.workers))
        p = ctx.Process(target=child_main, args=(args, wid, indices, theirs), daemon=True)
        p.start()
        pipes.append(mine)
        procs.append(p)
    return pipes, procs


async def parent(args, pipes: list, procs: list) -> None:
    """Fan commands out to the forked workers and merge their events."""
    ctl = StdioCtl(args.auto)
    loop = asyncio.get_running_loop()

    async def gather_event() -> dict:
        evs = []
        for c in pipes:
            ok = await loop.run_in_executor(None, c.poll, CMD_TIMEOUT)
            evs.append(c.recv() if ok else {"event": "timeout"})
        return merge(evs)

    for word in (None, "connect", "go", "close"):
        if word is not None:
            await ctl.wait(word)
            for c in pipes:
                c.send(word)
        await ctl.send(await gather_event())
    for p in procs:
        p.join(10)


def main() -> None:
    """Parse arguments and run one worker in-process or several forked ones."""
    ap = argparse.ArgumentParser(description="OCPP-J load generator for the ocppgw benchmark")
    ap.add_argument("mode", choices=["fire", "open", "rtt", "storm", "idle"])
    ap.add_argument("--url", default="ws://127.0.0.1:9000/ocpp/")
    ap.add_argument("-n", type=int, default=None, help="CPs (default 1000, storm 2000)")
    ap.add_argument("--prefix", default="CP")
    ap.add_argument("--password", default=None, help="Basic auth password; {i} = CP number")
    ap.add_argument("--subprotocol", default="ocpp1.6")
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--rate", type=float, default=1000.0, help="open: total msg/s")
    ap.add_argument("--workers", type=int, default=1, help="forked worker processes")
    ap.add_argument("--concurrency", type=int, default=100, help="handshakes in flight (setup)")
    ap.add_argument("--open-timeout", type=float, default=30.0)
    ap.add_argument("--burst", type=int, default=8, help="fire: frames per CP per turn")
    ap.add_argument("--shm", help="slots file shared with counter.py (fire's in-flight cap)")
    ap.add_argument("--max-inflight", type=int, default=20000, help="fire: 0 = unbounded")
    ap.add_argument("--tag", default="", help="UniqueId prefix, so a counter can tell runs apart")
    ap.add_argument("--warm", action="store_true", help="storm: connect+disconnect all first")
    ap.add_argument("--auto", action="store_true", help="run the phases without commands")
    args = ap.parse_args()
    if args.n is None:
        args.n = 2000 if args.mode == "storm" else 1000
    if args.workers <= 1:

        async def single() -> None:
            await worker(args, 0, list(range(args.n)), StdioCtl(args.auto))

        asyncio.run(single())
    else:
        pipes, procs = fork_workers(args)
        asyncio.run(parent(args, pipes, procs))


if __name__ == "__main__":
    main()
