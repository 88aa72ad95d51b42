"""Virtual keys: what a client presents instead of a provider key, and whose spend it is.

Only a SHA-256 of each key is stored; the key itself is shown once, at creation. A key
carries default tags (team, feature, …) so spend is attributed even when the client sends
no tag headers.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from spendgate.call import TAG_NAMES, Tags
from spendgate.sqlite_files import connect_sqlite, sqlite_path

__all__ = ["KeyRecord", "KeyStore", "hash_key", "new_key", "sqlite_path"]

KEY_PREFIX = "sk-sg-"


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class KeyRecord:
    id: str
    name: str
    hash: str
    team: str | None = None
    feature: str | None = None
    use_case: str | None = None
    tenant: str | None = None
    user: str | None = None
    created_at: float = 0.0
    revoked: bool = False
    may_set_tenant: bool = False
    """May this key's requests name their tenant (header or `metadata.tenant`)? Only for a
    trusted backend that serves many tenants through one key: a tenant scopes cache entries
    and budgets, so a key that could name any tenant could read another tenant's cached
    answers and book spend to it. A key that names a `tenant` fixes it instead."""

    @property
    def tags(self) -> Tags:
        return Tags(**{name: getattr(self, name) for name in TAG_NAMES}, key_id=self.id)


_SCHEMA = """
CREATE TABLE IF NOT EXISTS virtual_keys (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    hash TEXT NOT NULL UNIQUE,
    team TEXT, feature TEXT, use_case TEXT, tenant TEXT, user TEXT,
    created_at REAL NOT NULL,
    revoked_at REAL,
    may_set_tenant INTEGER NOT NULL DEFAULT 0
)
"""
_COLUMNS = (
    "id, name, hash, team, feature, use_case, tenant, user, created_at, revoked_at, may_set_tenant"
)


class KeyStore:
    """Keys in SQLite, plus keys declared in YAML (by hash), looked up by hash."""

    def __init__(self, url: str, declared: Iterable[KeyRecord] = ()) -> None:
        self._db = connect_sqlite(sqlite_path(url))
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(_SCHEMA)
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(virtual_keys)")}
        if "may_set_tenant" not in columns:  # a key file from before tenant policy
            self._db.execute(
                "ALTER TABLE virtual_keys ADD COLUMN may_set_tenant INTEGER NOT NULL DEFAULT 0"
            )
        self._lock = threading.Lock()
        self._declared = {k.hash: k for k in declared}
        self._own_writes = 0

    def create(
        self,
        *,
        name: str | None = None,
        team: str | None = None,
        feature: str | None = None,
        use_case: str | None = None,
        tenant: str | None = None,
        user: str | None = None,
        may_set_tenant: bool = False,
    ) -> tuple[str, KeyRecord]:
        """Make a key; returns (the key, shown only now; its record)."""
        if tenant and may_set_tenant:
            raise ValueError("a key that names a tenant fixes it; it cannot also set tenants")
        key = new_key()
        record = KeyRecord(
            id="key_" + secrets.token_hex(6),
            name=name or team or "key",
            hash=hash_key(key),
            team=team,
            feature=feature,
            use_case=use_case,
            tenant=tenant,
            user=user,
            created_at=time.time(),
            may_set_tenant=may_set_tenant,
        )
        with self._lock:
            self._db.execute(
                f"INSERT INTO virtual_keys ({_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,NULL,?)",
                (
                    record.id,
                    record.name,
                    record.hash,
                    team,
                    feature,
                    use_case,
                    tenant,
                    user,
                    record.created_at,
                    int(may_set_tenant),
                ),
            )
            self._own_writes += 1
        return key, record

    def lookup(self, key: str) -> KeyRecord | None:
        digest = hash_key(key)
        declared = self._declared.get(digest)
        if declared is not None:
            return declared
        with self._lock:
            row = self._db.execute(
                f"SELECT {_COLUMNS} FROM virtual_keys WHERE hash = ? AND revoked_at IS NULL",
                (digest,),
            ).fetchone()
        return _record(row) if row else None

    def list(self, *, include_revoked: bool = False) -> list[KeyRecord]:
        sql = f"SELECT {_COLUMNS} FROM virtual_keys"
        if not include_revoked:
            sql += " WHERE revoked_at IS NULL"
        with self._lock:
            rows = self._db.execute(sql + " ORDER BY created_at").fetchall()
        return list(self._declared.values()) + [_record(r) for r in rows]

    def revoke(self, key_id: str) -> bool:
        with self._lock:
            cur = self._db.execute(
                "UPDATE virtual_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
                (time.time(), key_id),
            )
            self._own_writes += 1
        return cur.rowcount > 0

    def revision(self) -> tuple[int, int]:
        """Changes whenever a key is created or revoked, here or by another process (the CLI,
        another replica on the same file): SQLite's `data_version` moves on every commit made
        through another connection. A gateway polls this (cheap: no table read) to drop its
        key cache, so a revocation takes effect within the poll interval, not a cache TTL."""
        with self._lock:
            row = self._db.execute("PRAGMA data_version").fetchone()
        return int(row[0]), self._own_writes

    def any(self) -> bool:
        if self._declared:
            return True
        with self._lock:
            row = self._db.execute(
                "SELECT 1 FROM virtual_keys WHERE revoked_at IS NULL LIMIT 1"
            ).fetchone()
        return row is not None

    def close(self) -> None:
        self._db.close()


def _record(row: tuple[Any, ...]) -> KeyRecord:
    return KeyRecord(
        id=row[0],
        name=row[1],
        hash=row[2],
        team=row[3],
        feature=row[4],
        use_case=row[5],
        tenant=row[6],
        user=row[7],
        created_at=row[8],
        revoked=row[9] is not None,
        may_set_tenant=bool(row[10]),
    )
