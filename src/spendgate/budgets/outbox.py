"""The settlement outbox: settlements the counter store could not take (Redis away), kept
in a local SQLite file until they are applied, so no reservation is left to its lease and no
spend is forgotten — across the outage and across a restart of this process.

Settlements are idempotent in the store (by lease, tombstone or once-marker), so an entry
may be applied twice (its first answer was lost) without counting twice. Each process owns
its own file (`<pid>-<start ns>.outbox.db`, held with `flock`); a starting process adopts
the files of processes that are gone.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import orjson

from spendgate.budgets.store import Counter
from spendgate.process_files import hold, if_orphaned

__all__ = ["Outbox", "Pending", "default_outbox_dir"]

log = logging.getLogger("spendgate.budgets.outbox")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS pending (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  lease TEXT NOT NULL,
  received_at REAL NOT NULL,
  once INTEGER NOT NULL,
  counters TEXT NOT NULL,
  actual TEXT NOT NULL,
  queued_at REAL NOT NULL
)
"""


@dataclass(slots=True)
class Pending:
    """One settlement waiting for the store."""

    lease: str
    received_at: float
    once: bool
    counters: list[Counter]
    actual: list[int]
    id: int = 0


def default_outbox_dir(ledger_url: str) -> Path | None:
    """Beside the ledger's spool (see `spendgate.ledger.spool.default_spool_dir`)."""
    from spendgate.ledger.spool import default_spool_dir

    spool = default_spool_dir(ledger_url)
    return None if spool is None else spool.with_name(spool.name + "-budget-outbox")


class Outbox:
    """A FIFO of pending settlements: in a SQLite file under `directory`, or in memory."""

    def __init__(self, directory: str | os.PathLike[str] | None) -> None:
        self.dir = Path(directory) if directory is not None else None
        self._mem: list[Pending] = []
        self._next = 0
        self._db: sqlite3.Connection | None = None
        self._lock_fd: int | None = None
        if self.dir is not None:
            self.dir.mkdir(parents=True, exist_ok=True)
            path = self.dir / f"{os.getpid()}-{time.time_ns()}.outbox.db"
            self._lock_fd = hold(path.with_suffix(".lock"), os.O_CREAT | os.O_RDWR)
            self.path = path
            self._db = _open(path)
            self._adopt()

    def __len__(self) -> int:
        if self._db is None:
            return len(self._mem)
        return int(self._db.execute("SELECT count(*) FROM pending").fetchone()[0])

    def put(self, item: Pending) -> None:
        if self._db is None:
            self._next += 1
            item.id = self._next
            self._mem.append(item)
            return
        with self._db:
            cur = self._db.execute(
                "INSERT INTO pending (lease, received_at, once, counters, actual, queued_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                _row(item),
            )
        item.id = int(cur.lastrowid or 0)

    def peek(self, limit: int = 100) -> list[Pending]:
        if self._db is None:
            return list(self._mem[:limit])
        rows = self._db.execute(
            "SELECT id, lease, received_at, once, counters, actual FROM pending "
            "ORDER BY id LIMIT ?",
            (limit,),
        ).fetchall()
        return [_pending(r) for r in rows]

    def done(self, item: Pending) -> None:
        if self._db is None:
            self._mem = [p for p in self._mem if p.id != item.id]
            return
        with self._db:
            self._db.execute("DELETE FROM pending WHERE id = ?", (item.id,))

    def close(self) -> None:
        if self._db is not None:
            empty = len(self) == 0
            self._db.close()
            self._db = None
            if empty:
                for suffix in ("", "-wal", "-shm"):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(str(self.path) + suffix)
                with contextlib.suppress(FileNotFoundError):
                    self.path.with_suffix(".lock").unlink()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def _adopt(self) -> None:
        """Move the entries of dead processes' outboxes into ours."""
        assert self.dir is not None and self._db is not None
        for path in sorted(self.dir.glob("*.outbox.db")):
            if path == self.path:
                continue
            lock = path.with_suffix(".lock")
            with if_orphaned(lock, os.O_CREAT | os.O_RDWR) as fd:
                if fd is None:
                    continue  # its process is alive
                other = _open(path)
                rows = other.execute(
                    "SELECT id, lease, received_at, once, counters, actual FROM pending ORDER BY id"
                ).fetchall()
                other.close()
                for row in rows:
                    self.put(_pending(row))
                if rows:
                    log.warning("budget outbox: adopted %d pending settlement(s) from %s",
                                len(rows), path.name)  # fmt: skip
                for suffix in ("", "-wal", "-shm"):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(str(path) + suffix)
                with contextlib.suppress(FileNotFoundError):
                    lock.unlink()


def _open(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")  # survives a process crash; fsync at checkpoints
    db.execute(_SCHEMA)
    db.isolation_level = "DEFERRED"
    return db


def _row(item: Pending) -> tuple[Any, ...]:
    counters = [asdict(c) for c in item.counters]
    return (
        item.lease,
        item.received_at,
        int(item.once),
        orjson.dumps(counters).decode(),
        orjson.dumps(item.actual).decode(),
        time.time(),
    )


def _pending(row: tuple[Any, ...]) -> Pending:
    id_, lease, received_at, once, counters, actual = row
    return Pending(
        lease=lease,
        received_at=received_at,
        once=bool(once),
        counters=[Counter(**c) for c in orjson.loads(counters)],
        actual=list(orjson.loads(actual)),
        id=int(id_),
    )
