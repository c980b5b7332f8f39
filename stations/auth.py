"""Station authentication: Basic header parsing (pure), the verified-password cache, the check.

A verified password is remembered keyed by an HMAC of (cid, secret), never the secret itself, until
its TTL passes or the station's credentials change. While the database is unreachable, a
remembered verification stays valid (stale-if-error), so stations keep connecting.
"""

import asyncio
import base64
import binascii
import datetime
import hashlib
import hmac
import time
from dataclasses import dataclass

import orjson

from stations.refusals import Refusal

STATION_HASHER = "pbkdf2_sha256_station"


def parse_basic(value: bytes | None) -> tuple[str, str] | None:
    """(user, password) from an Authorization header value; split on the first ':' only."""
    if not value:
        return None
    scheme, _, token = value.strip().partition(b" ")
    if scheme.lower() != b"basic" or not token:
        return None
    try:
        decoded = base64.b64decode(token.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, sep, password = decoded.partition(":")
    if not sep:
        return None
    return user, password


@dataclass(frozen=True, slots=True)
class Credentials:
    """What the gateway needs of a station at connect time, as plain values."""

    station_id: int
    cid: str
    cid_key: str
    enabled: bool
    user_active: bool
    security_profile: int
    password: str  # the Django hash, never the secret
    previous_password: str
    previous_until: datetime.datetime | None
    validation_policy: str = ""  # "" = the gateway's OCPPGW_VALIDATION_FAILURE


@dataclass(slots=True)
class _Entry:
    credentials: Credentials
    expires: float


class CredentialCache:
    """Remembered verifications: HMAC(cid_key, secret) -> Credentials, with a TTL."""

    def __init__(self, secret_key: str, ttl_s: float, max_entries: int = 200000):
        self._key = hashlib.sha256(b"ocppgw-auth-cache" + secret_key.encode()).digest()
        self.ttl = ttl_s
        self.max_entries = max_entries
        self._entries: dict[bytes, _Entry] = {}
        self._by_cid: dict[str, set[bytes]] = {}
        self.hits = self.misses = 0

    def digest(self, cid_key: str, password: str) -> bytes:
        """The key a verification of (cid_key, password) is remembered under."""
        message = cid_key.encode() + b"\0" + password.encode()
        return hmac.new(self._key, message, hashlib.sha256).digest()

    def get(self, cid_key: str, password: str, *, stale_ok: bool = False) -> Credentials | None:
        entry = self._entries.get(self.digest(cid_key, password))
        if entry and (stale_ok or entry.expires > time.monotonic()):
            self.hits += 1
            return entry.credentials
        self.misses += 1
        return None

    def knows_digest(self, digest: bytes) -> bool:
        """Whether a valid verification is remembered under `digest`, without counting a hit or
        a miss."""
        entry = self._entries.get(digest)
        return entry is not None and entry.expires > time.monotonic()

    def newest_digest(self, cid_key: str) -> bytes | None:
        """The digest of the station's most recently remembered verification, if any."""
        digests = self._by_cid.get(cid_key)
        if not digests:
            return None
        return max(digests, key=lambda d: self._entries[d].expires if d in self._entries else 0)

    def put(self, password: str, credentials: Credentials) -> None:
        if self.ttl <= 0:
            return
        if len(self._entries) >= self.max_entries:
            self._entries.clear()
            self._by_cid.clear()
        digest = self.digest(credentials.cid_key, password)
        self._entries[digest] = _Entry(credentials, time.monotonic() + self.ttl)
        self._by_cid.setdefault(credentials.cid_key, set()).add(digest)

    def forget(self, cid_key: str) -> None:
        """Drop every remembered verification of a station (its credentials changed)."""
        for digest in self._by_cid.pop(cid_key, ()):
            self._entries.pop(digest, None)


def verify(password: str, credentials: Credentials, now: datetime.datetime) -> str | None:
    """Check a password against the station's hashes; None when accepted, else the reason."""
    from django.contrib.auth.hashers import check_password  # read-only: never re-hashes or saves

    if not credentials.enabled:
        return Refusal("station_disabled", "station disabled")
    if not credentials.user_active:
        return Refusal("user_inactive", "station user inactive")
    if credentials.password and check_password(password, credentials.password):
        return None
    if (
        credentials.previous_password
        and credentials.previous_until
        and credentials.previous_until > now
        and check_password(password, credentials.previous_password)
    ):
        return None
    return Refusal("wrong_password", "wrong password")


_DUMMY_HASH: list[str] = []


def equalize_timing(password: str) -> None:
    """Spend the cost of one station-hash check, so an unknown cid is not faster to refuse."""
    from django.contrib.auth.hashers import check_password, make_password

    if not _DUMMY_HASH:
        _DUMMY_HASH.append(make_password("not-a-station-password", hasher=STATION_HASHER))
    check_password(password, _DUMMY_HASH[0])


def load_many(cid_keys) -> dict[str, Credentials]:
    """The credentials of the stations that exist among `cid_keys`, in one query (sync: run it
    off the event loop)."""
    from stations.models import Station

    rows = Station.objects.filter(cid_key__in=list(cid_keys)).values_list(
        "id",
        "cid",
        "cid_key",
        "enabled",
        "user__is_active",
        "security_profile",
        "user__password",
        "previous_password",
        "previous_password_until",
        "validation_policy",
    )
    return {
        key: Credentials(
            sid, cid, key, enabled, bool(active), profile, password or "", previous, until, policy
        )
        for sid, cid, key, enabled, active, profile, password, previous, until, policy in rows
    }


SHARED_PREFIX = (
    "ocppgw:auth:"  # + hex digest -> a verified credential; + "cid:" + cid_key -> its digests
)


def shared_value(credentials: Credentials) -> bytes:
    """What another process needs of a verified station, without its password hashes."""
    c = credentials
    until = c.previous_until.isoformat() if c.previous_until else None
    return orjson.dumps(
        [c.station_id, c.cid, c.cid_key, c.enabled, c.user_active, c.security_profile, until,
         c.validation_policy]
    )  # fmt: skip


def from_shared(value: bytes) -> Credentials:
    sid, cid, cid_key, enabled, active, profile, until, policy = orjson.loads(value)
    until = datetime.datetime.fromisoformat(until) if until else None
    return Credentials(sid, cid, cid_key, enabled, active, profile, "", "", until, policy)


class SharedCredentialCache:
    """Verified passwords remembered in Redis for every gateway process of a node.

    With `rungateway --processes N` a reconnecting station lands on any process, most often not
    the one that verified it: with only a per-process cache a remembered reconnect storm hashed
    almost as much as a cold one (bench/README.md, T9). The key is the local cache's HMAC of
    (cid, password) under a key derived from SECRET_KEY, so Redis never holds the password nor
    anything that tests a guess without SECRET_KEY; the value holds no password hash. Entries
    expire with the local TTL and are deleted when the station's credentials change (every
    process's configuration poll calls forget(), stations/housekeeping.py). Redis away: a miss,
    never a failure.
    """

    # A storm's lookups and writes go in batches: one MGET for every lookup waiting when the loop
    # gets to it, one pipeline of writes every PUT_EVERY_S. One round trip per handshake through
    # a small pool timed out under a storm's loop lag (bench/profile_storm.py: 52 of ~1,000
    # possible shared hits) and cost redis-py's per-command overhead each time.
    TIMEOUT_S = 2.0
    PUT_EVERY_S = 0.05
    # after a failure Redis is left alone this long: handshakes do not each wait out a timeout
    # while it is away (they hash, as without the shared cache)
    RETRY_S = 5.0

    def __init__(self, url: str, cache: CredentialCache):
        self.url, self.cache = url, cache
        self._redis = None
        self._wanted: dict[str, list] = {}  # key -> futures waiting for the next MGET
        self._puts: list[tuple[str, bytes, str]] = []
        self._put_task = self._fetch_task = None
        self._down_until = 0.0  # loop time before which Redis is not asked
        self.hits = self.misses = self.errors = 0

    def _client(self):
        if self._redis is None:
            import redis.asyncio as redis

            pool = redis.BlockingConnectionPool.from_url(
                self.url,
                max_connections=4,
                timeout=self.TIMEOUT_S,
                socket_connect_timeout=self.TIMEOUT_S,
                socket_timeout=self.TIMEOUT_S,
            )
            self._redis = redis.Redis.from_pool(pool)
        return self._redis

    def _key(self, cid_key: str, password: str) -> str:
        return SHARED_PREFIX + self.cache.digest(cid_key, password).hex()

    async def get(self, cid_key: str, password: str) -> Credentials | None:
        loop = asyncio.get_running_loop()
        if loop.time() < self._down_until:
            self.misses += 1
            return None
        future = loop.create_future()
        if not self._wanted:
            # runs after the lookups queued in this loop turn; held: the loop keeps weak refs
            self._fetch_task = loop.create_task(self._fetch())
        self._wanted.setdefault(self._key(cid_key, password), []).append(future)
        value = await future
        if value is None:
            self.misses += 1
            return None
        credentials = from_shared(value)
        if credentials.cid_key != cid_key:
            return None
        self.hits += 1
        return credentials

    async def _fetch(self) -> None:
        wanted, self._wanted = self._wanted, {}
        keys = list(wanted)
        try:
            values = await self._client().mget(keys)
        except Exception:  # Redis away or slow: hash as without it
            self._failed()
            values = [None] * len(keys)
        for key, value in zip(keys, values, strict=True):
            for future in wanted[key]:
                if not future.done():
                    future.set_result(value)

    async def put(self, password: str, credentials: Credentials) -> None:
        if int(self.cache.ttl) <= 0 or asyncio.get_running_loop().time() < self._down_until:
            return
        key = self._key(credentials.cid_key, password)
        self._puts.append((key, shared_value(credentials), credentials.cid_key))
        if self._put_task is None:
            self._put_task = asyncio.get_running_loop().create_task(self._write())

    async def _write(self) -> None:
        await asyncio.sleep(self.PUT_EVERY_S)
        puts, self._puts, self._put_task = self._puts, [], None
        ttl = int(self.cache.ttl)
        try:
            async with self._client().pipeline(transaction=False) as pipe:
                for key, value, cid_key in puts:
                    index = SHARED_PREFIX + "cid:" + cid_key
                    pipe.set(key, value, ex=ttl)
                    pipe.sadd(index, key)
                    pipe.expire(index, ttl)
                await pipe.execute()
        except Exception:
            self._failed()

    def _failed(self) -> None:
        self.errors += 1
        self._down_until = asyncio.get_running_loop().time() + self.RETRY_S

    async def flush(self) -> None:
        """Wait for the writes queued so far (tests, shutdown)."""
        if self._put_task is not None:
            await self._put_task

    async def forget(self, cid_key: str) -> None:
        """Delete every verification of the station remembered by any process."""
        index = SHARED_PREFIX + "cid:" + cid_key
        try:
            client = self._client()
            keys = await client.smembers(index)
            await client.delete(index, *keys)
        except Exception:
            self.errors += 1

    async def close(self) -> None:
        await self.flush()
        if self._redis is not None:
            await self._redis.aclose()
