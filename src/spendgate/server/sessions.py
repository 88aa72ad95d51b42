"""Dashboard login sessions: random, server-side, expiring, revocable.

A browser can't send the admin key as a header on a page load, so it trades the key for a
session once (the login form or `?key=`). The cookie holds a random token; only its SHA-256
is stored, next to an expiry and a fingerprint of the admin key it was issued under. So:

- every login gets a new token (a captured cookie is not a permanent credential);
- logout revokes the token on the server, on every replica sharing the key store;
- rotating the admin key ends every session (the fingerprint no longer matches);
- a session opens the dashboard only, never the admin API (its cookie's path is
  `/dashboard`, and the admin API accepts only the key as a header), so a cross-site form
  cannot spend a session on an admin write.

Sessions live in the key store's SQLite file, which replicas on one host already share.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from dataclasses import dataclass

from spendgate.sqlite_files import connect_sqlite, sqlite_path

__all__ = ["SESSION_SECONDS", "Session", "SessionStore"]

SESSION_SECONDS = 12 * 3600
"""A session ends 12 hours after login, whatever happens in between."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS dashboard_sessions (
    token_hash TEXT PRIMARY KEY,
    key_fingerprint TEXT NOT NULL,
    created_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    revoked_at REAL
)
"""


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def key_fingerprint(admin_key: str) -> str:
    return _digest("spendgate-admin-key:" + admin_key)


@dataclass(frozen=True, slots=True)
class Session:
    token: str
    """The cookie value; never stored."""
    expires_at: float


class SessionStore:
    def __init__(self, url: str, *, lifetime: float = SESSION_SECONDS) -> None:
        self._db = connect_sqlite(sqlite_path(url))
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.execute(_SCHEMA)
        self._lock = threading.Lock()
        self.lifetime = lifetime

    def create(self, admin_key: str) -> Session:
        now = time.time()
        session = Session(
            token=secrets.token_urlsafe(32),
            expires_at=now + self.lifetime,
        )
        with self._lock:
            # Sweep the ended ones here: logins are rare, so the table stays small.
            self._db.execute(
                "DELETE FROM dashboard_sessions WHERE expires_at < ? OR revoked_at IS NOT NULL",
                (now,),
            )
            self._db.execute(
                "INSERT INTO dashboard_sessions VALUES (?, ?, ?, ?, NULL)",
                (_digest(session.token), key_fingerprint(admin_key), now, session.expires_at),
            )
        return session

    def check(self, token: str | None, admin_key: str) -> Session | None:
        """The live session for this cookie under the current admin key, else None."""
        if not token or len(token) > 256:
            return None
        with self._lock:
            row = self._db.execute(
                "SELECT key_fingerprint, expires_at FROM dashboard_sessions "
                "WHERE token_hash = ? AND revoked_at IS NULL",
                (_digest(token),),
            ).fetchone()
        if row is None or row[1] <= time.time():
            return None
        if not secrets.compare_digest(row[0], key_fingerprint(admin_key)):
            return None
        return Session(token=token, expires_at=row[1])

    def revoke(self, token: str | None) -> bool:
        if not token or len(token) > 256:
            return False
        with self._lock:
            cur = self._db.execute(
                "UPDATE dashboard_sessions SET revoked_at = ? "
                "WHERE token_hash = ? AND revoked_at IS NULL",
                (time.time(), _digest(token)),
            )
        return cur.rowcount > 0

    def close(self) -> None:
        self._db.close()
