"""One table of small records with an owner, a status and an expiry, in SQLite (one
machine) or PostgreSQL (replicas).

Why one generic table rather than one per feature: stored Responses, passed-through batches
and files, and deferred calls all need the same four things — find by id, check the owner
(a tenant must never read another's), expire, and move a status forward exactly once when
replicas race (`advance`, a compare-and-set). They live next to the ledger: the same
PostgreSQL database, or a `-state` SQLite file beside the ledger's (a separate file, so these
writes never queue behind the ledger writer's transactions).

Calls are synchronous and short; the async callers run them in a worker thread.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from spendgate.sqlite_files import connect_sqlite

__all__ = ["Record", "StateStore", "open_state", "owner_of", "state_url"]

_COLUMNS = "kind, id, owner, status, created, updated, expires, value"


@dataclass(frozen=True, slots=True)
class Record:
    kind: str
    id: str
    owner: str
    status: str
    created: float
    updated: float
    expires: float | None
    value: bytes


def owner_of(tags: Any) -> str:
    """Who owns what a call stores (a Response, a batch, a deferred call): its tenant, else
    its virtual key, else nobody in particular (a gateway without keys keeps no boundary)."""
    if tags.tenant:
        return "t:" + tags.tenant
    if tags.key_id:
        return "k:" + tags.key_id
    return "-"


def state_url(ledger_url: str, configured: str | None = None) -> str:
    """Where state lives: `storage.state` when set, else beside the ledger."""
    if configured:
        return configured
    scheme, sep, rest = ledger_url.partition("://")
    if not sep:
        return _beside(ledger_url)
    if scheme.lower() == "sqlite":
        if rest in ("", "/", "/:memory:"):
            return "sqlite:///:memory:"
        return "sqlite:///" + _beside(rest[1:])
    return ledger_url


def _beside(path: str) -> str:
    p = Path(path)
    return str(p.with_name(p.stem + "-state" + (p.suffix or ".db")))


def open_state(url: str) -> StateStore:
    scheme, sep, rest = url.partition("://")
    if not sep:
        return StateStore(_SQLite(url))
    scheme = scheme.lower()
    if scheme == "sqlite":
        path = ":memory:" if rest in ("", "/", "/:memory:") else rest[1:]
        return StateStore(_SQLite(path))
    if scheme in ("postgresql", "postgres") or scheme.startswith("postgresql+"):
        return StateStore(_Postgres(url))
    raise ValueError(f"storage.state: unsupported URL {url!r} (sqlite:/// or postgresql://)")


class _SQLite:
    marker = "?"

    def __init__(self, path: str) -> None:
        self.conn = connect_sqlite(path)
        self.conn.execute("PRAGMA busy_timeout = 5000")
        if path != ":memory:":
            self.conn.execute("PRAGMA journal_mode = WAL")
            self.conn.execute("PRAGMA synchronous = NORMAL")
        self.conn.execute(
            "CREATE TABLE IF NOT EXISTS spendgate_state (kind TEXT NOT NULL, id TEXT NOT NULL, "
            "owner TEXT NOT NULL, status TEXT NOT NULL, created REAL NOT NULL, "
            "updated REAL NOT NULL, expires REAL, value BLOB NOT NULL, PRIMARY KEY (kind, id))"
        )
        self.conn.execute(
            "CREATE INDEX IF NOT EXISTS spendgate_state_status ON spendgate_state (kind, status)"
        )

    def execute(self, sql: str, args: tuple[Any, ...]) -> tuple[list[tuple[Any, ...]], int]:
        cur = self.conn.execute(sql, args)
        return cur.fetchall(), cur.rowcount

    def execute_many(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        self.conn.execute("BEGIN")
        try:
            self.conn.executemany(sql, rows)
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    def close(self) -> None:
        self.conn.close()


class _Postgres:
    """Connects on first use (and again after a failure), so a gateway starts and serves
    chat while PostgreSQL is away; only what needs state fails meanwhile. The table lives in
    the ledger URL's `?schema=` when it names one."""

    marker = "%s"

    def __init__(self, url: str) -> None:
        base, _, query = url.partition("?")
        self.url = base
        schema = parse_qs(query).get("schema", [""])[0]
        if schema and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,62}", schema):
            raise ValueError(f"storage.state: bad schema name {schema!r}")
        self.schema = schema
        self.table = f'"{schema}".spendgate_state' if schema else "spendgate_state"
        self.conn: Any = None

    def _connect(self) -> Any:
        import psycopg

        if self.conn is not None and not self.conn.closed:
            return self.conn
        conn = psycopg.connect(self.url, autocommit=True, connect_timeout=5)
        if self.schema:
            conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"')
        conn.execute(
            f"CREATE TABLE IF NOT EXISTS {self.table} (kind TEXT NOT NULL, id TEXT NOT NULL, "
            "owner TEXT NOT NULL, status TEXT NOT NULL, created DOUBLE PRECISION NOT NULL, "
            "updated DOUBLE PRECISION NOT NULL, expires DOUBLE PRECISION, value BYTEA NOT NULL, "
            "PRIMARY KEY (kind, id))"
        )
        conn.execute(
            f"CREATE INDEX IF NOT EXISTS spendgate_state_status ON {self.table} (kind, status)"
        )
        self.conn = conn
        return conn

    def _sql(self, sql: str) -> str:
        return sql.replace("?", "%s").replace("spendgate_state", self.table)

    def execute(self, sql: str, args: tuple[Any, ...]) -> tuple[list[tuple[Any, ...]], int]:
        import psycopg

        try:
            cur = self._connect().execute(self._sql(sql), args)
            rows = cur.fetchall() if cur.description is not None else []
        except psycopg.OperationalError:
            self.close()
            raise
        return [tuple(r) for r in rows], cur.rowcount

    def execute_many(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        import psycopg

        conn = self._connect()
        try:
            with conn.transaction(), conn.cursor() as cur:
                cur.executemany(self._sql(sql), rows)
        except psycopg.OperationalError:
            self.close()
            raise

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


class StateStore:
    """Records by (kind, id). An expired record reads as absent and is swept later."""

    def __init__(self, backend: _SQLite | _Postgres, clock: Any = time.time) -> None:
        self._db = backend
        self._lock = threading.Lock()
        self.clock = clock

    def _run(self, sql: str, *args: Any) -> tuple[list[tuple[Any, ...]], int]:
        with self._lock:
            return self._db.execute(sql, args)

    def put(
        self,
        kind: str,
        id: str,
        owner: str,
        value: bytes,
        *,
        ttl_s: float | None = None,
        status: str = "",
    ) -> None:
        now = self.clock()
        expires = now + ttl_s if ttl_s is not None else None
        self._run(
            f"INSERT INTO spendgate_state ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (kind, id) DO UPDATE SET owner = excluded.owner, "
            "status = excluded.status, updated = excluded.updated, "
            "expires = excluded.expires, value = excluded.value",
            kind, id, owner, status, now, now, expires, value,
        )  # fmt: skip

    def put_many(self, kind: str, rows: list[tuple[str, str, bytes, float | None]]) -> None:
        """Several `(id, owner, value, ttl_s)` records of one kind in one transaction (status
        empty): what a busy gateway writes its stored Responses with."""
        now = self.clock()
        args = [
            (kind, id, owner, "", now, now, now + ttl if ttl is not None else None, value)
            for id, owner, value, ttl in rows
        ]
        sql = (
            f"INSERT INTO spendgate_state ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (kind, id) DO UPDATE SET owner = excluded.owner, "
            "status = excluded.status, updated = excluded.updated, "
            "expires = excluded.expires, value = excluded.value"
        )
        with self._lock:
            self._db.execute_many(sql, args)

    def get(self, kind: str, id: str) -> Record | None:
        rows, _ = self._run(
            f"SELECT {_COLUMNS} FROM spendgate_state WHERE kind = ? AND id = ?", kind, id
        )
        if not rows:
            return None
        record = _record(rows[0])
        if record.expires is not None and record.expires <= self.clock():
            return None
        return record

    def delete(self, kind: str, id: str) -> bool:
        _, count = self._run("DELETE FROM spendgate_state WHERE kind = ? AND id = ?", kind, id)
        return count > 0

    def list(
        self,
        kind: str,
        *,
        statuses: Iterable[str] | None = None,
        owner: str | None = None,
        limit: int = 1000,
    ) -> list[Record]:
        """Unexpired records of a kind, oldest first."""
        sql = f"SELECT {_COLUMNS} FROM spendgate_state WHERE kind = ?"
        args: list[Any] = [kind]
        wanted = list(statuses) if statuses is not None else None
        if wanted is not None:
            sql += " AND status IN (" + ", ".join("?" for _ in wanted) + ")"
            args += wanted
        if owner is not None:
            sql += " AND owner = ?"
            args.append(owner)
        sql += " AND (expires IS NULL OR expires > ?) ORDER BY created, id LIMIT ?"
        args += [self.clock(), limit]
        rows, _ = self._run(sql, *args)
        return [_record(r) for r in rows]

    def advance(
        self,
        kind: str,
        id: str,
        expected: Iterable[str],
        status: str,
        *,
        value: bytes | None = None,
        older_than: float | None = None,
    ) -> bool:
        """Move a record to `status` if it is in one of `expected` (and, with `older_than`,
        was last updated before that time): True for the one caller that won."""
        wanted = list(expected)
        sql = "UPDATE spendgate_state SET status = ?, updated = ?"
        args: list[Any] = [status, self.clock()]
        if value is not None:
            sql += ", value = ?"
            args.append(value)
        sql += " WHERE kind = ? AND id = ? AND status IN (" + ", ".join("?" for _ in wanted) + ")"
        args += [kind, id, *wanted]
        if older_than is not None:
            sql += " AND updated < ?"
            args.append(older_than)
        _, count = self._run(sql, *args)
        return count > 0

    def update(self, kind: str, id: str, value: bytes) -> None:
        self._run(
            "UPDATE spendgate_state SET value = ?, updated = ? WHERE kind = ? AND id = ?",
            value, self.clock(), kind, id,
        )  # fmt: skip

    def sweep(self) -> int:
        """Delete expired records; returns how many."""
        _, count = self._run(
            "DELETE FROM spendgate_state WHERE expires IS NOT NULL AND expires <= ?", self.clock()
        )
        return max(count, 0)

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _record(row: tuple[Any, ...]) -> Record:
    kind, id, owner, status, created, updated, expires, value = row
    return Record(kind, id, owner, status, float(created), float(updated),
                  float(expires) if expires is not None else None, bytes(value))  # fmt: skip
