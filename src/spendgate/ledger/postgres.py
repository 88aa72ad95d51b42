"""`PostgresLedger`: the ledger many gateway replicas share, in PostgreSQL.

Same contract and same answers as `SQLiteLedger` (same dimensions, `(none)`, ordering,
exact integer sums), built for many writers:

- `usage_events` is range-partitioned by UTC day. A batch first makes sure the partitions
  for the days it touches exist (a short transaction of its own under an advisory lock, so
  replicas racing at midnight do not collide), then lands with one `COPY` into a temporary
  table and one `INSERT … SELECT … ON CONFLICT (request_id, day) DO NOTHING`. Re-sending a
  batch whose commit was not seen is therefore harmless.
- The store fails fast when the database is away (a connect timeout, TCP keepalives) and
  drops a broken connection so the next attempt reconnects: the `BatchingWriter`'s bounded
  buffer and backoff do the waiting, not this class. Opened while the database is away
  (with `create=True`), it logs and sets itself up on the first call that connects, so a
  gateway never stays down because its accounting database is.
- Schema versions are kept in `<schema>.spendgate_schema` (see `ledger.migrations`);
  opening with `create=True` upgrades, `spendgate db upgrade` does it explicitly.

URL: any libpq URI (`postgresql://user@host:5432/db?connect_timeout=3`), plus one query
parameter of our own, `schema=NAME`, which puts every table in that schema (created if
missing). Without it the first schema of libpq's search_path is used, so
`?options=-csearch_path%3Dname` works too.
"""

from __future__ import annotations

import logging
import queue
import re
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime, timedelta
from functools import partial
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg
from psycopg import errors as pg_errors
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from spendgate.ledger.event import COLUMNS, InvalidEvent, UsageEvent
from spendgate.ledger.migrations import LATEST, MIGRATIONS
from spendgate.ledger.rollups import CACHE_MIN_TOKENS, OUTCOME_AGGREGATES
from spendgate.ledger.rows import DIMENSION_SQL, POSTGRES, TimeRange, where_clause
from spendgate.ledger.store import LedgerStore

__all__ = [
    "PostgresLedger",
    "connect_ledger_db",
    "parse_postgres_url",
    "schema_history",
    "schema_version",
    "upgrade_schema",
]

log = logging.getLogger(__package__)

_DEFAULTS = {
    # Fail fast while the database is away; the writer retries with backoff.
    "connect_timeout": "5",
    # Notice a vanished server on an idle or in-flight connection within ~25 s.
    "keepalives": "1",
    "keepalives_idle": "10",
    "keepalives_interval": "5",
    "keepalives_count": "3",
    "application_name": "spendgate",
}

_T = TypeVar("_T")

_JSON = frozenset({"savings", "route", "attempts", "extra"})
_MAX_IDLE_READERS = 4
_SCHEMA_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]{0,62}$")


def _json_int(key: str) -> str:
    """An integer stored by accounting in `extra`, 0 when absent or not a number."""
    return (
        f"COALESCE(CASE WHEN jsonb_typeof(extra->'{key}') = 'number' "
        f"THEN trunc((extra->>'{key}')::numeric) END, 0)"
    )


_SYSTEM_TOKENS = f"LEAST({_json_int('system_tokens')}, input_tokens)"
_REPORT: dict[str, str] = {
    "calls": "COUNT(*)",
    "errors": "COALESCE(SUM((status >= 400)::int), 0)",
    "input_tokens": "COALESCE(SUM(input_tokens), 0)",
    "output_tokens": "COALESCE(SUM(output_tokens), 0)",
    "cache_read_tokens": "COALESCE(SUM(cache_read_tokens), 0)",
    "cost_nanos": "COALESCE(SUM(cost_nanos), 0)",
    "unknown_cost_calls": "COALESCE(SUM((cost_nanos IS NULL)::int), 0)",
    "baseline_nanos": "COALESCE(SUM(baseline_nanos), 0)",
    "savings_nanos": "COALESCE(SUM(savings_nanos), 0)",
    "system_tokens": f"COALESCE(SUM({_SYSTEM_TOKENS}), 0)",
    "input_cost_nanos": f"COALESCE(SUM({_json_int('input_cost_nanos')}), 0)",
    # Integer division truncating toward zero, like SQLite's: the system prompt's share of
    # the input spend, pro rata by tokens (see `ledger.rollups.system_input_nanos`).
    "system_input_nanos": (
        f"COALESCE(SUM(CASE WHEN input_tokens > 0 THEN trunc({_json_int('input_cost_nanos')} "
        f"* {_SYSTEM_TOKENS} / input_tokens) ELSE 0 END), 0)"
    ),
}
"""`ledger.rollups.AGGREGATES`, computed from raw events (partition pruning keeps a
windowed report to the days it covers)."""

_MEASURED = "(input_tokens > 0 AND extra->>'input_cost_nanos' IS NOT NULL)"
_ROUTED = (
    "(status < 400 AND route IS NOT NULL AND COALESCE(route->>'mode', '') <> 'shadow' "
    "AND route->>'served' IS NOT NULL "
    "AND route->>'served' <> COALESCE(route->>'requested', requested_model))"
)
_OUTCOMES: dict[str, str] = {
    "calls": "COUNT(*)",
    "answered": "COALESCE(SUM((status < 400)::int), 0)",
    "routed": f"COALESCE(SUM({_ROUTED}::int), 0)",
    "measured": f"COALESCE(SUM({_MEASURED}::int), 0)",
    "measured_system_tokens": (
        f"COALESCE(SUM(CASE WHEN {_MEASURED} THEN {_SYSTEM_TOKENS} ELSE 0 END), 0)"
    ),
    "cacheable_system_tokens": (
        f"COALESCE(SUM(CASE WHEN {_MEASURED} AND {_SYSTEM_TOKENS} >= {CACHE_MIN_TOKENS} "
        f"THEN GREATEST({_SYSTEM_TOKENS} - cache_read_tokens, 0) ELSE 0 END), 0)"
    ),
}
"""`rollups.OUTCOME_AGGREGATES` from raw events, as the SQLite outcome rollup sums them."""

_QUOTED = [f'"{c}"' for c in COLUMNS]
_SELECT = ", ".join(f'"{c}"::text' if c in _JSON else f'"{c}"' for c in COLUMNS)


def parse_postgres_url(url: str) -> tuple[str, str | None]:
    """(libpq conninfo, schema or None) from a ledger URL. Accepts `postgresql://`,
    `postgres://` and SQLAlchemy's `postgresql+psycopg://`; adds fail-fast defaults
    (connect_timeout 5 s, keepalives) unless the URL sets them."""
    scheme, sep, _ = url.partition("://")
    if not sep or not (scheme in ("postgresql", "postgres") or scheme.startswith("postgresql+")):
        raise ValueError(f"not a PostgreSQL URL: {url!r}")
    parts = urlsplit("postgresql://" + url.split("://", 1)[1])
    query = parse_qsl(parts.query, keep_blank_values=True)
    schema = None
    kept = []
    for key, value in query:
        if key == "schema":
            if not _SCHEMA_RE.match(value):
                raise ValueError(f"bad schema name {value!r} in ledger URL (letters, digits, _)")
            schema = value
        else:
            kept.append((key, value))
    conninfo = urlunsplit(parts._replace(query=urlencode(kept)))
    try:
        given = conninfo_to_dict(conninfo)
    except psycopg.ProgrammingError as exc:
        raise ValueError(f"bad PostgreSQL URL {url!r}: {exc}") from None
    extra = [(k, v) for k, v in _DEFAULTS.items() if k not in given]
    if extra:
        conninfo = urlunsplit(parts._replace(query=urlencode(kept + extra)))
    return conninfo, schema


class PostgresLedger(LedgerStore):
    """A `LedgerStore` in PostgreSQL, safe to share between any number of processes."""

    dialect = POSTGRES

    @property
    def parallel_reads(self) -> bool:
        """Queries from several threads run at once, each on a pooled connection of its own."""
        return True

    def __init__(self, url: str, *, create: bool = True) -> None:
        self.url = url
        self._conninfo, wanted_schema = parse_postgres_url(url)
        self.schema: str | None = wanted_schema
        """None only while the schema comes from the search path and the database has not
        been reachable yet."""
        self._create = create
        self._lock = threading.Lock()
        """Serialises writes (the BatchingWriter has one thread anyway) and guards state."""
        self._setup_lock = threading.Lock()
        self._ready = False
        self._idle: queue.SimpleQueue[psycopg.Connection[Any]] = queue.SimpleQueue()
        self._idle_count = 0
        self._writer: psycopg.Connection[Any] | None = None
        self._partitions: set[date] = set()
        self._closed = False
        self._s = sql.Identifier(wanted_schema or "public")
        self._table = sql.Identifier(wanted_schema or "public", "usage_events")
        try:
            self._setup()
        except psycopg.OperationalError as exc:
            if not create:
                raise
            # A gateway must not be kept down by its accounting database: start, buffer
            # events in the writer, and set the schema up on the first write that connects.
            log.error(
                "PostgreSQL ledger unreachable at startup (%s); events are buffered and "
                "written once it answers",
                str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__,
            )

    def _setup(self) -> None:
        """Connect, pick the schema, check/upgrade its version, make today's partitions.
        Raises `OperationalError` while the database is unreachable (retried later)."""
        with self._setup_lock:
            if self._ready:
                return
            conn = self._connect()
            try:
                schema = self.schema or _default_schema(conn)
                current = schema_version(conn, schema)
                if current > LATEST:
                    raise RuntimeError(
                        f"ledger schema {schema!r} is at version {current}, newer than this "
                        f"spendgate understands ({LATEST}); upgrade spendgate"
                    )
                if current < LATEST:
                    if not self._create:
                        raise FileNotFoundError(
                            f"no up-to-date ledger in schema {schema!r} (version {current}, "
                            f"need {LATEST}); run `spendgate db upgrade --ledger URL`"
                        )
                    upgrade_schema(conn, schema)
                self.schema = schema
                self._s = sql.Identifier(schema)
                self._table = sql.Identifier(schema, "usage_events")
                today = datetime.now(UTC).date()
                self._ensure_partitions(conn, {today, today + timedelta(days=1)})
            except BaseException:
                conn.close()
                raise
            if self._writer is None:
                self._writer = conn
            else:
                conn.close()
            self._ready = True

    @property
    def _schema(self) -> str:
        assert self.schema is not None, "schema is known once the ledger is set up"
        return self.schema

    def _require_ready(self) -> None:
        if self._closed:
            raise psycopg.InterfaceError("ledger is closed")
        if not self._ready:
            self._setup()

    # -- connections -------------------------------------------------------------------

    def _connect(self) -> psycopg.Connection[Any]:
        return psycopg.connect(self._conninfo, autocommit=True)

    def _read(self, work: Callable[[psycopg.Connection[Any]], _T]) -> _T:
        """Run `work` on a pooled reader connection. A pooled connection the server dropped
        meanwhile (restart, `pg_terminate_backend`) is replaced once, transparently."""
        self._require_ready()
        for attempt in range(2):
            if self._closed:
                raise psycopg.InterfaceError("ledger is closed")
            pooled = True
            try:
                conn = self._idle.get_nowait()
                with self._lock:
                    self._idle_count -= 1
            except queue.Empty:
                conn, pooled = self._connect(), False
            try:
                result = work(conn)
            except psycopg.OperationalError:
                conn.close()
                if pooled and attempt == 0:
                    continue
                raise
            except BaseException:
                conn.close()
                raise
            with self._lock:
                keep = not self._closed and self._idle_count < _MAX_IDLE_READERS
                if keep:
                    self._idle_count += 1
                    self._idle.put(conn)
            if not keep:
                conn.close()
            return result
        raise AssertionError("unreachable")

    # -- schema ------------------------------------------------------------------------

    def current_version(self) -> int:
        self._require_ready()
        return self._read(lambda conn: schema_version(conn, self._schema))

    def history(self) -> list[tuple[int, str, datetime | None]]:
        """(version, description, applied_at or None) for every known migration."""
        self._require_ready()
        return self._read(lambda conn: schema_history(conn, self._schema))

    def partitions(self) -> list[str]:
        """Names of the day partitions that exist, oldest first."""
        self._require_ready()
        rows = self._read(
            lambda conn: conn.execute(
                "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                "WHERE i.inhparent = to_regclass(%s) ORDER BY c.relname",
                [f'"{self._schema}".usage_events'],
            ).fetchall()
        )
        return [r[0] for r in rows]

    def _ensure_partitions(self, conn: psycopg.Connection[Any], days: set[date]) -> None:
        missing = sorted(days - self._partitions)
        for day in missing:
            name = f"usage_events_p{day:%Y%m%d}"
            found = conn.execute("SELECT to_regclass(%s)", [f'"{self._schema}".{name}']).fetchone()
            if found is None or found[0] is None:
                with conn.transaction():
                    _advisory_lock(conn, self._schema)
                    conn.execute(
                        sql.SQL(
                            "CREATE TABLE IF NOT EXISTS {} PARTITION OF {} "
                            "FOR VALUES FROM ({}) TO ({})"
                        ).format(
                            sql.Identifier(self._schema, name),
                            self._table,
                            sql.Literal(day),
                            sql.Literal(day + timedelta(days=1)),
                        )
                    )
            self._partitions.add(day)

    # -- LedgerStore -------------------------------------------------------------------

    def write_batch(self, events: Sequence[UsageEvent]) -> None:
        """All of `events` in one transaction; a (request_id, day) already stored is skipped.
        Raises `InvalidEvent` for a value PostgreSQL refuses (the writer bisects the batch
        to find it) and the driver's `OperationalError` when the database is away."""
        if not events:
            return
        rows = [event.to_row() for event in events]  # raises before touching the DB
        days = {date.fromisoformat(row[2]) for row in rows}
        with self._lock:
            self._require_ready()  # connects and migrates if the database was away at start
            conn = self._writer
            try:
                if conn is None or conn.closed:
                    conn = self._writer = self._connect()
                self._ensure_partitions(conn, days)
                self._insert(conn, rows)
            except (pg_errors.CheckViolation, pg_errors.UndefinedTable) as exc:
                # A partition we remembered was dropped (retention) under us: look again.
                self._partitions.clear()
                raise RuntimeError(f"ledger partition missing, will retry: {exc}") from exc
            except (psycopg.DataError, psycopg.IntegrityError) as exc:
                raise InvalidEvent(f"unstorable value in batch: {exc}") from exc
            except (psycopg.OperationalError, psycopg.InterfaceError):
                if conn is not None:
                    conn.close()
                self._writer = None
                raise

    def _insert(self, conn: psycopg.Connection[Any], rows: list[tuple[Any, ...]]) -> None:
        cols = sql.SQL(", ").join(sql.Identifier(c) for c in COLUMNS)
        with conn.transaction(), conn.cursor() as cur:
            # ON COMMIT DROP: nothing outlives the batch, even on a pooled connection.
            cur.execute(
                sql.SQL(
                    "CREATE TEMP TABLE spendgate_batch ON COMMIT DROP AS "
                    "SELECT {} FROM {} WITH NO DATA"
                ).format(cols, self._table)
            )
            with cur.copy(sql.SQL("COPY spendgate_batch ({}) FROM STDIN").format(cols)) as copy:
                for row in rows:
                    copy.write_row(row)
            cur.execute(
                sql.SQL(
                    "INSERT INTO {t} ({c}) SELECT {c} FROM spendgate_batch "
                    "ON CONFLICT (request_id, day) DO NOTHING"
                ).format(t=self._table, c=cols)
            )

    def count(self) -> int:
        self._require_ready()
        count = sql.SQL("SELECT COUNT(*) FROM {}").format(self._table)
        row = self._read(lambda conn: conn.execute(count).fetchone())
        return int(row[0]) if row else 0

    # -- LedgerStore reads (shaped by the shared half in `ledger.store`) ---------------
    # Every figure comes from raw events: one GROUP BY over the day partitions the window
    # touches (the same figures the SQLite store's raw-event path gives).

    def _fetch(self, query: str, params: list[Any]) -> list[Any]:
        return self._read(partial(_fetch_all, query.encode(), params))

    def _from(self) -> str:
        self._require_ready()  # the schema may come from the search path on first connect
        return self._table.as_string(None)

    def _aggregate_sql(
        self, dims: list[str], window: TimeRange, filters: dict[str, str], names: Sequence[str]
    ) -> tuple[str, list[Any]]:
        where, params = where_clause(POSTGRES, *window, filters)
        return _grouped(dims, [_REPORT[a] for a in names], self._from(), where), params

    def _savings_sql(
        self, dims: list[str], window: TimeRange, filters: dict[str, str]
    ) -> tuple[str, list[Any]]:
        where, params = where_clause(POSTGRES, *window, filters)
        source = f"{self._from()} AS e, jsonb_each_text(e.savings) AS j"
        aggregates = ("COUNT(*)", "SUM(j.value::numeric)")
        return _grouped([*dims, "technique"], aggregates, source, where), params

    def _active_users_sql(
        self, dims: list[str], window: TimeRange, filters: dict[str, str]
    ) -> tuple[str, list[Any]]:
        where, params = where_clause(POSTGRES, *window, filters)
        where += (" AND" if where else " WHERE") + ' "user" IS NOT NULL'
        return _grouped(dims, ('COUNT(DISTINCT "user")',), self._from(), where), params

    def _outcome_result(self, window: TimeRange, filters: dict[str, str]) -> list[Any] | None:
        """Exact over the whole window, like every other figure here (no rollup to lag)."""
        where, params = where_clause(POSTGRES, *window, filters)
        return self._fetch(_outcomes_sql(self._from() + where), params)

    def _recent_outcomes_sql(self, where: str, limit: int) -> str:
        newest = f'(SELECT * FROM {self._from()}{where} ORDER BY "ts" DESC LIMIT {int(limit)}) AS e'
        return _outcomes_sql(newest)

    def _events_sql(self, where: str) -> str:
        return f"SELECT id, {_SELECT} FROM {self._from()}{where} ORDER BY id LIMIT %s"

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._writer is not None:
                self._writer.close()
                self._writer = None
            while True:
                try:
                    self._idle.get_nowait().close()
                except queue.Empty:
                    break
            self._idle_count = 0

    def __repr__(self) -> str:
        return f"PostgresLedger(schema={getattr(self, 'schema', None)!r})"


def _advisory_lock(conn: psycopg.Connection[Any], schema: str) -> None:
    """Held to the end of the caller's transaction; serialises DDL on one ledger schema
    across every replica (migrations, partition creation)."""
    conn.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", [f"spendgate-ledger:{schema}"]
    )


def schema_version(conn: psycopg.Connection[Any], schema: str) -> int:
    """The ledger schema version in `schema` (0: none yet). Reads only."""
    found = conn.execute("SELECT to_regclass(%s)", [f'"{schema}".spendgate_schema']).fetchone()
    if found is None or found[0] is None:
        return 0
    row = conn.execute(
        sql.SQL("SELECT COALESCE(MAX(version), 0) FROM {}.spendgate_schema").format(
            sql.Identifier(schema)
        )
    ).fetchone()
    return int(row[0]) if row else 0


def schema_history(conn: psycopg.Connection[Any], schema: str) -> list[tuple[int, str, Any]]:
    """(version, description, applied_at or None) for every known migration. Reads only."""
    applied: dict[int, Any] = {}
    if schema_version(conn, schema):
        rows = conn.execute(
            sql.SQL("SELECT version, applied_at FROM {}.spendgate_schema").format(
                sql.Identifier(schema)
            )
        ).fetchall()
        applied = {int(v): at for v, at in rows}
    return [(m.version, m.description, applied.get(m.version)) for m in MIGRATIONS]


def upgrade_schema(conn: psycopg.Connection[Any], schema: str) -> list[int]:
    """Apply pending migrations in one transaction; the versions applied (empty when
    current). Safe to run from several processes at once."""
    ident = sql.Identifier(schema)
    applied: list[int] = []
    with conn.transaction():
        _advisory_lock(conn, schema)
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(ident))
        conn.execute(
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {}.spendgate_schema (version INTEGER PRIMARY KEY, "
                "description TEXT NOT NULL, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
            ).format(ident)
        )
        current = schema_version(conn, schema)
        if current > LATEST:
            raise RuntimeError(
                f"ledger schema {schema!r} is at version {current}, newer than this "
                f"spendgate understands ({LATEST}); upgrade spendgate"
            )
        quoted = ident.as_string(conn)
        for migration in MIGRATIONS:
            if migration.version <= current:
                continue
            for statement in migration.statements(quoted):
                conn.execute(statement.encode())
            conn.execute(
                sql.SQL(
                    "INSERT INTO {}.spendgate_schema (version, description) VALUES (%s, %s)"
                ).format(ident),
                [migration.version, migration.description],
            )
            applied.append(migration.version)
    if applied:
        log.info("ledger schema %s upgraded to version %d", schema, applied[-1])
    return applied


def connect_ledger_db(url: str) -> tuple[psycopg.Connection[Any], str]:
    """A plain autocommit connection and the schema a ledger URL names, for the CLI."""
    conninfo, schema = parse_postgres_url(url)
    conn = psycopg.connect(conninfo, autocommit=True)
    try:
        return conn, schema or _default_schema(conn)
    except BaseException:
        conn.close()
        raise


def _default_schema(conn: psycopg.Connection[Any]) -> str:
    """The schema unqualified names would go to: current_schema(), or — when the first
    search_path entry does not exist yet — that entry, so `options=-csearch_path=x` works."""
    row = conn.execute("SELECT current_schema()").fetchone()
    if row and row[0]:
        return str(row[0])
    path = conn.execute("SELECT current_setting('search_path')").fetchone()
    for entry in str(path[0] if path else "").split(","):
        entry = entry.strip().strip('"')
        if entry and entry != "$user":
            if not _SCHEMA_RE.match(entry):
                raise ValueError(f"unsupported schema name {entry!r} in search_path")
            return entry
    return "public"


def _fetch_all(query: bytes, params: list[Any], conn: psycopg.Connection[Any]) -> list[Any]:
    return conn.execute(query, params).fetchall()


def _grouped(dims: Sequence[str], aggregates: Sequence[str], source: str, where: str) -> str:
    keys = [("j.key" if d == "technique" else DIMENSION_SQL[d]) for d in dims]
    query = f"SELECT {', '.join([*keys, *aggregates])} FROM {source}{where}"
    if dims:
        query += " GROUP BY " + ", ".join(str(i + 1) for i in range(len(dims)))
    return query


def _outcomes_sql(source: str) -> str:
    """(cache, feature, model, `OUTCOME_AGGREGATES`…) rows over the events of `source`."""
    sums = ", ".join(_OUTCOMES[a] for a in OUTCOME_AGGREGATES)
    return (
        f'SELECT "cache", "feature", {DIMENSION_SQL["model"]}, {sums} '
        f"FROM {source} GROUP BY 1, 2, 3"
    )
