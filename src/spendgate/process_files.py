"""Files owned by one live process, held with an exclusive `flock`, and adopted after it dies.

The ledger spool and the budget outbox both keep per-process files: a process holds its own
under a lock for as long as it lives (the kernel drops the lock when it exits, however it
exits), and a starting process takes over the files whose lock nobody holds any more.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

__all__ = ["hold", "if_orphaned"]


def hold(path: Path, flags: int) -> int:
    """Open `path` and lock it for this process; the lock lasts until the fd is closed."""
    fd = os.open(path, flags, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return fd


@contextlib.contextmanager
def if_orphaned(path: Path, flags: int = os.O_RDONLY) -> Iterator[int | None]:
    """The fd of `path` locked for this process if no live process holds it (closed on
    exit, which releases the lock); None if one does or the file cannot be opened."""
    try:
        fd = os.open(path, flags, 0o600)
    except OSError:
        yield None
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            yield None  # its process is alive
            return
        yield fd
    finally:
        os.close(fd)
