"""A WebSocket connection's input queue: what Daphne puts frames in and the consumer takes them from.

Daphne gives every connection an asyncio.Queue: four deques and an Event, ~2.9 KiB of each
station's memory while it sits idle (tracemalloc, 10,000 stations; bench/README.md, T9). A
connection has one reader (its consumer) and holds at most a few frames (ocppgw/edge/wsprotocol.py
stops reading past HIGH_FRAMES), so a list and one waiting future do the same job.
"""

import asyncio


class FrameQueue:
    """Daphne's per-connection queue (put_nowait, get, qsize) for one reader at a time; tells
    `reader.frames_taken(left)` after each get so the protocol can resume reading."""

    __slots__ = ("_items", "_waiter", "reader")

    def __init__(self):
        self._items: list = []  # few at a time: pop(0) costs nothing, an empty list ~56 bytes
        self._waiter: asyncio.Future | None = None
        self.reader = None  # the protocol, told of takes; dropped when its socket is gone

    def qsize(self) -> int:
        return len(self._items)

    def empty(self) -> bool:
        return not self._items

    def put_nowait(self, item) -> None:
        self._items.append(item)
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    async def get(self):
        """The next message, waiting for one."""
        while not self._items:
            if self._waiter is not None:
                raise RuntimeError("FrameQueue has one reader at a time")
            waiter = self._waiter = asyncio.get_running_loop().create_future()
            try:
                await waiter
            finally:
                if self._waiter is waiter:  # cancelled: nobody is waiting any more
                    self._waiter = None
        return self.get_nowait()

    def get_nowait(self):
        if not self._items:
            raise asyncio.QueueEmpty
        item = self._items.pop(0)
        if self.reader is not None:
            self.reader.frames_taken(len(self._items))
        return item
