"""`RollupJob`: keeps the rollup tables folded up to the newest events, off the write path.

Why a job rather than folding inside each write: folding costs about as much CPU as the
insert itself, and a write transaction that folds holds the ledger's single write lock (and
the GIL, when the fold is done in Python) for that long. Here the fold is pure SQL
(`rollups.fold_statements`) run on a connection of its own, so SQLite does it with the GIL
released — on the second core, in parallel with the Python thread that ingests.

For a file ledger the rollups live in a sibling file (`<ledger>.rollups`, see
`rollup_path`): a fold holds *that* file's write lock, never the ledger's, so ingest never
waits for it. The job's connection has the rollup file as `main` and the ledger attached
read-only as `ev`; unqualified `usage_events` resolves to the attached ledger. A `:memory:`
ledger has no second file: its rollups sit next to the events and are folded on the one
shared connection (no thread).

Exactness does not depend on the job keeping up: the rollups carry a watermark (the highest
event id folded, moved in the same transaction as the fold) and every report adds the raw
events above it. Ids grow in commit order (one writer at a time, `INTEGER PRIMARY KEY`), so
"id <= watermark" is exactly "folded", whichever process folded it.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, suppress
from typing import Any

import spendgate.ledger.rollups as _rollups

__all__ = [
    "ROLLUP_FILE_VERSION",
    "ROLLUP_TABLES",
    "RollupJob",
    "begin_write",
    "ensure_schema",
    "rollup_path",
]

log = logging.getLogger(__package__)

ROLLUP_FILE_VERSION = 1
"""`PRAGMA user_version` of a rollup file. Another value (or no tables) means the file is
rebuilt from the ledger: it holds only derived data."""

ROLLUP_TABLES = (*(r.table for r in (*_rollups.ROLLUPS, _rollups.SAVINGS_ROLLUP)), "rollup_state")


def rollup_path(ledger_path: str) -> str:
    """Where a file ledger keeps its rollups: `ledger.db` → `ledger.db.rollups`. Derived
    data: deleting it (with its `-wal`/`-shm`) while no process has the ledger open only
    costs a rebuild."""
    return ledger_path + ".rollups"


def begin_write(conn: sqlite3.Connection) -> None:
    """Open a transaction holding the write lock of `main` (the rollups) only.

    `BEGIN IMMEDIATE` would take the write lock of every attached database too — the
    ledger's, blocking ingest for the whole fold. So: a deferred BEGIN, then a no-op write
    to `main` first (taking its lock before any read, so the snapshot cannot go stale);
    the attached ledger is only read, under a WAL read snapshot."""
    conn.execute("BEGIN")
    try:
        conn.execute('UPDATE main.rollup_state SET "watermark" = "watermark"')
    except BaseException:
        conn.execute("ROLLBACK")
        raise


@contextmanager
def _transaction(conn: sqlite3.Connection, *, write: bool) -> Iterator[None]:
    """A read transaction (`BEGIN`: a snapshot of both files) or a write one (`begin_write`:
    the rollup file's lock), committed at the end unless the body rolled it back itself,
    rolled back on an error."""
    if write:
        begin_write(conn)
    else:
        conn.execute("BEGIN")
    try:
        yield
        if conn.in_transaction:
            conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def ensure_schema(conn: sqlite3.Connection, schema: str = "main") -> bool:
    """Create the rollup tables in `schema` unless they are there at the current version.
    Runs in the caller's transaction. True if it (re)created them (watermark 0)."""
    version = conn.execute(f"PRAGMA {schema}.user_version").fetchone()[0]
    if version == ROLLUP_FILE_VERSION and _has_tables(conn, schema, ROLLUP_TABLES):
        _add_outcome_rollup(conn, schema)
        return False
    for table in (*ROLLUP_TABLES, *_rollups.OUTCOME_TABLES):
        conn.execute(f"DROP TABLE IF EXISTS {schema}.{table}")
    for statement in _rollups.schema_statements():
        conn.execute(_in_schema(statement, schema))
    conn.execute(f"PRAGMA {schema}.user_version = {ROLLUP_FILE_VERSION}")
    return True


def _has_tables(conn: sqlite3.Connection, schema: str, names: tuple[str, ...]) -> bool:
    marks = ", ".join("?" for _ in names)
    found = conn.execute(
        f"SELECT COUNT(*) FROM {schema}.sqlite_master WHERE type = 'table' AND name IN ({marks})",
        names,
    ).fetchone()[0]
    return bool(found == len(names))


def _in_schema(statement: str, schema: str) -> str:
    for verb in ("CREATE TABLE ", "INSERT INTO "):
        if statement.startswith(verb):
            return statement.replace(verb, f"{verb}{schema}.", 1)
    return statement


def _add_outcome_rollup(conn: sqlite3.Connection, schema: str) -> None:
    """A rollup file from before the outcome rollup gets it, empty (its watermark 0), for
    the job to backfill (`RollupJob.backfill`) — not a refold of everything."""
    if _has_tables(conn, schema, _rollups.OUTCOME_TABLES):
        return
    for table in _rollups.OUTCOME_TABLES:
        conn.execute(f"DROP TABLE IF EXISTS {schema}.{table}")
    for statement in _rollups.outcome_schema_statements():
        conn.execute(_in_schema(statement, schema))


class RollupJob:
    """Folds events above the watermark into the rollups, one transaction per fold.

    `fold()` may be called from any thread (a lock serialises it); `start()` runs it in a
    background thread every `interval` seconds while there is something to fold. Each fold
    takes at most `max_events` events, so a long backlog (a rebuild of a big ledger) is
    worked off in steps that each commit, and `stop()` never waits for more than one step.
    """

    def __init__(
        self,
        conn: sqlite3.Connection,
        lock: AbstractContextManager[Any],
        *,
        interval: float = 0.25,
        max_events: int = 200_000,
    ) -> None:
        self._conn = conn
        self._lock = lock
        self.interval = interval
        self.max_events = max_events
        self._stage = _rollups.stage_statements()
        self._apply = _rollups.apply_statements()
        self._outcome_apply = _rollups.outcome_apply_statement()
        self._stop = threading.Event()
        self._kick = threading.Event()
        self._folded = threading.Condition()
        self._watermark = 0
        self._thread: threading.Thread | None = None
        # stats
        self.events_folded = 0
        self.folds = 0
        self.busy_seconds = 0.0
        self.max_backlog = 0
        self.errors = 0

    # -- folding -----------------------------------------------------------------------

    def fold(self, max_events: int | None = None) -> int:
        """Fold up to `max_events` (default `self.max_events`) events above the watermark
        and move the watermark. Returns how many ids were folded (0: nothing to do)."""
        limit = self.max_events if max_events is None else max_events
        with self._lock:
            started = time.perf_counter()
            while True:
                low, high, top, done = self._fold_step(limit)
                if done:
                    break
                # Another process folded these events meanwhile: start again from its mark.
            if high <= low:
                self._set_watermark(low)
                return 0
            folded = high - low  # ids; equal to events unless an insert was rolled back
            self.folds += 1
            self.events_folded += folded
            self.busy_seconds += time.perf_counter() - started
            self.max_backlog = max(self.max_backlog, top - low)
        self._set_watermark(high)
        return folded

    def _fold_step(self, limit: int) -> tuple[int, int, int, bool]:
        """(watermark before, after, newest id, whether it held); caller holds the lock."""
        conn = self._conn
        low = conn.execute('SELECT "watermark" FROM rollup_state').fetchone()[0]
        # 1. Stage, in a read transaction of its own: a ledger snapshot held through the
        # whole fold would keep the checkpointer from ever rewinding the WAL.
        with _transaction(conn, write=False):
            row = conn.execute('SELECT COALESCE(MAX("id"), 0) FROM usage_events').fetchone()
            top = int(row[0])
            high = min(top, low + limit)
            if high > low:
                self._stage_events(low, high)
        if high <= low:
            return low, low, top, True
        # 2. Fold what was staged, with the watermark move, under the rollup file's write
        # lock. The watermark is read again inside it: if another process moved it, this
        # staging is stale and dropped.
        try:
            with _transaction(conn, write=True):
                if conn.execute('SELECT "watermark" FROM rollup_state').fetchone()[0] != low:
                    conn.execute("ROLLBACK")
                    return low, low, top, False
                for statement in self._apply:
                    conn.execute(statement)
                conn.execute('UPDATE rollup_state SET "watermark" = ?', (high,))
                # The outcome rollup follows when it is level with the others; when it
                # lags (being backfilled), `backfill` brings it up and it joins in later.
                level = conn.execute('SELECT "watermark" FROM rollup_outcome_state').fetchone()
                if level[0] == low:
                    self._fold_outcomes(high)
        finally:
            self._unstage()
        return low, high, top, True

    def _stage_events(self, low: int, high: int) -> None:
        for statement in self._stage:
            self._conn.execute(statement, {"lo": low, "hi": high})

    def _fold_outcomes(self, high: int) -> None:
        self._conn.execute(self._outcome_apply)
        self._conn.execute('UPDATE rollup_outcome_state SET "watermark" = ?', (high,))

    def _unstage(self) -> None:
        with suppress(sqlite3.Error):  # a staging table left full is only memory
            self._conn.execute("DELETE FROM temp.fold_src")

    def backfill(self, max_events: int | None = None) -> int:
        """Fold up to `max_events` events the outcome rollup lacks (those between its
        watermark and the main one) into it alone. Returns how many ids (0: level)."""
        limit = self.max_events if max_events is None else max_events
        with self._lock:
            conn = self._conn
            level, main = conn.execute(
                'SELECT (SELECT "watermark" FROM rollup_outcome_state), '
                '(SELECT "watermark" FROM rollup_state)'
            ).fetchone()
            if level >= main:
                return 0
            high = min(main, level + limit)
            with _transaction(conn, write=False):
                self._stage_events(level, high)
            try:
                with _transaction(conn, write=True):
                    now = conn.execute('SELECT "watermark" FROM rollup_outcome_state').fetchone()
                    if now[0] != level:
                        conn.execute("ROLLBACK")  # another process got there: look again
                    else:
                        self._fold_outcomes(high)
            finally:
                self._unstage()
            return high - level

    def fold_all(self) -> int:
        """Fold until nothing is above the watermark (as of each step). Returns the count."""
        total = 0
        while n := self.fold():
            total += n
        return total

    def rebuild(self) -> None:
        """Empty the rollups and fold every event again, in one transaction (repair, or
        after a bulk load that bypassed the ledger); step by step, `max_events` at a time,
        so the staging table stays small."""
        with self._lock:
            conn = self._conn
            with _transaction(conn, write=True):
                for statement in _rollups.clear_statements():
                    conn.execute(statement)
                top = conn.execute('SELECT COALESCE(MAX("id"), 0) FROM usage_events').fetchone()[0]
                for low in range(0, top, self.max_events):
                    params = {"lo": low, "hi": min(top, low + self.max_events)}
                    for statement in self._stage:
                        conn.execute(statement, params)
                    for statement in (*self._apply, self._outcome_apply):
                        conn.execute(statement)
                conn.execute("DELETE FROM temp.fold_src")
                conn.execute('UPDATE rollup_state SET "watermark" = ?', (top,))
                conn.execute('UPDATE rollup_outcome_state SET "watermark" = ?', (top,))
        self._set_watermark(top)

    def watermark(self) -> int:
        """The highest event id folded, as last seen by this job."""
        with self._folded:
            return self._watermark

    def _set_watermark(self, value: int) -> None:
        with self._folded:
            self._watermark = value
            self._folded.notify_all()

    # -- background thread -------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._run, name="spendgate-ledger-rollups", daemon=True
        )
        self._thread.start()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def kick(self) -> None:
        """Fold now rather than at the next interval."""
        self._kick.set()

    def wait_folded(self, event_id: int, timeout: float | None = None) -> bool:
        """Block until the watermark reaches `event_id` (the job must be running, or
        someone else must fold). False if `timeout` passed first."""
        self.kick()
        with self._folded:
            return self._folded.wait_for(lambda: self._watermark >= event_id, timeout)

    def stop(self) -> None:
        """Stop the thread after the fold in progress (if any)."""
        self._stop.set()
        self._kick.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _run(self) -> None:
        backoff = self.interval
        while not self._stop.is_set():
            try:
                n = self.fold()
            except Exception:  # keep folding later; reports are exact without it
                self.errors += 1
                log.exception("rollup fold failed; retrying (reports stay exact meanwhile)")
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 30.0)
                continue
            backoff = self.interval
            if n >= self.max_events:
                continue  # a backlog: keep going
            try:
                if self.backfill():
                    continue  # an older rollup file's outcome rollup: one step at a time
            except Exception:
                self.errors += 1
                log.exception("outcome rollup backfill failed; retrying")
            # Between folds, let events accumulate: one fold of thousands of events
            # collapses to far fewer rollup rows than many folds of one batch each.
            self._kick.wait(self.interval)
            self._kick.clear()

    def stats(self) -> dict[str, Any]:
        """Counters for the benchmark and /metrics."""
        return {
            "watermark": self.watermark(),
            "events_folded": self.events_folded,
            "folds": self.folds,
            "busy_seconds": round(self.busy_seconds, 3),
            "max_backlog": self.max_backlog,
            "errors": self.errors,
        }
