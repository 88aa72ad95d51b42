"""SQLite files named by URL, opened the way every embedded store here opens them.

The key store, the dashboard sessions and the state store each keep a small SQLite file
(or `:memory:`); they open it in autocommit mode, usable from any thread (each store
serialises its own access), with the file's folder made first.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

__all__ = ["connect_sqlite", "sqlite_path"]


def sqlite_path(url: str) -> str:
    """`sqlite:///rel/path.db`, `sqlite:////abs/path.db` or a bare path → a filesystem path."""
    if url.startswith("sqlite:///"):
        return url[len("sqlite:///") :]
    if url.startswith("sqlite://"):
        return url[len("sqlite://") :]
    if "://" in url:
        raise ValueError(f"key store supports sqlite URLs only for now, got {url!r}")
    return url


def connect_sqlite(path: str) -> sqlite3.Connection:
    """An autocommit connection to `path` (`:memory:` too), its folder created if needed."""
    if path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    return sqlite3.connect(path, check_same_thread=False, isolation_level=None)
