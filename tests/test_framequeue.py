"""FrameQueue: a WebSocket connection's input queue (ocppgw/edge/framequeue.py)."""

import asyncio

import pytest

from ocppgw.edge import wsprotocol
from ocppgw.edge.framequeue import FrameQueue


class Reader:
    def __init__(self):
        self.left = []

    def frames_taken(self, left: int) -> None:
        self.left.append(left)


async def test_frames_come_out_in_order_and_the_reader_is_told_what_is_left():
    queue, reader = FrameQueue(), Reader()
    queue.reader = reader
    for i in range(3):
        queue.put_nowait(i)
    assert queue.qsize() == 3
    assert [await queue.get() for _ in range(3)] == [0, 1, 2]
    assert reader.left == [2, 1, 0] and queue.empty()


async def test_a_waiting_get_wakes_on_the_next_put():
    queue = FrameQueue()
    getter = asyncio.ensure_future(queue.get())
    await asyncio.sleep(0)
    assert not getter.done()
    queue.put_nowait({"type": "websocket.connect"})
    assert await asyncio.wait_for(getter, 1) == {"type": "websocket.connect"}


async def test_a_cancelled_get_leaves_the_queue_usable():
    queue = FrameQueue()
    getter = asyncio.ensure_future(queue.get())
    await asyncio.sleep(0)
    getter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await getter
    queue.put_nowait("frame")
    assert await asyncio.wait_for(queue.get(), 1) == "frame"


async def test_a_second_reader_is_refused_instead_of_never_waking():
    queue = FrameQueue()
    first = asyncio.ensure_future(queue.get())
    await asyncio.sleep(0)
    with pytest.raises(RuntimeError, match="one reader"):
        await queue.get()
    queue.put_nowait("frame")
    assert await asyncio.wait_for(first, 1) == "frame"


def test_get_nowait_on_an_empty_queue_raises_queue_empty():
    with pytest.raises(asyncio.QueueEmpty):
        FrameQueue().get_nowait()


class Transport:
    def __init__(self):
        self.calls = []

    def pauseProducing(self):
        self.calls.append("pause")

    def resumeProducing(self):
        self.calls.append("resume")


async def test_the_protocol_stops_reading_past_high_frames_and_resumes_at_low():
    # ocppgw/edge/wsprotocol.py: a station sending faster than its consumer takes frames is
    # paused (TCP pushes back) instead of growing the queue without bound
    protocol = wsprotocol.BackpressureWebSocketProtocol()
    protocol.transport, protocol.client_addr = Transport(), ["127.0.0.1", 1]
    queue = protocol.application_queue = FrameQueue()
    queue.reader = protocol
    for _ in range(wsprotocol.HIGH_FRAMES):
        protocol.onMessage(b'[2,"1","Heartbeat",{}]', False)
    assert protocol.transport.calls == ["pause"]
    while queue.qsize() > wsprotocol.LOW_FRAMES + 1:
        await queue.get()
    assert protocol.transport.calls == ["pause"]
    assert (await queue.get())["text"] == '[2,"1","Heartbeat",{}]'
    assert protocol.transport.calls == ["pause", "resume"]
