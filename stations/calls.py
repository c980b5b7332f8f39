"""Outstanding CALLs of one station, both directions, and their timers (docs/contract.md §2).

Pure: no I/O. Time comes from a `Clock` (the event loop in production, `ManualClock` in tests),
so every timeout is exact and testable without sleeping. What a timeout means to the station or
the backend is the conversation's business: the tables only call back.
"""

import collections
from collections.abc import Callable
from typing import Protocol

# answered or expired CALL ids remembered per direction, for [5] frames and late answers: a [5]
# follows the answer it rejects, and a late answer its timeout, so a short window serves both
RECENT_IDS = 64
# backend CALL ids a station was handed last, so a redelivered copy (stations/inbox.py) of one
# it already has queued, in flight or answered is not sent twice
SEEN_IDS = 16
# station CALLs awaiting the backend; bounds memory when the call timeout is off (0)
MAX_STATION_CALLS = 1000


class Timer(Protocol):
    def cancel(self) -> None: ...

    def when(self) -> float: ...


class Clock(Protocol):
    """What asyncio's loop offers: `time()` and `call_later()` returning a cancellable timer."""

    def time(self) -> float: ...

    def call_later(self, delay: float, callback: Callable, *args) -> Timer: ...


class Recent:
    """A small LRU of UniqueId -> action; of size 0, it remembers nothing.

    Its dict is made on the first id: four per station, most never used, and an empty
    OrderedDict cost ~380 bytes of each of 50,000 stations' memory (bench/README.md, T9)."""

    __slots__ = ("_ids", "size")

    def __init__(self, size: int = RECENT_IDS):
        self.size = size
        self._ids: collections.OrderedDict | None = None

    def remember(self, key, value) -> None:
        if self.size:
            ids = self._ids
            if ids is None:
                ids = self._ids = collections.OrderedDict()
            ids[key] = value
            if len(ids) > self.size:
                ids.popitem(last=False)

    def get(self, key, default=None):
        return default if self._ids is None else self._ids.get(key, default)

    def __len__(self) -> int:
        return 0 if self._ids is None else len(self._ids)

    def __contains__(self, key) -> bool:
        return self._ids is not None and key in self._ids

    def __iter__(self):
        return iter(()) if self._ids is None else iter(self._ids)


class StationCall:
    """A station's CALL published to the backend, awaiting its answer."""

    __slots__ = ("action", "pending", "timer", "unique_id")

    def __init__(self, unique_id: str, action: str, pending, timer: Timer | None):
        self.unique_id, self.action, self.pending, self.timer = unique_id, action, pending, timer


class StationCalls:
    """Station -> backend CALLs. Pipelining is allowed: each CALL has its own timer."""

    def __init__(self, clock: Clock, timeout_s: float, on_expired, answered_window: int):
        self.clock, self.timeout_s, self.on_expired = clock, timeout_s, on_expired
        self.pending: dict[str, StationCall] = {}
        self.answered, self.expired = Recent(answered_window), Recent()

    def __contains__(self, unique_id: str) -> bool:
        return unique_id in self.pending

    def __len__(self) -> int:
        return len(self.pending)

    def add(self, unique_id: str, action: str, pending) -> StationCall | None:
        """Track a published CALL; returns the oldest one if it had to be forgotten (over the cap)."""
        timer = None
        if self.timeout_s:
            timer = self.clock.call_later(self.timeout_s, self._expire, unique_id)
        self.pending[unique_id] = StationCall(unique_id, action, pending, timer)
        if len(self.pending) <= MAX_STATION_CALLS:
            return None
        oldest = self.pending.pop(next(iter(self.pending)))
        if oldest.timer:
            oldest.timer.cancel()
        return oldest

    def answer(self, unique_id: str) -> StationCall | None:
        """The CALL this answer is for (no longer outstanding), or None."""
        call = self.pending.pop(unique_id, None)
        if call is not None and call.timer:
            call.timer.cancel()
        return call

    def _expire(self, unique_id: str) -> None:
        call = self.pending.pop(unique_id)
        self.expired.remember(unique_id, call.action)
        self.on_expired(call)

    def clear(self) -> None:
        for call in self.pending.values():
            if call.timer:
                call.timer.cancel()
        self.pending.clear()


class BackendCall:
    """A backend's CALL for the station: queued, then in flight, then answered or expired."""

    __slots__ = (
        "action",
        "correlation",
        "frame",
        "logged",
        "response_topic",
        "secret",
        "timer",
    )

    def __init__(self, frame, response_topic=None, correlation=None, secret=None, logged=None):
        self.frame, self.action = frame, frame.action
        self.response_topic, self.correlation = response_topic, correlation
        self.secret, self.logged = secret, logged  # a password set through OCPP (rotation.py)
        self.timer: Timer | None = None

    @property
    def unique_id(self) -> str:
        return self.frame.id


class BackendCalls:
    """Backend -> station CALLs: one in flight (OCPP-J allows one per direction), the rest queued."""

    def __init__(
        self,
        clock: Clock,
        timeout_s: float,
        queue_len: int,
        on_expired,
        on_free,
        answered_window: int,
    ):
        self.clock, self.timeout_s, self.queue_len = clock, timeout_s, queue_len
        self.on_expired = on_expired  # (call, description): tell the backend
        self.on_free = on_free  # a timer freed the slot or the queue head: send the next
        # a list, not a deque: bounded by queue_len, and an empty deque is ~600 bytes per station
        self.queue: list[BackendCall] = []
        self.inflight: BackendCall | None = None
        self.answered, self.expired = Recent(answered_window), Recent()
        self._seen: collections.deque | None = None  # made on the first CALL: most get none

    def seen(self, unique_id: str) -> bool:
        """Whether one of the last SEEN_IDS CALLs had this UniqueId; remembers it."""
        ids = self._seen
        if ids is None:
            ids = self._seen = collections.deque(maxlen=SEEN_IDS)
        elif unique_id in ids:
            return True
        ids.append(unique_id)
        return False

    def saw(self, unique_id) -> bool:
        """Whether one of the last SEEN_IDS CALLs had this UniqueId."""
        return self._seen is not None and unique_id in self._seen

    def full(self) -> bool:
        return len(self.queue) >= self.queue_len

    def add(self, call: BackendCall) -> None:
        if self.timeout_s:
            call.timer = self.clock.call_later(self.timeout_s, self._timed_out, call)
        self.queue.append(call)

    def next_to_send(self) -> BackendCall | None:
        """The queued CALL to send now (it becomes the one in flight), or None."""
        while self.inflight is None and self.queue:
            call = self.queue[0]
            if call.timer is not None:
                left_s = call.timer.when() - self.clock.time()
                if left_s < min(1.0, self.timeout_s / 10):
                    # too little time left to be answered: never send it (a Reset would still
                    # run while the backend is told "timeout"); it times out now
                    call.timer.cancel()
                    self._drop(call)
                    continue
            self.inflight = self.queue.pop(0)
            return self.inflight
        return None

    def in_flight(self, unique_id: str) -> BackendCall | None:
        """The CALL in flight if `unique_id` answers it."""
        call = self.inflight
        return call if call is not None and call.frame.id == unique_id else None

    def finish(self) -> BackendCall:
        """The CALL in flight was answered: it is done, and remembered for a [5]."""
        call, self.inflight = self.inflight, None
        if call.timer:
            call.timer.cancel()
        self.answered.remember(call.frame.id, call.action)
        return call

    def drain(self) -> list[BackendCall]:
        """Every CALL still in flight or queued, removed with its timer (the socket is gone)."""
        calls = ([self.inflight] if self.inflight else []) + list(self.queue)
        self.inflight = None
        self.queue.clear()
        for call in calls:
            if call.timer:
                call.timer.cancel()
        return calls

    def _timed_out(self, call: BackendCall) -> None:
        self._drop(call)
        self.on_free()

    def _drop(self, call: BackendCall) -> None:
        if call is self.inflight:
            self.inflight = None
            self.expired.remember(call.frame.id, call.action)
            self.on_expired(call, "the station did not answer in time")
        else:
            self.queue.remove(call)  # it ran out while queued: it is never sent
            self.on_expired(call, "the call waited in the queue past its timeout")
