"""Coordination between gateway processes through Redis: station claims and kicks.

Only these small control messages cross processes; frames never do. Without REDIS_URL the
gateway is one process and everything here is local. A Redis outage degrades only this: frames
keep flowing, and claims resume when Redis is back. Claims made or missed during the outage are
settled then: the process that was cut off announces every station it holds again, and a process
holding a newer connection of one of them answers with its own claim, so newest wins again
(docs/architecture.md, "Several nodes").
"""

import asyncio
import collections
import logging
import time

import orjson

log = logging.getLogger("ocppgw.cluster")

CHANNEL = "ocppgw:control"
RETRY_S = 2.0
POOL_SIZE = 20  # Redis connections per process for claims and kicks (the listener has its own)
PIPELINE_MAX = 500  # control messages per pipeline


def kick_message(cid_key: str, reason: str, node: str) -> bytes:
    """The control message that closes a station's socket in whichever process holds it."""
    return orjson.dumps({"op": "kick", "cid": cid_key, "reason": reason, "node": node})


class Cluster:
    def __init__(
        self, url: str, node: str, on_claim, on_kick, held=lambda: (), tag=None, on_tag=None
    ):
        self.url, self.node = url, node
        # on_claim returns this process's newer (cid_key, conn, seq) of the station, if any
        self.on_claim, self.on_kick = on_claim, on_kick
        self.held = held  # () -> the (cid_key, conn, seq) of every station held here
        # tag(cid_key) -> hex tag of the password verified here, carried by the claim; another
        # process hands it to on_tag(cid_key, tag) (stations/gatekeeper.py)
        self.tag, self.on_tag = tag, on_tag
        self.newest: dict[str, int] = {}  # cid_key -> newest claim seen from other processes
        self._redis = None
        self.healthy = not url
        # claims and kicks waiting for the pipeline in flight: (body, op, future)
        self._queue: collections.deque = collections.deque()
        self._sending = False
        self._sender: asyncio.Task | None = None  # held: the loop keeps only weak references

    @staticmethod
    def next_seq() -> int:
        """Claims are ordered by wall-clock nanoseconds: newest connection wins everywhere."""
        return time.time_ns()

    def superseded(self, cid_key: str, seq: int) -> bool:
        """True when another process holds a newer claim on the station."""
        return self.newest.get(cid_key, 0) > seq

    async def claim(self, cid_key: str, connection_id: str, seq: int) -> None:
        await self._send(self._claim_message(cid_key, connection_id, seq), "claim")

    def _claim_message(self, cid_key: str, connection_id: str, seq: int) -> bytes:
        message = {"op": "claim", "cid": cid_key, "conn": connection_id, "seq": seq}
        tag = self.tag(cid_key) if self.tag is not None else None
        if tag:
            message["v"] = tag
        return orjson.dumps({**message, "node": self.node})

    async def _resync(self) -> None:
        """After an outage: announce every held station again, in one round trip."""
        held = list(self.held())
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for claim in held:
                    pipe.publish(CHANNEL, self._claim_message(*claim))
                await pipe.execute()
        except Exception as exc:
            log.warning("redis unavailable, claims not re-announced yet: %s", exc)
            return
        self.healthy = True
        if held:
            log.info("redis back: re-announced %d station claims", len(held))

    async def kick(self, cid_key: str, reason: str) -> None:
        """Close the station's socket wherever it is held."""
        self.on_kick(cid_key, reason)
        await self._send(kick_message(cid_key, reason, self.node), "kick")

    async def _send(self, body: bytes, op: str) -> None:
        """Publish in order with every other claim and kick of this process.

        A reconnect storm claims thousands of stations: one PUBLISH round trip each cost 0.30 ms
        of CPU per handshake (bench/README.md, T9). Messages queued while a pipeline is in
        flight go together in the next one; one sender at a time keeps claims and kicks in the
        order they were made.
        """
        if self._redis is None:
            return
        done = asyncio.get_running_loop().create_future()
        self._queue.append((body, op, done))
        if not self._sending:
            self._sending = True
            self._sender = asyncio.get_running_loop().create_task(self._send_queued())
        await done

    async def _send_queued(self) -> None:
        try:
            while self._queue:
                n = min(len(self._queue), PIPELINE_MAX)
                batch = [self._queue.popleft() for _ in range(n)]
                try:
                    async with self._redis.pipeline(transaction=False) as pipe:
                        for body, _, _ in batch:
                            pipe.publish(CHANNEL, body)
                        await pipe.execute()
                except Exception as exc:
                    self.healthy = False
                    ops = sorted({op for _, op, _ in batch})
                    log.warning(
                        "redis unavailable, %d %s not shared with other processes: %s",
                        n,
                        "/".join(ops),
                        exc,
                    )
                finally:
                    for _, _, done in batch:
                        if not done.done():
                            done.set_result(None)
        except BaseException:  # cancelled (the loop is stopping): release every waiter
            while self._queue:
                done = self._queue.popleft()[2]
                if not done.done():
                    done.set_result(None)
            raise
        finally:
            self._sending = False

    async def run(self) -> None:
        """Listen for other processes' claims and kicks, reconnecting after Redis outages."""
        if not self.url:
            return
        import redis.asyncio as redis

        # a reconnect storm publishes thousands of claims at once: wait for one of a few
        # connections (redis-py's default pool refuses past 100 with "Too many connections")
        pool = redis.BlockingConnectionPool.from_url(
            self.url,
            max_connections=POOL_SIZE,
            timeout=5,
            socket_connect_timeout=2,
            socket_timeout=2,
            health_check_interval=10,
        )
        self._redis = redis.Redis.from_pool(pool)  # owns the pool: aclose() closes it
        while True:
            try:
                async with self._redis.pubsub() as pubsub:
                    await pubsub.subscribe(CHANNEL)
                    while True:
                        if not self.healthy:  # (re)subscribed, or a publish failed meanwhile
                            await self._resync()
                        message = await pubsub.get_message(
                            ignore_subscribe_messages=True, timeout=1.0
                        )
                        if message:
                            self._handle(message["data"])
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self.healthy:
                    log.warning("lost redis (%s): cross-process claims paused", exc)
                self.healthy = False
                await asyncio.sleep(RETRY_S)

    def _handle(self, data: bytes) -> None:
        try:
            message = orjson.loads(data)
        except orjson.JSONDecodeError:
            return
        if message.get("node") == self.node:
            return
        if message.get("op") == "claim":
            cid_key, seq = message["cid"], message["seq"]
            self.newest[cid_key] = max(seq, self.newest.get(cid_key, 0))
            if self.on_tag is not None and isinstance(message.get("v"), str):
                self.on_tag(cid_key, message["v"])
            newer = self.on_claim(cid_key, message["conn"], seq)
            if newer:  # an older claim (re-announced after an outage): tell its holder
                asyncio.get_running_loop().create_task(self.claim(*newer))
        elif message.get("op") == "kick":
            self.on_kick(message["cid"], message.get("reason", "kicked"))

    async def stop(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()
