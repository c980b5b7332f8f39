"""Who may connect: HTTP Basic checked against Django's hashes, cached, and rate-limited.

Hashing is slow on purpose (PBKDF2): checks run on worker threads, at most
OCPPGW_AUTH_CONCURRENCY at once; a verified credential is cached (keyed by an HMAC of the
password, never the password) so reconnect storms and database outages do not hash again.
"""

import asyncio
import datetime
import logging
import time

from asgiref.sync import sync_to_async
from django.db import DatabaseError, InterfaceError, connection

from stations import auth, identity
from stations.limits import FailureCounter
from stations.refusals import Refusal

log = logging.getLogger("ocppgw.gateway")


class Gatekeeper:
    """One per gateway process: the credential cache and the failed-attempt counters."""

    def __init__(self, s):
        self.cache = auth.CredentialCache(s.SECRET_KEY, s.OCPPGW_AUTH_CACHE_TTL_S)
        shared = s.REDIS_URL and s.OCPPGW_AUTH_SHARED_CACHE and s.OCPPGW_AUTH_CACHE_TTL_S > 0
        self.shared = auth.SharedCredentialCache(s.REDIS_URL, self.cache) if shared else None
        self._tasks: set[asyncio.Task] = set()
        self.auth_slots = asyncio.Semaphore(s.OCPPGW_AUTH_CONCURRENCY)
        self.failures = FailureCounter(s.OCPPGW_AUTH_FAILURES_PER_MIN)
        self.address_failures = FailureCounter(s.OCPPGW_AUTH_FAILURES_PER_MIN * 10)
        self.max_pending = s.OCPPGW_MAX_PENDING_HANDSHAKES
        self.pending = 0  # handshakes queued for, or in, an uncached password check
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
        if self.max_pending and self.pending >= self.max_pending:
            # a storm past what the hash threads clear in time is told to come back later at
            # once, rather than waiting tens of seconds in the queue (docs/contract.md §1)
            return None, Refusal("auth_backlog", "too many handshakes waiting: retry later")
        # counted as failed before the check, so parallel guesses at one station cannot all slip
        # under its limit while their checks run; a success takes its attempt back. The
        # per-address count records only real failures: a reconnect storm of many stations from
        # one address (NAT, a restart) must not refuse itself
        self.failures.record((cid_key, address), now)
        self.pending += 1
        self.checks += 1
        try:
            async with self.auth_slots:
                credentials, reason = await sync_to_async(_check, thread_sensitive=False)(
                    cid_key, password
                )
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

    def forget(self, cid_key: str) -> None:
        """The station's credentials changed: no process may use a remembered verification."""
        self.cache.forget(cid_key)
        if self.shared is not None:
            self._spawn(self.shared.forget(cid_key))

    async def close(self) -> None:
        if self.shared is not None:
            await self.shared.close()

    def _spawn(self, job) -> None:
        task = asyncio.get_running_loop().create_task(job)
        self._tasks.add(task)  # held until done: the loop keeps only weak references
        task.add_done_callback(self._tasks.discard)


def _check(cid_key: str, password: str):
    """Load and verify a station's credentials (runs on a worker thread).

    The worker thread keeps its database connection between checks: opening a PostgreSQL
    connection per check was 8 of a check's 11 ms and capped a cold reconnect storm at ~100
    stations/s (bench T9, docs/performance.md). The executor's threads are few and reused, so
    the connections stay bounded; a broken one is closed and the check retried once on a new one.
    """
    try:
        return _check_once(cid_key, password)
    except (DatabaseError, InterfaceError):
        connection.close()
    try:
        return _check_once(cid_key, password)
    except (DatabaseError, InterfaceError):
        connection.close()
        raise


def _check_once(cid_key: str, password: str):
    credentials = auth.load_credentials(cid_key)
    if credentials is None:
        auth.equalize_timing(password)
        return None, Refusal("unknown_station", "unknown charge point id")
    return credentials, auth.verify(password, credentials, datetime.datetime.now(datetime.UTC))
