"""Virtual keys: what a client presents instead of a provider key, and whose spend it is.

Only a SHA-256 of each key is stored; the key itself is shown once, at creation. A key
carries default tags (team, feature, …) so spend is attributed even when the client sends
no tag headers.
"""

from __future__ import annotations

import hashlib
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spendgate.call import Tags

__all__ = ["KeyRecord", "KeyStore", "hash_key", "new_key", "sqlite_path"]

KEY_PREFIX = "sk-sg-"


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


def sqlite_path(url: str) -> str:
    """`sqlite:///rel/path.db`, `sqlite:////abs/path.db` or a bare path → a filesystem path."""
    if url.startswith("sqlite:///"):
        return url[len("sqlite:///") :]
    if url.startswith("sqlite://"):
        return url[len("sqlite://") :]
    if "://" in url:
        raise ValueError(f"key store supports sqlite URLs only for now, got {url!r}")
    return url


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

    @property
    def tags(self) -> Tags:
        return Tags(
            feature=self.feature,
            use_case=self.use_case,
            team=self.team,
            tenant=self.tenant,
            user=self.user,
            key_id=self.id,
        )


_SCHEMA = """
CREATE TABLE IF NOT EXISTS virtual_keys (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    hash TEXT NOT NULL UNIQUE,
    team TEXT, feature TEXT, use_case TEXT, tenant TEXT, user TEXT,
    created_at REAL NOT NULL,
    revoked_at REAL
)
"""
_COLUMNS = "id, name, hash, team, feature, use_case, tenant, user, created_at, revoked_at"


class KeyStore:
    """Keys in SQLite, plus keys declared in YAML (by hash), looked up by hash."""

    def __init__(self, url: str, declared: Iterable[KeyRecord] = ()) -> None:
        path = sqlite_path(url)
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(_SCHEMA)
        self._lock = threading.Lock()
        self._declared = {k.hash: k for k in declared}

    def create(
        self,
        *,
        name: str | None = None,
        team: str | None = None,
        feature: str | None = None,
        use_case: str | None = None,
        tenant: str | None = None,
        user: str | None = None,
    ) -> tuple[str, KeyRecord]:
        """Make a key; returns (the key, shown only now; its record)."""
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
        )
        with self._lock:
            self._db.execute(
                f"INSERT INTO virtual_keys ({_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,NULL)",
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
                ),
            )
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
        return cur.rowcount > 0

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
    )
