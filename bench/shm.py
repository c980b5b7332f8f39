"""A few int64 slots in a file under /dev/shm shared by counter and load generator.

Slot 0 is the number of upstream messages the counter has seen; slots 1.. are what each load
generator worker has sent. The difference is what is in flight somewhere (sockets, gateway,
broker): `fire` keeps it bounded so the run measures a saturated gateway, not the kernel's
socket buffers, and the backlog left when the window closes drains in about a second.
"""

import mmap
import os

SLOTS = 64


class Slots:
    """int64 slots backed by a shared file; writes are plain stores (one writer per slot)."""

    def __init__(self, path: str, create: bool = False) -> None:
        if create:
            with open(path, "wb") as f:
                f.write(b"\0" * 8 * SLOTS)
        self._fd = os.open(path, os.O_RDWR)
        self._mm = mmap.mmap(self._fd, 8 * SLOTS)
        self.v = memoryview(self._mm).cast("q")

    def sent_total(self) -> int:
        """Sum of every worker's sent count."""
        return sum(self.v[1:SLOTS])

    def close(self) -> None:
        """Release the mapping."""
        self.v.release()
        self._mm.close()
        os.close(self._fd)
