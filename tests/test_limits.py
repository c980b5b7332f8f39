"""Per-station CALL rate (token bucket) and the failed-login counter."""

from stations.limits import FailureCounter, TokenBucket


def test_bucket_allows_the_burst_then_the_rate():
    bucket = TokenBucket(rate_per_s=2, burst=3, now=0.0)
    assert [bucket.take(0.0) for _ in range(4)] == [True, True, True, False]
    assert bucket.strikes == 1
    assert bucket.take(0.25) is False  # half a token
    assert bucket.take(0.5) is True  # one token after 0.5 s at 2/s
    assert bucket.strikes == 0  # an accepted CALL resets the abuse count
    assert bucket.take(0.5) is False


def test_bucket_never_holds_more_than_the_burst():
    bucket = TokenBucket(rate_per_s=10, burst=2, now=0.0)
    assert [bucket.take(1000.0) for _ in range(3)] == [True, True, False]


def test_strikes_count_refusals_in_a_row():
    bucket = TokenBucket(rate_per_s=1, burst=1, now=0.0)
    bucket.take(0.0)
    for _ in range(5):
        bucket.take(0.0)
    assert bucket.strikes == 5


def test_rate_zero_means_unlimited():
    bucket = TokenBucket(rate_per_s=0, burst=1, now=0.0)
    assert all(bucket.take(0.0) for _ in range(10000))


def test_failures_block_after_the_limit_within_a_minute():
    failures = FailureCounter(limit_per_min=3)
    key = ("cp1", "10.0.0.1")
    for t in (0.0, 1.0, 2.0):
        assert not failures.blocked(key, t)
        failures.record(key, t)
    assert failures.blocked(key, 3.0)
    assert not failures.blocked(("cp1", "10.0.0.2"), 3.0)  # per (cid, address)
    assert not failures.blocked(key, 60.5)  # the first failure left the minute
    failures.clear(key)
    assert not failures.blocked(key, 3.0)


def test_failure_counter_memory_is_bounded():
    failures = FailureCounter(limit_per_min=1, max_keys=10)
    for i in range(100):
        failures.record(("cp", i), 0.0)
    assert len(failures._hits) <= 10
    assert failures.blocked(("cp", 99), 1.0)


def test_station_limit_keeps_fds_for_everything_else_and_caps_a_configured_limit():
    from stations.limits import FD_RESERVE, station_limit

    assert station_limit(0, 1_048_576) == 1_048_576 - FD_RESERVE  # 0: what the fds allow
    assert station_limit(30_000, 1_048_576) == 30_000
    assert station_limit(30_000, 20_000) == 20_000 - FD_RESERVE  # never past EMFILE
    assert station_limit(0, 1024) == 512  # a small soft limit still admits stations
