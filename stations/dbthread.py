"""The gateway's own database work (log writes, config polls, pruning) on one long-lived thread.

`database_sync_to_async` closes the connection after every call (CONN_MAX_AGE is 0 because
request threads come and go), so a poll each second opened a new PostgreSQL connection each
second. This thread keeps its connection and replaces it only after an error."""

import asyncio
from concurrent.futures import Future, ThreadPoolExecutor

from django.db import connection


class DbThread:
    """Runs sync callables on one thread whose Django connection stays open between calls."""

    def __init__(self) -> None:
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="ocppgw-db")
        self._closed: Future | None = None

    async def run(self, fn, *args):
        """`fn(*args)` on the database thread; its exception, if any, is raised here."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, _call, fn, args)

    def close(self) -> asyncio.Future:
        """Close the thread's connection and let the thread end; await the result to wait for it.

        A connection left open keeps a PostgreSQL session (and a test database) alive."""
        if self._closed is None:
            self._closed = self._executor.submit(_close)
            self._executor.shutdown(wait=False)
        return asyncio.wrap_future(self._closed)


def _call(fn, args):
    try:
        return fn(*args)
    finally:
        # Django flags any database error it saw, even one the callable caught; the server may
        # have restarted or dropped us, so test the connection and let the next call reconnect
        if connection.errors_occurred:
            connection.errors_occurred = False
            if connection.connection is not None and not connection.is_usable():
                connection.close()


def _close() -> None:
    connection.close()  # resolved on this thread: `connection` is a per-thread proxy
