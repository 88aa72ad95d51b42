"""`SQLiteLedger`: the zero-setup ledger, one WAL-mode SQLite file (plus its rollups).

Writes go through one connection under a lock (SQLite allows one writer at a time anyway);
queries take a connection from a small pool, so a report running in another thread reads a
WAL snapshot while the batching writer keeps appending. `:memory:` has a single connection
shared by everything under the same lock, since a second connection would see a different
database.

The write path is only the INSERT: the WAL checkpoints (where the fsyncs are) run in a
`Checkpointer` thread, and the rollups are folded by a `RollupJob` into a sibling file
(`<ledger>.rollups`) with its own write lock, so neither ever makes a write wait. Reader
connections attach the rollup file; reports add the raw events above its watermark, so they
are exact however far the job lags.
"""

from __future__ import annotations

import logging
import os
import queue
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext, suppress
from pathlib import Path
from typing import Any

import spendgate.ledger.rollup_job as _job
import spendgate.ledger.rollups as _rollups
from spendgate.ledger.checkpoint import Checkpointer
from spendgate.ledger.event import COLUMNS, InvalidEvent, UsageEvent
from spendgate.ledger.rows import SQLITE, TimeRange, timestamp
from spendgate.ledger.store import LedgerStore

__all__ = ["SCHEMA_VERSION", "SQLiteLedger"]

log = logging.getLogger(__package__)

SCHEMA_VERSION = 5

_COLUMN_TYPES: dict[str, str] = {
    "request_id": "TEXT NOT NULL",
    "ts": "REAL NOT NULL",
    "day": "TEXT NOT NULL",
    "endpoint": "TEXT NOT NULL",
    "api": "TEXT NOT NULL",
    "requested_model": "TEXT NOT NULL",
    "input_tokens": "INTEGER NOT NULL DEFAULT 0",
    "output_tokens": "INTEGER NOT NULL DEFAULT 0",
    "cache_read_tokens": "INTEGER NOT NULL DEFAULT 0",
    "cache_write_tokens": "INTEGER NOT NULL DEFAULT 0",
    "cache_write_1h_tokens": "INTEGER NOT NULL DEFAULT 0",
    "reasoning_tokens": "INTEGER NOT NULL DEFAULT 0",
    "usage_estimated": "INTEGER NOT NULL DEFAULT 0",
    "cost_nanos": "INTEGER",
    "baseline_nanos": "INTEGER",
    "savings_nanos": "INTEGER NOT NULL DEFAULT 0",
    "cost_estimated": "INTEGER NOT NULL DEFAULT 0",
    "stream": "INTEGER NOT NULL DEFAULT 0",
    "status": "INTEGER NOT NULL",
    "latency_ms": "REAL NOT NULL",
    "ttfb_ms": "REAL",
    "client_disconnected": "INTEGER NOT NULL DEFAULT 0",
}
"""Anything not listed is nullable TEXT (tags, model names, JSON)."""

_V1_SCHEMA = [
    "CREATE TABLE usage_events (id INTEGER PRIMARY KEY, "
    + ", ".join(f'"{c}" {_COLUMN_TYPES.get(c, "TEXT")}' for c in COLUMNS)
    + ")",
    # The unique index is what makes a retried batch idempotent.
    "CREATE UNIQUE INDEX usage_events_request_id ON usage_events (request_id)",
    "CREATE INDEX usage_events_ts ON usage_events (ts)",
    # Tag + time for the two views filtered most (per-feature attribution, per-tenant
    # chargeback). Each index costs ingest speed; other filters scan the time range.
    "CREATE INDEX usage_events_feature_ts ON usage_events (feature, ts)",
    "CREATE INDEX usage_events_tenant_ts ON usage_events (tenant, ts)",
]

_V4_COLUMNS = ("system_tokens", "input_cost_nanos")
_V5_COLUMNS = ("routed", "measured")
assert (*_V4_COLUMNS, *_V5_COLUMNS) == _rollups.DERIVED_COLUMNS

_MIGRATIONS: dict[int, list[str]] = {
    1: _V1_SCHEMA,
    # v2 put rollup tables maintained on write into this file. A file ledger now keeps them
    # in `<ledger>.rollups` (created by the rollup job), so v2 adds nothing here …
    2: [],
    # … and v3 drops the v2 tables after `_move_v2_rollups` copied them over.
    3: [f"DROP TABLE IF EXISTS {t}" for t in (*_job.ROLLUP_TABLES, *_rollups.OUTCOME_TABLES)],
    # v4, v5: values worked out of `extra` and `route` at write time, as columns (see
    # `DERIVED_COLUMNS`). O(1): older rows keep NULL there, and queries read the JSON.
    4: [f'ALTER TABLE usage_events ADD COLUMN "{c}" INTEGER' for c in _V4_COLUMNS],
    5: [f'ALTER TABLE usage_events ADD COLUMN "{c}" INTEGER' for c in _V5_COLUMNS],
}
"""Target version → statements that bring the previous version to it."""

_ROLLUP_FILE_STEPS = frozenset({2, 3})
"""Steps only a file ledger takes: a `:memory:` ledger is always new and keeps its rollups
in its one database."""

_STORED = (*COLUMNS, *_rollups.DERIVED_COLUMNS)
_INSERT = (
    "INSERT INTO usage_events ("
    + ", ".join(f'"{c}"' for c in _STORED)
    + ") VALUES ("
    + ", ".join("?" for _ in _STORED)
    + ") ON CONFLICT (request_id) DO NOTHING"
)
_SELECT_COLUMNS = ", ".join(f'"{c}"' for c in COLUMNS)


class SQLiteLedger(LedgerStore):
    """A `LedgerStore` in one SQLite file (or `:memory:` for tests).

    `rollup_job=False` starts no fold thread: the rollups then move only on
    `flush_rollups()` / `rebuild_rollups()` (bulk loads, benchmarks); reports stay exact.
    `read_only=True` is for a short-lived reader beside the process that writes (a CLI
    report): no fold thread, no checkpointer, no fold on `close()` — that upkeep is the
    writer's, and a report on a big unfolded ledger should not pay for it — and
    `write_batch` refuses. Reports are exact either way (unfolded events are read raw).
    `fold_interval` is how long the job lets events accumulate between folds. A `:memory:`
    ledger folds inline, in `write_batch`, once `fold_every` events are unfolded.
    """

    dialect = SQLITE

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        create: bool = True,
        rollup_job: bool = True,
        fold_interval: float = 0.25,
        fold_every: int = 20_000,
        checkpoint_interval: float = 0.5,
        read_only: bool = False,
    ) -> None:
        self.path = str(path)
        self.read_only = read_only
        self._memory = self.path == ":memory:"
        if not self._memory:
            file = Path(self.path).expanduser()
            if not file.exists():
                if not create:
                    raise FileNotFoundError(f"no ledger at {file}")
                file.parent.mkdir(parents=True, exist_ok=True)
            self.path = str(file)
        self.rollup_path = None if self._memory else _job.rollup_path(self.path)
        self._lock = threading.Lock()
        self._readers: queue.SimpleQueue[sqlite3.Connection] = queue.SimpleQueue()
        self._all: list[sqlite3.Connection] = []
        self._closed = False
        self._fold_every = fold_every
        self._unfolded = 0
        self.use_rollups = True
        """Reports read the rollups when a query allows; False forces raw scans (tests)."""
        self._writer = self._connect(writer=True)
        self._checkpointer: Checkpointer | None = None
        self._job: _job.RollupJob
        try:
            with self._lock:
                self._migrate(self._writer)
            if self._memory:
                self._writer.execute("BEGIN IMMEDIATE")
                _job.ensure_schema(self._writer)
                self._writer.execute("COMMIT")
                self._job = _job.RollupJob(self._writer, nullcontext(), max_events=2**62)
            else:
                self._job = _job.RollupJob(
                    self._connect_rollups(), threading.Lock(), interval=fold_interval
                )
                if not read_only:
                    self._checkpointer = Checkpointer(self.path, interval=checkpoint_interval)
                    if rollup_job:
                        self._job.start()
        except BaseException:
            self._close_connections()
            raise

    @property
    def parallel_reads(self) -> bool:
        """Queries from several threads run at once: each takes its own reader connection
        (a `:memory:` ledger has one connection, so its reads take turns)."""
        return not self._memory

    # -- connections -------------------------------------------------------------------

    def _connect(self, *, writer: bool = False) -> sqlite3.Connection:
        # Autocommit mode; write_batch opens its own explicit transaction.
        conn = sqlite3.connect(
            self.path, isolation_level=None, check_same_thread=False, timeout=30.0
        )
        if not self._memory:
            conn.execute("PRAGMA journal_mode=WAL")
            if writer:
                # Checkpoints (and their fsyncs) are the Checkpointer thread's job.
                conn.execute("PRAGMA wal_autocheckpoint=0")
                # 16 MB for the four indexes' hot pages (the request_id one is written at
                # random): most of the 4–8 % more events/s that 64 MB gave over the default
                # 2 MB at 300k events, at a quarter of the memory (a gateway with budgets and
                # the cache on must stay under 150 MB RSS; docs/resilience.md).
                conn.execute("PRAGMA cache_size=-16384")
                # Index pages beyond the cache are read through a memory map, not read()
                # calls: +8–12% events/s at 1 M events with the rollup job on (two paired
                # runs, docs/reports.md). Address space only; the OS page cache backs it.
                conn.execute("PRAGMA mmap_size=268435456")
            else:
                conn.execute("ATTACH DATABASE ? AS rollups", (self.rollup_path,))
                # Reports read hundreds of thousands of rollup rows: map both files rather
                # than copy each page through read().
                conn.execute("PRAGMA main.mmap_size=268435456")
                conn.execute("PRAGMA rollups.mmap_size=268435456")
        conn.execute("PRAGMA synchronous=NORMAL")
        self._all.append(conn)
        return conn

    def _open_rollups(self, *, fresh: bool = False) -> sqlite3.Connection:
        """A connection with the rollup file as main, its schema in place (recreated empty
        when `fresh`), and the ledger attached as `ev`."""
        assert self.rollup_path is not None
        conn = sqlite3.connect(
            self.rollup_path, isolation_level=None, check_same_thread=False, timeout=30.0
        )
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("BEGIN IMMEDIATE")  # before ATTACH: locks the rollup file only
            try:
                if fresh:
                    conn.execute("PRAGMA main.user_version = 0")
                _job.ensure_schema(conn)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("ATTACH DATABASE ? AS ev", (self.path,))
        except BaseException:
            conn.close()
            raise
        return conn

    def _connect_rollups(self) -> sqlite3.Connection:
        """The job's connection (`_open_rollups`), checked against the ledger."""
        conn = self._open_rollups()
        self._all.append(conn)
        conn.execute("PRAGMA temp_store=MEMORY")
        conn.execute("PRAGMA cache_size=-16384")  # 16 MB: the rollups' hot pages
        _job.begin_write(conn)
        try:
            mark, top = conn.execute(
                'SELECT (SELECT "watermark" FROM rollup_state), '
                '(SELECT COALESCE(MAX("id"), 0) FROM ev.usage_events)'
            ).fetchone()
            if mark > top:
                # Rollups ahead of the ledger: the ledger lost its last commits (power loss
                # under synchronous=NORMAL) or was restored from a backup. Fold it all again.
                log.warning("rollups of %s are ahead of its events; rebuilding", self.path)
                for statement in _rollups.clear_statements():
                    conn.execute(statement)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return conn

    @contextmanager
    def _reader(self) -> Iterator[sqlite3.Connection]:
        if self._closed:
            raise sqlite3.ProgrammingError("ledger is closed")
        if self._memory:
            with self._lock:
                yield self._writer
            return
        try:
            conn = self._readers.get_nowait()
        except queue.Empty:
            with self._lock:
                conn = self._connect()
        try:
            yield conn
        finally:
            self._readers.put(conn)

    def _migrate(self, conn: sqlite3.Connection) -> None:
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            row = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
            current = row[0] or 0
            if current > SCHEMA_VERSION:
                raise RuntimeError(
                    f"ledger {self.path} has schema version {current}, newer than this "
                    f"spendgate understands ({SCHEMA_VERSION}); upgrade spendgate"
                )
            if current == 2 and not self._memory:
                self._move_v2_rollups()
            for version in range(current + 1, SCHEMA_VERSION + 1):
                if not self._memory or version not in _ROLLUP_FILE_STEPS:
                    for statement in _MIGRATIONS[version]:
                        conn.execute(statement)
                # One row, the version reached (MAX() also reads older multi-row tables).
                conn.execute("DELETE FROM schema_version")
                conn.execute("INSERT INTO schema_version (version) VALUES (?)", (version,))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def _move_v2_rollups(self) -> None:
        """v2 → v3: copy the rollups (and watermark) kept in the ledger file to the rollup
        file — rows, not a refold, so a 10 M-event ledger upgrades in seconds. Committed
        before the ledger drops its copy; a crash in between repeats the copy next open."""
        # The ledger is write-locked by the migration: the attached copy is only read.
        conn = self._open_rollups(fresh=True)
        try:
            _job.begin_write(conn)
            for table in _job.ROLLUP_TABLES:
                conn.execute(f"DELETE FROM main.{table}")
                conn.execute(f"INSERT INTO main.{table} SELECT * FROM ev.{table}")
            # v2 had no outcome rollup: its watermark stays 0 and the job backfills it.
            conn.execute("COMMIT")
        finally:
            conn.close()

    def _close_connections(self) -> None:
        for conn in self._all:
            conn.close()
        self._all.clear()

    # -- LedgerStore -------------------------------------------------------------------

    def write_batch(self, events: Sequence[UsageEvent]) -> None:
        """All of `events` in one transaction; a request_id already stored is skipped, so
        re-sending a batch after an ambiguous failure never double-counts (the rollups are
        folded from the stored rows, so they count each event once too)."""
        if not events:
            return
        if self.read_only:
            raise sqlite3.ProgrammingError(f"ledger {self.path} was opened read-only")
        # Raises before touching the DB.
        rows = [event.to_row() + _rollups.derived_values(event) for event in events]
        with self._lock:
            if self._closed:
                raise sqlite3.ProgrammingError("ledger is closed")
            conn = self._writer
            conn.execute("BEGIN IMMEDIATE")
            try:
                before = conn.total_changes
                conn.executemany(_INSERT, rows)
                conn.execute("COMMIT")
            except (sqlite3.ProgrammingError, OverflowError) as exc:
                # The connection is open (checked above), so this is a value SQLite cannot
                # bind — a property of some event, which no retry will fix.
                conn.execute("ROLLBACK")
                raise InvalidEvent(f"unstorable value in batch: {exc}") from exc
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            if self._memory:
                self._unfolded += conn.total_changes - before
                if self._unfolded >= self._fold_every:
                    self._fold_memory()

    def _fold_memory(self) -> None:
        """Inline fold for `:memory:` (caller holds the lock). A failure leaves the events
        unfolded — still counted raw — and is not the write's failure."""
        try:
            self._job.fold_all()
            self._unfolded = 0
        except sqlite3.Error:
            log.exception("rollup fold failed; events stay unfolded (reports remain exact)")

    # -- LedgerStore reads (shaped by the shared half in `ledger.store`) ---------------

    def _fetch(self, sql: str, params: list[Any]) -> list[Any]:
        with self._reader() as conn:
            return conn.execute(sql, params).fetchall()

    def _query(self, dims: list[str], window: TimeRange, filters: dict[str, str]) -> _rollups.Query:
        since, until = (None if w is None else timestamp(w) for w in window)
        return _rollups.Query(dims, since, until, filters, use_rollups=self.use_rollups)

    def _aggregate_sql(
        self, dims: list[str], window: TimeRange, filters: dict[str, str], names: Sequence[str]
    ) -> tuple[str, list[Any]]:
        return _rollups.aggregate_sql(self._query(dims, window, filters), names)

    def _savings_sql(
        self, dims: list[str], window: TimeRange, filters: dict[str, str]
    ) -> tuple[str, list[Any]]:
        return _rollups.savings_sql(self._query(dims, window, filters))

    def _active_users_sql(
        self, dims: list[str], window: TimeRange, filters: dict[str, str]
    ) -> tuple[str, list[Any]]:
        return _rollups.active_users_sql(self._query(dims, window, filters))

    def _outcome_result(self, window: TimeRange, filters: dict[str, str]) -> list[Any] | None:
        """From the outcome rollup (plus raw edges and unfolded events). None when it
        cannot answer cheaply: a filter it does not hold (tenant, user), or more than
        `OUTCOME_MAX_LAG` events behind the other rollups (an older rollup file, still
        being backfilled)."""
        built = _rollups.outcomes_sql(self._query([], window, filters))
        if built is None:
            return None
        sql, params = built
        with self._reader() as conn:
            level, main = conn.execute(
                'SELECT (SELECT "watermark" FROM rollup_outcome_state), '
                '(SELECT "watermark" FROM rollup_state)'
            ).fetchone()
            if self.use_rollups and main - level > OUTCOME_MAX_LAG:
                return None
            return conn.execute(sql, params).fetchall()

    def _recent_outcomes_sql(self, where: str, limit: int) -> str:
        return _rollups.recent_outcomes_sql(where, limit)

    def _events_sql(self, where: str) -> str:
        return f"SELECT id, {_SELECT_COLUMNS} FROM usage_events{where} ORDER BY id LIMIT ?"

    def rebuild_rollups(self) -> None:
        """Recompute every rollup from the raw events (after a bulk load, or to repair)."""
        with self._lock if self._memory else nullcontext():
            self._check_open()
            self._job.rebuild()
            self._unfolded = 0

    def flush_rollups(self) -> None:
        """Fold every event written so far into the rollups now, in this thread (the job
        would get there within `fold_interval`; tests and benchmarks want it now)."""
        with self._lock if self._memory else nullcontext():
            self._check_open()
            self._job.fold_all()
            while self._job.backfill():
                pass
            self._unfolded = 0

    def wait_folded(self, timeout: float | None = None) -> bool:
        """Block until the rollup job has folded every event written before this call,
        without folding here. False if `timeout` passed first (or no job is running)."""
        target = self._max_id()
        if self._memory or not self._job.running:
            return self._watermark() >= target
        return self._job.wait_folded(target, timeout)

    def rollup_stats(self) -> dict[str, Any]:
        """How the rollup job is doing: events folded, busy seconds, and the lag now."""
        stats = self._job.stats()
        mark = self._watermark()
        top = self._max_id()
        stats.update(watermark=mark, unfolded=max(0, top - mark), running=self._job.running)
        if self._checkpointer is not None:
            stats["checkpointer"] = self._checkpointer.stats()
        return stats

    def _watermark(self) -> int:
        with self._reader() as conn:
            return int(conn.execute('SELECT "watermark" FROM rollup_state').fetchone()[0])

    def _max_id(self) -> int:
        with self._reader() as conn:
            row = conn.execute('SELECT COALESCE(MAX("id"), 0) FROM usage_events').fetchone()
        return int(row[0])

    def _check_open(self) -> None:
        if self._closed:
            raise sqlite3.ProgrammingError("ledger is closed")

    def count(self) -> int:
        with self._reader() as conn:
            return int(conn.execute("SELECT COUNT(*) FROM usage_events").fetchone()[0])

    def close(self) -> None:
        """Stop the rollup job, fold what it left (one step, at most `max_events`: a bigger
        backlog is folded by the next open), checkpoint, close every connection."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._job.stop()
        if not self.read_only:
            with suppress(sqlite3.Error):  # the events are safe; the next open folds them
                self._job.fold()
        if self._checkpointer is not None:
            self._checkpointer.close()
        with self._lock:
            self._close_connections()

    def __repr__(self) -> str:
        return f"SQLiteLedger({self.path!r})"


OUTCOME_MAX_LAG = 200_000
"""Events the outcome rollup may lag the others by and still answer (the rest is read raw,
like unfolded events): past that, `outcomes()` leaves the figures to a bounded scan."""
