"""Station authentication: Basic header parsing, the verified-password cache, the hash check."""

import asyncio
import base64
import datetime

import pytest
from django.contrib.auth.hashers import make_password

from stations import auth
from stations.auth import CredentialCache, Credentials
from tests.conftest import PASSWORD, new_station

NOW = datetime.datetime(2025, 1, 1, tzinfo=datetime.UTC)


def b64(text: str | bytes) -> bytes:
    raw = text.encode() if isinstance(text, str) else text
    return base64.b64encode(raw)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (b"Basic " + b64("CP1:secret"), ("CP1", "secret")),
        (b"basic " + b64("CP1:secret"), ("CP1", "secret")),  # the scheme is case-insensitive
        (b"BASIC " + b64("CP1:secret"), ("CP1", "secret")),
        (b"  Basic   " + b64("CP1:secret") + b"  ", ("CP1", "secret")),
        (b"Basic " + b64("CP1:a:b:c"), ("CP1", "a:b:c")),  # split on the first ':' only
        (b"Basic " + b64("CP1:"), ("CP1", "")),
        (b"Basic " + b64(":secret"), ("", "secret")),
        (b"Basic " + b64("CP1:p\xc3\xa4ss".encode("latin-1")), ("CP1", "p\xe4ss")),
    ],
)
def test_basic_header_is_parsed(header, expected):
    assert auth.parse_basic(header) == expected


@pytest.mark.parametrize(
    "header",
    [
        None,
        b"",
        b"Basic",
        b"Basic ",
        b"Bearer " + b64("CP1:secret"),  # not Basic
        b"Digest username=CP1",
        b"Basic " + b64("no colon at all"),
        b"Basic !!!not-base64!!!",
        b"Basic " + b64("CP1:secret")[:-2],  # broken padding
        b"Basic " + b64(b"CP1:\xff\xfe"),  # not UTF-8
        b64("CP1:secret"),  # no scheme
    ],
)
def test_malformed_or_foreign_headers_are_refused(header):
    assert auth.parse_basic(header) is None


def credentials(**overrides) -> Credentials:
    values = dict(
        station_id=1,
        cid="CP1",
        cid_key="cp1",
        enabled=True,
        user_active=True,
        security_profile=1,
        password=make_password("right-password-0001", hasher=auth.STATION_HASHER),
        previous_password="",
        previous_until=None,
    )
    values.update(overrides)
    return Credentials(**values)


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


@pytest.fixture
def clock(monkeypatch):
    fake = Clock()
    monkeypatch.setattr(auth.time, "monotonic", fake)
    return fake


def test_cache_remembers_a_verified_password_until_the_ttl(clock):
    cache = CredentialCache("secret-key", ttl_s=60)
    creds = credentials()
    cache.put("right-password-0001", creds)
    assert cache.get("cp1", "right-password-0001") is creds
    assert cache.get("cp1", "wrong-password-0001") is None
    assert cache.get("cp2", "right-password-0001") is None  # keyed by station too
    clock.now += 59
    assert cache.get("cp1", "right-password-0001") is creds
    clock.now += 2
    assert cache.get("cp1", "right-password-0001") is None
    # stale-if-error: while the database is away an expired verification still counts
    assert cache.get("cp1", "right-password-0001", stale_ok=True) is creds


def test_cache_forgets_a_station_whose_credentials_changed(clock):
    cache = CredentialCache("secret-key", ttl_s=60)
    cache.put("right-password-0001", credentials())
    cache.put("other-password-0001", credentials())
    cache.put("p-of-cp2-000000001", credentials(cid="CP2", cid_key="cp2"))
    cache.forget("cp1")
    assert cache.get("cp1", "right-password-0001", stale_ok=True) is None
    assert cache.get("cp1", "other-password-0001", stale_ok=True) is None
    assert cache.get("cp2", "p-of-cp2-000000001") is not None
    cache.forget("never-seen")  # harmless


def test_cache_never_holds_the_secret_and_depends_on_the_secret_key(clock):
    cache = CredentialCache("secret-key", ttl_s=60)
    cache.put("right-password-0001", credentials())
    assert all(b"right-password" not in digest for digest in cache._entries)
    other = CredentialCache("another-key", ttl_s=60)
    assert cache.digest("cp1", "x") != other.digest("cp1", "x")


def test_cache_with_zero_ttl_remembers_nothing(clock):
    cache = CredentialCache("secret-key", ttl_s=0)
    cache.put("right-password-0001", credentials())
    assert cache.get("cp1", "right-password-0001", stale_ok=True) is None


def test_cache_is_bounded(clock):
    cache = CredentialCache("secret-key", ttl_s=60, max_entries=3)
    for i in range(5):
        cache.put(f"password-{i:012d}", credentials(cid_key=f"cp{i}"))
    assert len(cache._entries) <= 3
    assert cache.get("cp4", f"password-{4:012d}") is not None


@pytest.mark.parametrize(
    ("overrides", "password", "reason"),
    [
        ({}, "right-password-0001", None),
        ({}, "wrong-password-0001", "wrong password"),
        ({}, "", "wrong password"),
        ({"enabled": False}, "right-password-0001", "station disabled"),
        ({"user_active": False}, "right-password-0001", "station user inactive"),
        ({"password": ""}, "right-password-0001", "wrong password"),  # no usable hash
        ({"password": "!unusable"}, "right-password-0001", "wrong password"),
    ],
)
def test_verify(overrides, password, reason):
    assert auth.verify(password, credentials(**overrides), NOW) == reason


def test_previous_password_works_only_during_the_grace_period():
    rotated = credentials(
        password=make_password("new-password-000001", hasher=auth.STATION_HASHER),
        previous_password=make_password("old-password-000001", hasher=auth.STATION_HASHER),
        previous_until=NOW + datetime.timedelta(minutes=5),
    )
    assert auth.verify("new-password-000001", rotated, NOW) is None
    assert auth.verify("old-password-000001", rotated, NOW) is None
    later = NOW + datetime.timedelta(minutes=6)
    assert auth.verify("old-password-000001", rotated, later) == "wrong password"
    assert auth.verify("new-password-000001", rotated, later) is None


def test_station_passwords_use_the_cheaper_station_hasher():
    encoded = make_password("right-password-0001", hasher=auth.STATION_HASHER)
    assert encoded.startswith("pbkdf2_sha256_station$5000$")


@pytest.mark.django_db
def test_load_many_reads_plain_values_by_case_insensitive_key():
    station = new_station("CaseCP1", profile=2)
    creds = auth.load_many(["casecp1"])["casecp1"]
    assert creds.station_id == station.id
    assert (creds.cid, creds.cid_key, creds.security_profile) == ("CaseCP1", "casecp1", 2)
    assert creds.enabled and creds.user_active
    assert auth.verify(PASSWORD, creds, NOW) is None
    # callers pass the key, never the raw cid; unknown keys are left out
    assert auth.load_many(["CaseCP1", "nobody"]) == {}


@pytest.mark.django_db
def test_load_many_of_a_disabled_station_with_an_inactive_user():
    new_station("OffCP1", enabled=False, user_active=False)
    creds = auth.load_many(["offcp1"])["offcp1"]
    assert not creds.enabled and not creds.user_active
    assert auth.verify(PASSWORD, creds, NOW) == "station disabled"


# --- the check threads ----------------------------------------------------------------------------
@pytest.mark.django_db(transaction=True)
async def test_check_threads_keep_checking_while_the_loop_is_busy():
    import time

    from channels.db import database_sync_to_async

    from stations.gatekeeper import CheckThreads

    ok = [await database_sync_to_async(new_station)() for _ in range(40)]
    threads = CheckThreads(2)
    try:
        checks = [threads.check(st.cid_key, PASSWORD) for st in ok]
        checks.append(threads.check(ok[0].cid_key, "wrong-password-123"))
        checks.append(threads.check("nobody-here", PASSWORD))
        # the loop does something else for a while: the threads need nothing from it to go on
        # from one check to the next (through a semaphore they needed a loop turn each)
        time.sleep(2.0)  # noqa: ASYNC251 -- the point: the loop is blocked meanwhile
        assert all(check.done() is False for check in checks)  # verdicts land on the loop
        # all 42 were checked meanwhile (~0.2 s of work): only their verdicts are left to take
        verdicts = await asyncio.wait_for(asyncio.gather(*checks), 0.1)
    finally:
        await threads.stop()
    assert [(c.station_id, reason) for c, reason in verdicts[:40]] == [(st.id, None) for st in ok]
    assert verdicts[40][1] == "wrong password" and verdicts[40][1].label == "wrong_password"
    assert verdicts[41] == (None, "unknown charge point id")
    assert verdicts[41][1].label == "unknown_station"


# --- the cache shared by a node's processes (real Redis on 127.0.0.1) ------------------------------
REDIS_URL = "redis://127.0.0.1:6379/0"


def shared_pair(secret_key: str):
    """Two processes' views: each its own local cache, one Redis."""
    return [
        auth.SharedCredentialCache(REDIS_URL, CredentialCache(secret_key, ttl_s=60))
        for _ in range(2)
    ]


async def test_shared_cache_lets_another_process_skip_the_hash_until_credentials_change():
    import uuid

    import redis.asyncio as redis

    secret = uuid.uuid4().hex  # this test's keys only
    cid_key = f"shared-{secret[:8]}"
    a, b = shared_pair(secret)
    until = datetime.datetime(2030, 1, 1, tzinfo=datetime.UTC)
    creds = credentials(cid="Shared", cid_key=cid_key, previous_until=until)
    try:
        assert await b.get(cid_key, "right-password-0001") is None
        await a.put("right-password-0001", creds)
        await a.flush()
        seen = await b.get(cid_key, "right-password-0001")
        # everything admission needs, and neither password hash
        assert seen == auth.Credentials(
            creds.station_id, "Shared", cid_key, True, True, 1, "", "", until, ""
        )
        assert await b.get(cid_key, "wrong-password-0001") is None
        # a storm's lookups share one round trip, each gets its own answer
        together = await asyncio.gather(
            b.get(cid_key, "right-password-0001"),
            b.get(cid_key, "wrong-password-0001"),
            b.get(cid_key, "right-password-0001"),
        )
        assert together == [seen, None, seen]
        assert await b.get(f"{cid_key}-other", "right-password-0001") is None
        # Redis holds neither the password nor a hash of it under a key anyone could compute
        client = redis.from_url(REDIS_URL)
        keys = [k async for k in client.scan_iter(f"{auth.SHARED_PREFIX}*")]
        mine = [k for k in keys if await client.sismember(f"{auth.SHARED_PREFIX}cid:{cid_key}", k)]
        assert len(mine) == 1
        assert 0 < await client.ttl(mine[0]) <= 60
        stored = await client.get(mine[0])
        assert b"right-password" not in stored and b"right-password" not in mine[0]
        assert b"pbkdf2" not in stored
        other_key = shared_pair("another-secret-key")[0]
        assert other_key._key(cid_key, "right-password-0001").encode() != mine[0]
        # the credentials change (any process's poll): no process remembers it any more
        await b.forget(cid_key)
        assert await a.get(cid_key, "right-password-0001") is None
        assert not await client.exists(f"{auth.SHARED_PREFIX}cid:{cid_key}")
        await client.aclose()
    finally:
        await a.close()
        await b.close()


async def test_shared_cache_without_redis_is_a_miss_not_a_failure():
    gone = auth.SharedCredentialCache(
        "redis://127.0.0.1:1/0", CredentialCache("secret-key", ttl_s=60)
    )
    await gone.put("right-password-0001", credentials())
    await gone.flush()
    assert gone.errors == 1
    # then left alone for a while: a handshake does not wait for Redis again
    assert await gone.get("cp1", "right-password-0001") is None
    assert gone.errors == 1 and gone.misses == 1
    gone._down_until = 0.0  # the pause is over
    assert await gone.get("cp1", "right-password-0001") is None
    assert gone.errors == 2
    await gone.close()
