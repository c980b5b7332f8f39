"""Live updates for the portal's browsers: "these stations changed", pushed through Channels.

After each message-log flush (msglog.Writer, never on the frame path) the gateway process that
holds the stations sends one event to the `portal.live` group; channels-redis carries it to the
portal's WebSockets in every process (the in-memory layer serves one process). The browser then
re-reads its JSON view: the database stays the truth, the push only says when to look.
"""

import asyncio
import logging

from channels.layers import get_channel_layer

log = logging.getLogger("ocppgw.live")

GROUP = "portal.live"
MAX_CIDS = 200  # past this many stations in one flush, the event says "everything" (cids None)


def event(cids, presence: bool) -> dict:
    """The group message for one flush: which stations have new rows, and whether any
    station connected, disconnected or was refused."""
    cids = sorted(set(cids))
    return {
        "type": "live.changed",
        "cids": cids if len(cids) <= MAX_CIDS else None,
        "presence": presence,
    }


class LiveFeed:
    """Sends flush events to the portal group: at most one per EVERY_S, one at a time, the
    stations of the flushes in between merged (bounded), so its cost does not grow with
    traffic and a slow or absent Redis never slows the writer."""

    EVERY_S = 1.0  # a browser sees a change within this (plus its re-read)

    def __init__(self, loop, layer=None):
        self.loop = loop
        self.layer = layer or get_channel_layer()
        self.sent = self.failed = 0
        self._cids: set[str] = set()
        self._many = False  # more than MAX_CIDS stations changed since the last event
        self._presence = False
        self._scheduled = False
        self._last = float("-inf")
        self._task: asyncio.Task | None = None

    def flushed(self, rows: list[tuple], presence: list[tuple]) -> None:
        """msglog.Writer's hook: rows are in msglog.COLUMNS order (cid second)."""
        if self.layer is None or not (rows or presence):
            return
        if not self._many:
            self._cids.update(row[1] for row in rows)
            if len(self._cids) > MAX_CIDS:
                self._many, self._cids = True, set()
        self._presence = self._presence or bool(presence)
        if not self._scheduled:
            self._schedule()

    def _schedule(self) -> None:
        self._scheduled = True
        delay = max(0.0, self._last + self.EVERY_S - self.loop.time())
        self.loop.call_later(delay, self._start)

    def _start(self) -> None:
        self._task = self.loop.create_task(self._send())  # kept: a task must be referenced

    async def _send(self) -> None:
        message = event(self._cids, self._presence)
        if self._many:
            message["cids"] = None
        self._cids, self._many, self._presence = set(), False, False
        self._last = self.loop.time()
        try:
            await self.layer.group_send(GROUP, message)
            self.sent += 1
        except Exception as exc:  # Redis away: the browsers fall back to polling
            self.failed += 1
            log.debug("live update not sent: %s", exc)
        finally:
            # flushes during the send wait for the next slot (scheduled from there on)
            self._scheduled = False
            if self._cids or self._many or self._presence:
                self._schedule()
