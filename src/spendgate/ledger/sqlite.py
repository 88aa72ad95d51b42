"""`SQLiteLedger`: the zero-setup ledger, one WAL-mode SQLite file.

Writes go through one connection under a lock (SQLite allows one writer at a time anyway);
queries take a connection from a small pool, so a report running in another thread reads a
WAL snapshot while the batching writer keeps appending. `:memory:` has a single connection
shared by everything under the same lock, since a second connection would see a different
database.
"""

from __future__ import annotations

import os
import queue
import sqlite3
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from spendgate.ledger import rollups as _rollups
from spendgate.ledger.event import COLUMNS, InvalidEvent, UsageEvent
from spendgate.ledger.spend import NONE_LABEL, SpendRow, check_dimensions

__all__ = ["SCHEMA_VERSION", "SQLiteLedger"]

SCHEMA_VERSION = 2

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

_MIGRATIONS: dict[int, list[str]] = {
    1: _V1_SCHEMA,
    # v2: rollup tables maintained on write (spendgate.ledger.rollups), backfilled here.
    2: _rollups.schema_statements() + _rollups.fold_statements(),
}
"""Target version → statements that bring the previous version to it."""

_INSERT = (
    "INSERT INTO usage_events ("
    + ", ".join(f'"{c}"' for c in COLUMNS)
    + ") VALUES ("
    + ", ".join("?" for _ in COLUMNS)
    + ") ON CONFLICT (request_id) DO NOTHING"
)
_SELECT_COLUMNS = ", ".join(f'"{c}"' for c in COLUMNS)

_DIMENSION_SQL: dict[str, str] = {
    "feature": '"feature"',
    "use_case": '"use_case"',
    "team": '"team"',
    "tenant": '"tenant"',
    "user": '"user"',
    "key_id": '"key_id"',
    "model": 'COALESCE("served_model", "requested_model")',
    "requested_model": '"requested_model"',
    "provider": '"provider"',
    "day": '"day"',
    "status": '"status"',
    "endpoint": '"endpoint"',
}


class SQLiteLedger:
    """A `LedgerStore` in one SQLite file (or `:memory:` for tests)."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        create: bool = True,
        rollup_flush_every: int = 20_000,
    ) -> None:
        self.path = str(path)
        self._memory = self.path == ":memory:"
        if not self._memory:
            file = Path(self.path).expanduser()
            if not file.exists():
                if not create:
                    raise FileNotFoundError(f"no ledger at {file}")
                file.parent.mkdir(parents=True, exist_ok=True)
            self.path = str(file)
        self._lock = threading.Lock()
        self._readers: queue.SimpleQueue[sqlite3.Connection] = queue.SimpleQueue()
        self._all: list[sqlite3.Connection] = []
        self._closed = False
        self._rollup_writer = _rollups.RollupWriter(rollup_flush_every)
        self.use_rollups = True
        """Reports read the rollups when a query allows; False forces raw scans (tests)."""
        self._writer = self._connect()
        with self._lock:
            self._migrate(self._writer)
        # Best effort (a read-only file cannot take it): unfolded events are read raw anyway.
        with suppress(sqlite3.OperationalError):
            self._catch_up()

    # -- connections -------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        # Autocommit mode; write_batch opens its own explicit transaction.
        conn = sqlite3.connect(
            self.path, isolation_level=None, check_same_thread=False, timeout=30.0
        )
        if not self._memory:
            conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        self._all.append(conn)
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
            for version in range(current + 1, SCHEMA_VERSION + 1):
                for statement in _MIGRATIONS[version]:
                    conn.execute(statement)
                # One row, the version reached (MAX() also reads older multi-row tables).
                conn.execute("DELETE FROM schema_version")
                conn.execute("INSERT INTO schema_version (version) VALUES (?)", (version,))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    # -- LedgerStore -------------------------------------------------------------------

    def write_batch(self, events: Sequence[UsageEvent]) -> None:
        """All of `events` in one transaction; a request_id already stored is skipped, so
        re-sending a batch after an ambiguous failure never double-counts."""
        if not events:
            return
        rows = [event.to_row() for event in events]  # raises before touching the DB
        with self._lock:
            if self._closed:
                raise sqlite3.ProgrammingError("ledger is closed")
            conn = self._writer
            conn.execute("BEGIN IMMEDIATE")
            try:
                before = conn.total_changes
                conn.executemany(_INSERT, rows)
                fresh: Sequence[UsageEvent] = events
                if conn.total_changes - before != len(rows):
                    # Some request_ids were already stored (a re-sent batch): roll back and
                    # redo with only the new events, so the rollups count each event once.
                    conn.execute("ROLLBACK")
                    conn.execute("BEGIN IMMEDIATE")
                    fresh, fresh_rows = self._new_events(conn, events, rows)
                    conn.executemany(_INSERT, fresh_rows)
                flushed = self._rollup_writer.add(conn, fresh)
                conn.execute("COMMIT")
            except (sqlite3.ProgrammingError, OverflowError) as exc:
                # The connection is open (checked above), so this is a value SQLite cannot
                # bind — a property of some event, which no retry will fix.
                conn.execute("ROLLBACK")
                self._rollup_writer.taint()
                raise InvalidEvent(f"unstorable value in batch: {exc}") from exc
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                self._rollup_writer.taint()
                raise
            self._rollup_writer.committed(len(fresh), flushed)

    def spend(
        self,
        by: Sequence[str],
        since: datetime | None = None,
        until: datetime | None = None,
        filters: Mapping[str, str] | None = None,
    ) -> list[SpendRow]:
        """Totals grouped by `by` over calls received in [since, until), most costly first.
        Read from the rollups when they cover the dimensions (exact: ragged edges of the
        window come from raw events)."""
        dims = check_dimensions(by)
        rows = []
        for keys, agg in self.aggregate(dims, since, until, filters):
            rows.append(SpendRow(keys, *(agg[a] for a in _SPEND_FIELDS)))
        rows.sort(key=lambda row: (-row.cost_nanos, -row.calls, tuple(row.keys.values())))
        return rows

    def aggregate(
        self,
        by: Sequence[str],
        since: datetime | None = None,
        until: datetime | None = None,
        filters: Mapping[str, str] | None = None,
    ) -> list[tuple[dict[str, str], dict[str, int]]]:
        """(group keys, every aggregate in `rollups.AGGREGATES`) per group of `by`."""
        dims = check_dimensions(by)
        flt = _checked(filters)
        sql, params, _ = _rollups.aggregate_sql(
            dims, _opt_ts(since), _opt_ts(until), flt, NONE_LABEL, use_rollups=self.use_rollups
        )
        with self._reader() as conn:
            result = conn.execute(sql, params).fetchall()
        out = []
        n = len(dims)
        for r in result:
            if not dims and r[0] == 0:
                continue  # an ungrouped aggregate over nothing is no group at all
            if not r[n]:
                continue
            keys = {d: NONE_LABEL if v is None else str(v) for d, v in zip(dims, r, strict=False)}
            out.append((keys, dict(zip(_rollups.AGGREGATES, r[n:], strict=True))))
        return out

    def savings_by_technique(
        self,
        by: Sequence[str] = (),
        since: datetime | None = None,
        until: datetime | None = None,
        filters: Mapping[str, str] | None = None,
    ) -> list[tuple[dict[str, str], str, int, int]]:
        """(group keys, technique, calls it acted on, nanos saved) per group of `by`."""
        dims = check_dimensions(by)
        flt = _checked(filters)
        sql, params = _rollups.savings_sql(
            [*dims, "technique"], _opt_ts(since), _opt_ts(until), flt, NONE_LABEL,
            use_rollups=self.use_rollups,
        )  # fmt: skip
        with self._reader() as conn:
            result = conn.execute(sql, params).fetchall()
        n = len(dims)
        out = []
        for r in result:
            if r[n] is None or not r[n + 1]:
                continue
            keys = {d: NONE_LABEL if v is None else str(v) for d, v in zip(dims, r, strict=False)}
            out.append((keys, str(r[n]), int(r[n + 1]), int(r[n + 2])))
        return out

    def active_users(
        self,
        by: Sequence[str] = (),
        since: datetime | None = None,
        until: datetime | None = None,
        filters: Mapping[str, str] | None = None,
    ) -> list[tuple[dict[str, str], int]]:
        """(group keys, distinct tagged users) per group of `by` over [since, until)."""
        dims = check_dimensions(by)
        flt = _checked(filters)
        sql, params = _rollups.active_users_sql(
            dims, _opt_ts(since), _opt_ts(until), flt, NONE_LABEL, use_rollups=self.use_rollups
        )
        with self._reader() as conn:
            result = conn.execute(sql, params).fetchall()
        n = len(dims)
        out = []
        for r in result:
            if not dims and not r[0]:
                continue
            keys = {d: NONE_LABEL if v is None else str(v) for d, v in zip(dims, r, strict=False)}
            out.append((keys, int(r[n])))
        return out

    def rebuild_rollups(self) -> None:
        """Recompute every rollup from the raw events (after a bulk load, or to repair)."""
        self._rollup_transaction(_rollups.rebuild_statements(), clear=True)

    def flush_rollups(self) -> None:
        """Fold what the writer holds in memory into the rollups now (close() does it)."""
        with self._lock:
            w = self._rollup_writer
            if self._closed or not (w.pending_events or w.tainted):
                return
            conn = self._writer
            conn.execute("BEGIN IMMEDIATE")
            try:
                self._rollup_writer.flush(conn)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            self._rollup_writer.clear()

    def _rollup_transaction(self, statements: Sequence[str], *, clear: bool) -> None:
        with self._lock:
            conn = self._writer
            conn.execute("BEGIN IMMEDIATE")
            try:
                for statement in statements:
                    conn.execute(statement)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            if clear:
                self._rollup_writer.clear()

    def _catch_up(self) -> None:
        """Fold events a previous process wrote but never folded (it crashed)."""
        row = self._writer.execute(
            'SELECT (SELECT "watermark" FROM rollup_state), '
            '(SELECT COALESCE(MAX("id"), 0) FROM usage_events)'
        ).fetchone()
        if row[1] > row[0]:
            self._rollup_transaction(_rollups.fold_statements(), clear=True)

    def _new_events(
        self, conn: sqlite3.Connection, events: Sequence[UsageEvent], rows: list[tuple[Any, ...]]
    ) -> tuple[list[UsageEvent], list[tuple[Any, ...]]]:
        """The events of a batch not stored yet (and the first of any repeat within it)."""
        ids = list({e.request_id for e in events})
        stored: set[str] = set()
        for i in range(0, len(ids), 500):
            chunk = ids[i : i + 500]
            marks = ", ".join("?" for _ in chunk)
            stored.update(
                r[0]
                for r in conn.execute(
                    f"SELECT request_id FROM usage_events WHERE request_id IN ({marks})", chunk
                )
            )
        fresh: list[UsageEvent] = []
        fresh_rows: list[tuple[Any, ...]] = []
        for event, row in zip(events, rows, strict=True):
            if event.request_id not in stored:
                stored.add(event.request_id)
                fresh.append(event)
                fresh_rows.append(row)
        return fresh, fresh_rows

    def count(self) -> int:
        with self._reader() as conn:
            return int(conn.execute("SELECT COUNT(*) FROM usage_events").fetchone()[0])

    def events(
        self,
        limit: int | None = None,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        filters: Mapping[str, str] | None = None,
        chunk: int = 1000,
    ) -> Iterator[UsageEvent]:
        """Events in write order. Reads in keyset-paged chunks, each its own short read, so
        an export that is slow or abandoned never pins a WAL snapshot."""
        where, params = _where(since, until, filters)
        where = where + (" AND" if where else " WHERE") + " id > ?"
        remaining = limit
        last_id = 0
        while remaining is None or remaining > 0:
            size = chunk if remaining is None else min(chunk, remaining)
            sql = f"SELECT id, {_SELECT_COLUMNS} FROM usage_events{where} ORDER BY id LIMIT ?"
            with self._reader() as conn:
                page = conn.execute(sql, [*params, last_id, size]).fetchall()
            for row in page:
                yield UsageEvent.from_row(row[1:])
            if len(page) < size:
                return
            last_id = page[-1][0]
            if remaining is not None:
                remaining -= len(page)

    def close(self) -> None:
        with suppress(sqlite3.Error):  # the events are safe; the next open folds them
            self.flush_rollups()
        with self._lock:
            if self._closed:
                return
            self._closed = True
            for conn in self._all:
                conn.close()
            self._all.clear()

    def __enter__(self) -> SQLiteLedger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"SQLiteLedger({self.path!r})"


_SPEND_FIELDS = (
    "calls",
    "errors",
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cost_nanos",
    "unknown_cost_calls",
    "baseline_nanos",
    "savings_nanos",
)
"""`SpendRow`'s positional fields after `keys`, named as in `rollups.AGGREGATES`."""


def _checked(filters: Mapping[str, str] | None) -> dict[str, str]:
    filters = filters or {}
    return {name: filters[name] for name in check_dimensions(filters.keys())}


def _opt_ts(when: datetime | None) -> float | None:
    return None if when is None else _ts(when)


def _ts(when: datetime) -> float:
    """Naive datetimes are taken as UTC, matching the ledger's UTC `day`."""
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


def _where(
    since: datetime | None, until: datetime | None, filters: Mapping[str, str] | None
) -> tuple[str, list[Any]]:
    clauses: list[str] = []
    params: list[Any] = []
    if since is not None:
        clauses.append('"ts" >= ?')
        params.append(_ts(since))
    if until is not None:
        clauses.append('"ts" < ?')
        params.append(_ts(until))
    for name in check_dimensions((filters or {}).keys()):
        value = (filters or {})[name]
        expr = _DIMENSION_SQL[name]
        if value == NONE_LABEL:
            clauses.append(f"{expr} IS NULL")
        elif name == "status":
            try:
                params.append(int(value))
            except ValueError:
                raise ValueError(f"status filter must be an integer, got {value!r}") from None
            clauses.append(f"{expr} = ?")
        else:
            clauses.append(f"{expr} = ?")
            params.append(value)
    return ((" WHERE " + " AND ".join(clauses)) if clauses else ""), params
