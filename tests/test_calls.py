"""The outstanding-call tables and their timers, on a manual clock (no sleeping)."""

from stations import calls
from stations.calls import BackendCall, BackendCalls, StationCalls
from stations.frames import CALL, Frame
from tests.clock import ManualClock


def _call(unique_id: str) -> BackendCall:
    return BackendCall(Frame(CALL, unique_id, action="Reset", payload={}))


def test_station_calls_expire_each_on_its_own_timer():
    clock, expired = ManualClock(), []
    table = StationCalls(clock, 30, expired.append, answered_window=0)
    table.add("a", "Heartbeat", None)
    clock.advance(10)
    table.add("b", "Heartbeat", None)
    clock.advance(20)
    assert [c.unique_id for c in expired] == ["a"] and "b" in table
    assert table.expired.get("a") == "Heartbeat"
    assert table.answer("b").action == "Heartbeat"
    clock.advance(60)
    assert [c.unique_id for c in expired] == ["a"]  # answered: its timer was cancelled


def test_station_calls_forget_the_oldest_past_the_cap(monkeypatch):
    monkeypatch.setattr(calls, "MAX_STATION_CALLS", 2)
    table = StationCalls(ManualClock(), 0, None, answered_window=0)
    assert table.add("a", "X", None) is None and table.add("b", "X", None) is None
    assert table.add("c", "X", None).unique_id == "a"
    assert list(table.pending) == ["b", "c"]


def test_backend_calls_one_in_flight_then_the_next():
    clock, expired, freed = ManualClock(), [], []
    table = BackendCalls(
        clock, 30, 10, lambda c, why: expired.append(c.unique_id), lambda: freed.append(1), 0
    )
    for uid in ("a", "b"):
        table.add(_call(uid))
    assert table.next_to_send().unique_id == "a"
    assert table.next_to_send() is None  # one outstanding CALL per direction
    assert table.in_flight("b") is None and table.finish().unique_id == "a"
    assert table.next_to_send().unique_id == "b"
    clock.advance(31)
    assert expired == ["b"] and freed == [1] and table.expired.get("b") == "Reset"


def test_a_queued_call_with_too_little_time_left_expires_instead_of_being_sent():
    clock, expired = ManualClock(), []
    table = BackendCalls(clock, 30, 10, lambda c, why: expired.append((c.unique_id, why)), list, 0)
    table.add(_call("a"))
    table.next_to_send()
    clock.advance(0.5)
    table.add(_call("b"))
    clock.advance(29.6)  # a times out; b has 0.9 s left of 30
    assert table.next_to_send() is None
    assert expired == [
        ("a", "the station did not answer in time"),
        ("b", "the call waited in the queue past its timeout"),
    ]


def test_drain_returns_everything_and_stops_the_timers():
    clock, expired = ManualClock(), []
    table = BackendCalls(clock, 30, 10, lambda c, why: expired.append(c), list, 0)
    for uid in ("a", "b", "c"):
        table.add(_call(uid))
    table.next_to_send()
    assert [c.unique_id for c in table.drain()] == ["a", "b", "c"]
    clock.advance(60)
    assert expired == [] and table.inflight is None and not table.queue


def test_recent_of_size_zero_remembers_nothing():
    recent = calls.Recent(0)
    recent.remember("a", "X")
    assert recent.get("a") is None
    small = calls.Recent(2)
    for key in "abc":
        small.remember(key, key)
    assert list(small) == ["b", "c"]


def test_backend_calls_remember_the_last_ids_seen():
    table = BackendCalls(ManualClock(), 30, 10, None, None, 0)
    assert not table.saw("a") and not table.seen("a") and table.seen("a") and table.saw("a")
    for i in range(calls.SEEN_IDS):
        table.seen(f"x{i}")
    assert not table.seen("a")  # forgotten: the window is small and bounded
