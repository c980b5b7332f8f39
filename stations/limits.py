"""Per-station token bucket for CALL rates (docs/contract.md §1). Pure: the caller passes the clock."""


class TokenBucket:
    """`rate_per_s` tokens a second up to `burst`; rate 0 means unlimited."""

    __slots__ = ("burst", "last", "rate", "refused", "strikes", "tokens", "window_start")

    WINDOW_S = 10.0

    def __init__(self, rate_per_s: float, burst: int, now: float):
        self.rate, self.burst = rate_per_s, burst
        self.tokens, self.last = float(burst), now
        self.strikes = 0  # refusals since the last accepted CALL: the consumer slows down
        self.refused, self.window_start = 0, now  # refusals in the current 10 s window

    def take(self, now: float) -> bool:
        """Spend one token; False when the station is over its rate."""
        if not self.rate:
            return True
        self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
        self.last = now
        if self.tokens >= 1:
            self.tokens -= 1
            self.strikes = 0
            return True
        self.strikes += 1
        if now - self.window_start > self.WINDOW_S:
            self.refused, self.window_start = 0, now
        self.refused += 1
        return False

    def abusive(self) -> bool:
        """Persistent abuse: refused more CALLs within 10 s than a burst holds."""
        return self.refused > self.burst


class FailureCounter:
    """Failed logins per key in a sliding minute, so brute force cannot run unchecked."""

    def __init__(self, limit_per_min: int, max_keys: int = 100000):
        self.limit = limit_per_min
        self.max_keys = max_keys
        self._hits: dict[object, list[float]] = {}

    def blocked(self, key, now: float) -> bool:
        hits = self._hits.get(key)
        if not hits:
            return False
        hits[:] = [t for t in hits if now - t < 60]
        return len(hits) >= self.limit

    def record(self, key, now: float) -> None:
        if len(self._hits) >= self.max_keys:
            # bounded memory under a flood of distinct keys: forget the oldest half
            for old in list(self._hits)[: self.max_keys // 2]:
                del self._hits[old]
        self._hits.setdefault(key, []).append(now)

    def clear(self, key) -> None:
        self._hits.pop(key, None)

    def undo(self, key) -> None:
        """Take back the newest attempt recorded for `key` (it succeeded)."""
        hits = self._hits.get(key)
        if hits:
            hits.pop()


# sockets a gateway process keeps beyond its station sockets (handshakes in progress count as
# stations, stations/admission.py): refused sockets still closing, HTTP requests, the broker,
# database and Redis connections, log files, the admin port
FD_RESERVE = 2048


def station_limit(configured: int, nofile: int) -> int:
    """Stations one process may hold: `configured` (0 = no limit of its own), never more than
    its fd limit leaves after FD_RESERVE. Past the fd limit Twisted cannot accept(): stations
    would wait in the listen backlog until they time out, a hang instead of a retryable refusal
    (docs/contract.md §1). Half the fd limit at least, for a small limit (1024 is a common soft
    limit; rungateway raises the soft limit to the hard one at start)."""
    by_fds = max(nofile - FD_RESERVE, nofile // 2)
    return min(configured, by_fds) if configured else by_fds
