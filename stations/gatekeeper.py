"""Who may connect: HTTP Basic checked against Django's hashes, cached, and rate-limited.

Hashing is slow on purpose (PBKDF2): checks run on OCPPGW_AUTH_CONCURRENCY threads of their
own (CheckThreads); a verified credential is cached (keyed by an HMAC of the password, never the
password) so reconnect storms and database outages do not hash again.
"""

import asyncio
import contextlib
import datetime
import logging
import queue
import threading
import time

from django.db import DatabaseError, InterfaceError, connection

from stations import auth, identity
from stations.limits import FailureCounter
from stations.refusals import Refusal

log = logging.getLogger("ocppgw.gateway")

AUTH_BACKLOG = Refusal("auth_backlog", "too many handshakes waiting: retry later")
# a claim's tag of a verified password: the start of the cache's HMAC (auth.CredentialCache).
# It only spares a station the edge's "not now"; the handshake still verifies the password
TAG_BYTES = 8


class Gatekeeper:
    """One per gateway process: the credential cache and the failed-attempt counters."""

    def __init__(self, s):
        self.cache = auth.CredentialCache(s.SECRET_KEY, s.OCPPGW_AUTH_CACHE_TTL_S)
        shared = s.REDIS_URL and s.OCPPGW_AUTH_SHARED_CACHE and s.OCPPGW_AUTH_CACHE_TTL_S > 0
        self.shared = auth.SharedCredentialCache(s.REDIS_URL, self.cache) if shared else None
        self._tasks: set[asyncio.Task] = set()
        self.threads = CheckThreads(s.OCPPGW_AUTH_CONCURRENCY)
        self.failures = FailureCounter(s.OCPPGW_AUTH_FAILURES_PER_MIN)
        self.address_failures = FailureCounter(s.OCPPGW_AUTH_FAILURES_PER_MIN * 10)
        self.max_pending = s.OCPPGW_MAX_PENDING_HANDSHAKES
        self.pending = 0  # handshakes queued for, or in, an uncached password check
        # cid_key -> tag of the password another process of the node verified (its claims carry
        # it): lets the edge tell a remembered station from a new one without asking Redis
        self.elsewhere: dict[str, bytes] = {}
        self.checks = 0  # checks that went to the database and the hash (/metrics misses)

    async def authenticate(self, cid_key: str, header: bytes | None, address: str | None):
        """(Credentials, None) when the station may connect, else (None, reason)."""
        parsed = auth.parse_basic(header)
        if parsed is None:
            return None, Refusal(
                "no_credentials", "missing or malformed Basic Authorization header"
            )
        user, password = parsed
        if identity.key(user) != cid_key:
            return None, Refusal(
                "username_mismatch", "Basic auth username differs from the charge point id"
            )
        cached = self.cache.get(cid_key, password)
        if cached is None and self.shared is not None:
            # verified by another process of the node (a reconnect lands on any of them)
            cached = await self.shared.get(cid_key, password)
            if cached is not None:
                self.cache.put(password, cached)
        if cached is not None:
            return cached, None  # a verified credential is never held up by the failure limit
        now = time.monotonic()
        if self.failures.blocked((cid_key, address), now) or self.address_failures.blocked(
            address, now
        ):
            return None, Refusal("rate_limited", "too many failed attempts: try again in a minute")
        if self.backlogged():
            # a storm past what the hash threads clear in time is told to come back later at
            # once, rather than waiting tens of seconds in the queue (docs/contract.md §1)
            return None, AUTH_BACKLOG
        # counted as failed before the check, so parallel guesses at one station cannot all slip
        # under its limit while their checks run; a success takes its attempt back. The
        # per-address count records only real failures: a reconnect storm of many stations from
        # one address (NAT, a restart) must not refuse itself
        self.failures.record((cid_key, address), now)
        self.pending += 1
        self.checks += 1
        try:
            credentials, reason = await self.threads.check(cid_key, password)
        except (DatabaseError, InterfaceError) as exc:
            self.failures.undo((cid_key, address))  # not the station's failure
            stale = self.cache.get(cid_key, password, stale_ok=True)
            if stale is not None:
                return stale, None  # stale-if-error: the database is away, this was verified
            log.warning("cannot check %s: database unavailable (%s)", cid_key, exc)
            return None, Refusal("database_unavailable", "database unavailable")
        finally:
            self.pending -= 1
        if reason:
            self.address_failures.record(address, now)
            return None, reason
        self.failures.clear((cid_key, address))
        self.cache.put(password, credentials)
        if self.shared is not None:
            self._spawn(self.shared.put(password, credentials))  # the handshake need not wait
        return credentials, None

    def backlogged(self, in_progress: int = 0) -> bool:
        """Whether a handshake needing a password check would be refused auth_backlog now;
        `in_progress`: handshakes under way that may yet need one (the edge's count)."""
        waiting = max(self.pending, in_progress)
        return bool(self.max_pending) and waiting >= self.max_pending

    def remembers(self, cid_key: str, header: bytes | None) -> bool:
        """Whether the header's password is known verified for the station, by this process or
        (from its claims) by another process of the node."""
        parsed = auth.parse_basic(header)
        if parsed is None:
            return False
        digest = self.cache.digest(cid_key, parsed[1])
        if self.cache.knows_digest(digest):
            return True
        return self.elsewhere.get(cid_key) == digest[:TAG_BYTES]

    def tag(self, cid_key: str) -> str | None:
        """Hex tag of a password verified here for the station (a claim carries it)."""
        digest = self.cache.newest_digest(cid_key)
        return digest[:TAG_BYTES].hex() if digest else None

    def verified_elsewhere(self, cid_key: str, tag: str) -> None:
        with contextlib.suppress(ValueError):
            self.elsewhere[cid_key] = bytes.fromhex(tag)[:TAG_BYTES]

    def forget(self, cid_key: str) -> None:
        """The station's credentials changed: no process may use a remembered verification."""
        self.cache.forget(cid_key)
        self.elsewhere.pop(cid_key, None)
        if self.shared is not None:
            self._spawn(self.shared.forget(cid_key))

    async def close(self) -> None:
        await self.threads.stop()
        if self.shared is not None:
            await self.shared.close()

    def _spawn(self, job) -> None:
        task = asyncio.get_running_loop().create_task(job)
        self._tasks.add(task)  # held until done: the loop keeps only weak references
        task.add_done_callback(self._tasks.discard)


class CheckThreads:
    """Password checks on threads of their own, fed through a queue.

    Through the loop's executor behind a semaphore, each check had to come back through the
    event loop before the next one started, so a loop kept busy (a storm's refusals) slowed the
    checks with it: a cold storm of 10,000 on one process got 29 checks/s and 1,373 stations in
    70 s (bench/README.md, T9). Here a free thread takes every check waiting (up to BATCH), loads
    their credentials in one query and hashes each; only the verdicts go back to the loop.
    """

    BATCH = 32

    def __init__(self, count: int):
        self.count = count
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []

    def check(self, cid_key: str, password: str) -> asyncio.Future:
        """A future of (Credentials | None, refusal reason | None); DatabaseError if unreachable."""
        loop = asyncio.get_running_loop()
        if not self._threads:
            for n in range(self.count):
                thread = threading.Thread(target=self._work, name=f"auth-{n}", daemon=True)
                thread.start()
                self._threads.append(thread)
        future = loop.create_future()
        self._queue.put((cid_key, password, future, loop))
        return future

    async def stop(self) -> None:
        """Let the threads finish the checks they hold and close their database connections."""
        threads, self._threads = self._threads, []
        for _ in threads:
            self._queue.put(None)
        for thread in threads:
            await asyncio.to_thread(thread.join, 5)

    def _work(self) -> None:
        try:
            while (item := self._queue.get()) is not None:
                batch = [item]
                while len(batch) < self.BATCH:
                    try:
                        more = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if more is None:
                        self._queue.put(None)  # this thread's stop: after this batch
                        break
                    batch.append(more)
                try:
                    verdicts = _check_many([(key, password) for key, password, _, _ in batch])
                except (DatabaseError, InterfaceError) as exc:
                    verdicts = [exc] * len(batch)
                except Exception as exc:  # a bug must fail these handshakes, not stop the thread
                    log.exception("password check failed")
                    verdicts = [exc] * len(batch)
                for (_, _, future, loop), verdict in zip(batch, verdicts, strict=True):
                    with contextlib.suppress(RuntimeError):  # that loop is closed: nobody waits
                        loop.call_soon_threadsafe(_settle, future, verdict)
        finally:
            connection.close()


def _settle(future: asyncio.Future, verdict) -> None:
    if future.done():  # the handshake was abandoned meanwhile
        return
    if isinstance(verdict, BaseException):
        future.set_exception(verdict)
    else:
        future.set_result(verdict)


def _check_many(items: list[tuple[str, str]]) -> list:
    """Load and verify the stations' credentials (runs on a check thread).

    The thread keeps its database connection between checks: opening a PostgreSQL connection
    per check was 8 of a check's 11 ms and capped a cold reconnect storm at ~100 stations/s
    (bench T9, docs/performance.md). A broken one is closed and the batch retried once on a new
    one.
    """
    try:
        return _check_many_once(items)
    except (DatabaseError, InterfaceError):
        connection.close()
    try:
        return _check_many_once(items)
    except (DatabaseError, InterfaceError):
        connection.close()
        raise


def _check_many_once(items: list[tuple[str, str]]) -> list:
    found = auth.load_many({key for key, _ in items})
    now = datetime.datetime.now(datetime.UTC)
    out = []
    for cid_key, password in items:
        credentials = found.get(cid_key)
        if credentials is None:
            auth.equalize_timing(password)
            out.append((None, Refusal("unknown_station", "unknown charge point id")))
        else:
            out.append((credentials, auth.verify(password, credentials, now)))
    return out
