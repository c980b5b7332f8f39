"""A clock for stations.calls that moves only when a test says so: timers need no real sleeps."""

from collections.abc import Callable


class ManualClock:
    """A clock that moves only when told: timers fire inside `advance()` ."""

    def __init__(self, now: float = 0.0):
        self.now = now
        self._timers: list[_ManualTimer] = []

    def time(self) -> float:
        return self.now

    def call_later(self, delay: float, callback: Callable, *args) -> "_ManualTimer":
        timer = _ManualTimer(self.now + delay, callback, args)
        self._timers.append(timer)
        return timer

    def advance(self, seconds: float) -> None:
        """Move time on, firing due timers in order of their deadline."""
        target = self.now + seconds
        while True:
            due = [t for t in self._timers if not t.cancelled and t.deadline <= target]
            if not due:
                break
            timer = min(due, key=lambda t: t.deadline)
            self._timers.remove(timer)
            self.now = max(self.now, timer.deadline)
            timer.callback(*timer.args)
        self._timers = [t for t in self._timers if not t.cancelled]
        self.now = target


class _ManualTimer:
    __slots__ = ("args", "callback", "cancelled", "deadline")

    def __init__(self, deadline, callback, args):
        self.deadline, self.callback, self.args = deadline, callback, args
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True

    def when(self) -> float:
        return self.deadline
