"""`Checkpointer`: WAL checkpoints for a file ledger, in a thread of their own.

Why: in WAL mode every commit appends to `<ledger>-wal`; SQLite's default is for the
committing connection to copy the WAL back into the database ("checkpoint") once it passes
1000 pages, and with `synchronous=NORMAL` that checkpoint is where the fsyncs happen. On a
disk with slow fsync that is most of the time a write takes. The ledger's writer connection
therefore runs with `wal_autocheckpoint=0`, and this thread checkpoints instead, on its own
connection: `PRAGMA wal_checkpoint(PASSIVE)` never blocks the writer (nor readers), and
sqlite3 releases the GIL while it runs.

Durability is unchanged: WAL + `synchronous=NORMAL`, as before — a committed batch survives
a process crash; a power loss can lose the batches since the last checkpoint (before, since
the last automatic one).

The WAL must be bounded too: the writer only rewinds it to its start when a checkpoint has
copied *every* frame, which under continuous writes a passive checkpoint rarely manages
(more frames arrive while it copies), and a long WAL slows every page lookup. So once the
WAL holds more than `restart_frames` frames, the passive checkpoint (which did the bulk of
the copying) is followed by a RESTART one: it holds off the writer only while it copies the
few frames left and syncs, and gives up after `restart_wait` seconds rather than stall
ingest behind a long-running report (it is retried at the next interval).
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from typing import Any

__all__ = ["Checkpointer"]

log = logging.getLogger(__package__)


class Checkpointer:
    """Checkpoints one WAL-mode database every `interval` seconds, in the background."""

    restart_frames = 4096
    """WAL frames past which a passive checkpoint is followed by a RESTART one."""
    restart_wait = 0.05
    """Seconds a RESTART checkpoint waits for readers before giving up (busy)."""
    truncate_bytes = 64 * 2**20
    """A WAL bigger than this is truncated instead (gives back a burst's disk)."""

    def __init__(self, path: str, *, interval: float = 0.5) -> None:
        self.path = path
        self.interval = interval
        self._conn = sqlite3.connect(
            path, isolation_level=None, check_same_thread=False, timeout=self.restart_wait
        )
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._stop = threading.Event()
        self.checkpoints = 0
        self.restarts = 0
        self.restarts_busy = 0
        self.errors = 0
        self._thread = threading.Thread(
            target=self._run, name="spendgate-ledger-checkpoint", daemon=True
        )
        self._thread.start()

    def checkpoint(self, mode: str = "PASSIVE") -> tuple[int, int, int]:
        """(busy, WAL frames, frames checkpointed) — see `PRAGMA wal_checkpoint`."""
        row = self._conn.execute(f"PRAGMA wal_checkpoint({mode})").fetchone()
        self.checkpoints += 1
        return int(row[0]), int(row[1]), int(row[2])

    def _wal_bytes(self) -> int:
        try:
            return os.stat(self.path + "-wal").st_size
        except OSError:
            return 0

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                _, frames, _ = self.checkpoint()
                if frames >= self.restart_frames:
                    # TRUNCATE also gives back the disk a burst made the WAL take.
                    big = self._wal_bytes() > self.truncate_bytes
                    self.restarts += 1
                    busy, _, _ = self.checkpoint("TRUNCATE" if big else "RESTART")
                    self.restarts_busy += busy
            except sqlite3.Error:
                self.errors += 1
                log.warning("ledger checkpoint failed; retrying", exc_info=True)

    def close(self) -> None:
        """Stop the thread, then checkpoint what is left."""
        self._stop.set()
        self._thread.join()
        try:
            self.checkpoint()
        except sqlite3.Error:
            log.warning("final ledger checkpoint failed", exc_info=True)
        self._conn.close()

    def stats(self) -> dict[str, Any]:
        return {
            "checkpoints": self.checkpoints,
            "restarts": self.restarts,
            "restarts_busy": self.restarts_busy,
            "errors": self.errors,
            "wal_bytes": self._wal_bytes(),
        }
