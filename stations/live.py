"""Live updates for the portal's browsers: "these stations changed", pushed through Channels.

After each message-log flush (msglog.Writer, never on the frame path) the gateway process that
holds the stations sends one event to the `portal.live` group; channels-redis carries it to the
portal's WebSockets in every process (the in-memory layer serves one process). The browser then
re-reads its JSON view: the database stays the truth, the push only says when to look.
"""

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
    """Sends flush events to the portal group, one at a time: a slow or absent Redis merges
    events instead of piling up tasks, and never slows the writer."""

    def __init__(self, loop, layer=None):
        self.loop = loop
        self.layer = layer or get_channel_layer()
        self.sent = self.failed = 0
        self._busy = False
        self._next: dict | None = None

    def flushed(self, rows: list[tuple], presence: list[tuple]) -> None:
        """msglog.Writer's hook: rows are in msglog.COLUMNS order (cid second)."""
        if self.layer is None or not (rows or presence):
            return
        new = event((row[1] for row in rows), bool(presence))
        if self._busy:
            self._next = _merge(self._next, new) if self._next else new
            return
        self._busy = True
        self.loop.create_task(self._send(new))

    async def _send(self, message: dict) -> None:
        while message is not None:
            try:
                await self.layer.group_send(GROUP, message)
                self.sent += 1
            except Exception as exc:  # Redis away: the browsers fall back to polling
                self.failed += 1
                log.debug("live update not sent: %s", exc)
            message, self._next = self._next, None
        self._busy = False


def _merge(a: dict, b: dict) -> dict:
    if a["cids"] is None or b["cids"] is None:
        return {**b, "cids": None, "presence": a["presence"] or b["presence"]}
    return event(a["cids"] + b["cids"], a["presence"] or b["presence"])
