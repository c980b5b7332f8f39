"""Load generator of the T9 scale run (bench/scale.py): tens of thousands of stations.

Differences from loadgen.py: clients are spread over several loopback source addresses
(127.0.0.2, 127.0.0.3, ...; each gives ~28k ephemeral ports towards one server port), the fd
limit is raised, the stations are dealt over several forked worker processes, handshakes refused
with HTTP 503 or closed with 1013 (the retryable refusals) are retried with back-off, and every
worker reports its own CPU (getrusage) per phase so that a saturated generator is visible.

Commands on stdin, one JSON event per stdout line:
  -> ready
  <- connect          -> progress {connected} about every 0.5 s ... -> connected
  <- traffic S        every station sends a Heartbeat every 1/--per-station-rate s (open loop,
                      UniqueId `<tag><worker>-<seq>.<monotonic ns>`)  -> done
  <- storm            every socket is dropped (no close handshake) and all reconnect at once
                      -> progress ... -> stormed
  <- close            -> closed
Station 0 answers every CALL it gets with [3,id,{"status":"Accepted"}] (the round-trip probe).
"""

import argparse
import asyncio
import base64
import errno
import multiprocessing as mp
import os
import random
import resource
import socket
import sys
import threading
import time
from collections import Counter

import orjson
import wsclient

# clients per loopback source address, of its ~28,000 ephemeral ports (32768-60999): connect()
# searches past every port of the address already in use towards the server, so fewer per address
# keep that search short (real stations have an address each)
PORTS_PER_ADDRESS = 5000
RETRYABLE_HTTP = {503}
RETRYABLE_CLOSE = {1013}


def source_address(i: int, per_address: int = PORTS_PER_ADDRESS, first: int = 2) -> str:
    """Loopback source address of client i: 127.0.0.<first + i // per_address>."""
    k = first + i // per_address
    if k > 254:
        raise ValueError(f"client {i}: more than {255 - first} source addresses needed")
    return f"127.0.0.{k}"


def addresses_needed(n: int, per_address: int = PORTS_PER_ADDRESS) -> int:
    """How many source addresses n clients use."""
    return max(1, -(-n // per_address))


def deal(n: int, workers: int) -> list[list[int]]:
    """Station indices of each worker (round-robin, so every worker spans every address)."""
    return [list(range(w, n, workers)) for w in range(workers)]


def raise_nofile(want: int) -> int:
    """Raise RLIMIT_NOFILE (soft, and hard when allowed: root) to at least want; the new soft."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= want:
        return soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, max(hard, want)))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def backoff(attempt: int, base: float = 0.5, cap: float = 8.0) -> float:
    """Exponential back-off with full jitter before retry number `attempt` (1, 2, ...)."""
    return random.uniform(0, min(cap, base * 2 ** (attempt - 1)))


IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)


async def source_socket(source: str, host: str, port: int) -> socket.socket:
    """A TCP socket from `source` connected to host:port. IP_BIND_ADDRESS_NO_PORT defers the
    port choice to connect(), per 4-tuple: a plain bind((source, 0)) searches the whole port
    range for a port unused by any socket, and slowed handshakes to ~130/s past 20,000 clients."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((source, 0))
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, (host, port))
    except BaseException:
        sock.close()
        raise
    return sock


def process_cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of process `pid` (Linux /proc), None if it cannot be read."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_now() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


class Worker:
    def __init__(self, args, wid: int, indices: list[int], progress) -> None:
        self.args, self.wid, self.indices, self.progress = args, wid, indices, progress
        self.socks: dict[int, object] = {}
        self.errors: Counter = Counter()  # failed attempts that are not retryable refusals
        self.refused: Counter = Counter()  # retryable refusals (503 / 1013)
        self.closed: Counter = Counter()
        self.sent = 0
        self.send_errors = 0
        self.answered = 0
        # a storm reconnects from the next block of source addresses: the dropped connections'
        # ports stay in TIME_WAIT on this side (it closed first) for a minute, and connecting
        # from the same addresses searched past all of them (a 30,000 storm waited ~8 s on it)
        self.epoch = 0
        hostport, _, path = args.url.split("://", 1)[1].partition("/")
        self.path = "/" + path.rstrip("/")
        self.host, port = hostport.rsplit(":", 1)
        self.port = int(port)

    def headers(self, cid: str) -> dict:
        pw = self.args.password.format(cid=cid)
        return {
            "Sec-WebSocket-Protocol": "ocpp1.6",
            "Authorization": "Basic " + base64.b64encode(f"{cid}:{pw}".encode()).decode(),
        }

    async def open_one(self, i: int, deadline: float):
        """Connect station i, retrying with back-off until it is in or the deadline passes."""
        cid = f"{self.args.prefix}{i:05d}"
        attempt = 0
        loop = asyncio.get_running_loop()
        while True:
            attempt += 1
            try:
                per = self.args.per_address
                first = 2 + self.epoch * addresses_needed(self.args.n, per)
                sock = await asyncio.wait_for(
                    source_socket(source_address(i, per, first), self.host, self.port),
                    self.args.open_timeout,
                )
                ws = await asyncio.wait_for(
                    wsclient.open_station(
                        sock,
                        f"{self.host}:{self.port}",
                        f"{self.path}/{cid}",
                        self.headers(cid),
                        self.answer if i == 0 else None,
                    ),
                    self.args.open_timeout,
                )
                return ws
            except wsclient.Refused as exc:
                code = exc.status
                (self.refused if code in RETRYABLE_HTTP else self.errors)[f"http {code}"] += 1
            except wsclient.ClosedInHandshake as exc:
                code = exc.code
                (self.refused if code in RETRYABLE_CLOSE else self.errors)[f"close {code}"] += 1
            except Exception as exc:  # reset, timeout, refused: a failure (then retried)
                err = getattr(exc, "errno", None)
                name = errno.errorcode.get(err, "") if isinstance(err, int) else ""
                self.errors[f"{type(exc).__name__} {name}".strip()] += 1
            if loop.time() > deadline:
                self.errors["gave up"] += 1
                return None
            await asyncio.sleep(backoff(attempt))

    def answer(self, ws, text: str) -> None:
        """Station 0: answer every CALL (the backend round-trip probe)."""
        try:
            frame = orjson.loads(text)
        except ValueError:
            return
        if isinstance(frame, list) and len(frame) > 1 and frame[0] == 2:
            if ws.send(orjson.dumps([3, frame[1], {"status": "Accepted"}]).decode()):
                self.answered += 1

    async def connect_all(self, concurrency: int, limit_s: float | None = None) -> dict:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (limit_s or self.args.connect_limit)
        sem = asyncio.Semaphore(concurrency)
        done_t: list[float] = []

        async def one(i):
            async with sem:
                ws = await self.open_one(i, deadline)
            if ws is not None:
                self.socks[i] = ws
                done_t.append(time.monotonic())
                self.progress[self.wid] = len(self.socks)

        t0, c0 = time.monotonic(), cpu_now()
        await asyncio.gather(*(one(i) for i in self.indices if i not in self.socks))
        t1 = time.monotonic()
        return {
            "connected": len(self.socks),
            "t_start": t0,
            "t_last": max(done_t) if done_t else t0,
            # the first handshake back: a storm's gap before anything completes
            "t_first": min(done_t) if done_t else t0,
            "cpu_s": cpu_now() - c0,
            "wall_s": t1 - t0,
        }

    async def traffic(self, duration: float, tag: str) -> dict:
        """Open loop: this worker's share of n * per-station-rate msg/s, round-robin."""
        loop = asyncio.get_running_loop()
        socks = list(self.socks.values())
        rate = len(socks) * self.args.per_station_rate
        t0, c0 = loop.time(), cpu_now()
        end = t0 + duration
        k, lag = 0, 0.0
        while (now := loop.time()) < end and socks:
            due = int((now - t0) * rate)
            lag = max(lag, (due - k) / rate)
            while k < due:
                ws = socks[k % len(socks)]
                if ws.send(f'[2,"{tag}{self.wid}-{k}.{time.monotonic_ns()}","Heartbeat",{{}}]'):
                    self.sent += 1
                else:
                    self.send_errors += 1
                k += 1
            await asyncio.sleep(0.005)
        wall = loop.time() - t0
        return {
            "sent": self.sent,
            "send_errors": self.send_errors,
            "lag_max_s": round(lag, 3),
            "cpu_s": cpu_now() - c0,
            "wall_s": wall,
        }

    def count_closed(self) -> None:
        for ws in self.socks.values():
            if ws.close_code is not None and ws.close_code not in (1000,):
                self.closed[str(ws.close_code)] += 1

    async def storm(self, limit_s: float | None = None) -> dict:
        """Drop every socket (no close handshake), then all reconnect at once, giving up on the
        ones not back within `limit_s` (else --connect-limit)."""
        self.count_closed()
        for ws in self.socks.values():
            ws.transport.abort()
        self.socks = {}
        self.epoch += 1
        self.progress[self.wid] = 0
        await asyncio.sleep(0.5)
        self.errors.clear()
        self.refused.clear()
        out = await self.connect_all(len(self.indices), limit_s)
        return out | {"errors": dict(self.errors), "refused": dict(self.refused)}

    async def run(self, conn) -> None:
        loop = asyncio.get_running_loop()

        async def recv():
            await loop.run_in_executor(None, conn.poll, None)
            return conn.recv()

        conn.send({"event": "ready"})
        while True:
            cmd = (await recv()).split()
            if cmd[0] == "connect":
                out = await self.connect_all(self.args.concurrency)
                conn.send(
                    {
                        "event": "connected",
                        **out,
                        "errors": dict(self.errors),
                        "refused": dict(self.refused),
                    }
                )
            elif cmd[0] == "traffic":
                conn.send({"event": "done", **await self.traffic(float(cmd[1]), cmd[2])})
            elif cmd[0] == "storm":
                limit_s = float(cmd[1]) if len(cmd) > 1 else None
                conn.send({"event": "stormed", **await self.storm(limit_s)})
            elif cmd[0] == "close":
                self.count_closed()
                await asyncio.gather(
                    *(ws.close() for ws in self.socks.values()), return_exceptions=True
                )
                conn.send(
                    {
                        "event": "closed",
                        "closed_by_server": dict(self.closed),
                        "answered": self.answered,
                    }
                )
                return


def child(args, wid, indices, conn, progress) -> None:
    asyncio.run(Worker(args, wid, indices, progress).run(conn))


def merge(evs: list[dict]) -> dict:
    """One event from every worker's: counts summed, times widest, CPU per worker kept."""
    out: dict = {"event": evs[0]["event"], "workers": len(evs)}
    for ev in evs:
        for k, v in ev.items():
            if k == "event":
                continue
            if k in ("t_start", "t_first"):
                out[k] = min(out.get(k, v), v)
            elif k in ("t_last", "wall_s", "lag_max_s"):
                out[k] = max(out.get(k, v), v)
            elif k == "cpu_s":
                out.setdefault("cpu_s_per_worker", []).append(round(v, 2))
            elif isinstance(v, dict):
                d = out.setdefault(k, {})
                for kk, vv in v.items():
                    d[kk] = d.get(kk, 0) + vv
            elif isinstance(v, int | float):
                out[k] = out.get(k, 0) + v
    if out.get("wall_s"):
        out["cpu_pct_max_worker"] = round(max(out["cpu_s_per_worker"]) / out["wall_s"] * 100, 1)
    return out


def emit(obj: dict) -> None:
    sys.stdout.write(orjson.dumps(obj).decode() + "\n")
    sys.stdout.flush()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--url", required=True)
    ap.add_argument("-n", type=int, default=50000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--prefix", default="CP")
    ap.add_argument("--password", required=True, help="{cid} is filled in")
    ap.add_argument("--per-station-rate", type=float, default=0.05, help="msg/s per station")
    ap.add_argument("--per-address", type=int, default=PORTS_PER_ADDRESS)
    ap.add_argument("--concurrency", type=int, default=200, help="handshakes per worker")
    ap.add_argument("--open-timeout", type=float, default=60.0)
    ap.add_argument("--connect-limit", type=float, default=600.0, help="give up after, s")
    args = ap.parse_args()
    nofile = raise_nofile(args.n // args.workers + 4096)
    ctx = mp.get_context("fork")
    progress = ctx.Array("q", args.workers, lock=False)
    pipes, workers = [], []
    for wid, idx in enumerate(deal(args.n, args.workers)):
        mine, theirs = ctx.Pipe()
        worker = ctx.Process(target=child, args=(args, wid, idx, theirs, progress), daemon=True)
        worker.start()
        pipes.append(mine)
        workers.append(worker.pid)

    def gather(busy: bool) -> dict:
        evs = [None] * len(pipes)
        last = 0.0
        while any(e is None for e in evs):
            for k, c in enumerate(pipes):
                if evs[k] is None and c.poll(0.05):
                    evs[k] = c.recv()
            if busy and time.monotonic() - last >= 0.5:
                last = time.monotonic()
                # each worker's CPU seconds so far (read from outside: a worker busy with a
                # storm's burst could not report it itself); the bench takes the differences
                cpu = [process_cpu_s(pid) for pid in workers]
                emit({"event": "progress", "t": last, "connected": sum(progress), "cpu": cpu})
        return merge(evs)

    first = gather(False) | {
        "nofile": nofile,
        "addresses": addresses_needed(args.n, args.per_address),
    }
    emit(first)
    lines: list[str] = []
    ev = threading.Event()

    def pump():
        for line in sys.stdin:
            lines.append(line.strip())
            ev.set()
        lines.append("close")
        ev.set()

    threading.Thread(target=pump, daemon=True).start()
    while True:
        ev.wait()
        ev.clear()
        while lines:
            cmd = lines.pop(0)
            if not cmd:
                continue
            for c in pipes:
                c.send(cmd)
            emit(gather(cmd.split()[0] in ("connect", "storm")))
            if cmd == "close":
                return


if __name__ == "__main__":
    main()
