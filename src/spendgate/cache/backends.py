"""Where exact-cache entries live: an in-process LRU bounded in bytes, the same LRU in front
of a SQLite file (survives restarts), or Redis (shared by replicas).

Values are opaque bytes with a TTL. Every backend drops an expired entry on read, so TTL
holds even between sweeps. Reads from SQLite are local and sub-millisecond, so they run
inline; writes go to a worker thread, never on the request's critical path.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections import OrderedDict
from typing import Any, Protocol

from spendgate.cache.redis_client import LoopRedis

__all__ = [
    "ENTRY_OVERHEAD",
    "Backend",
    "MemoryLRU",
    "RedisBackend",
    "SQLiteBackend",
    "open_backend",
]

ENTRY_OVERHEAD = 200
"""Bytes an entry costs beyond its key and value (the key's str header, the value's bytes
header, the (value, expiry) tuple and float, its dict slot), so `max_bytes` bounds real memory."""


class Backend(Protocol):
    async def get(self, key: str) -> bytes | None: ...

    async def set(self, key: str, value: bytes, ttl_s: float) -> None: ...

    async def delete(self, key: str) -> None: ...

    async def aclose(self) -> None: ...


class MemoryLRU:
    """Least-recently-used entries go first once the stored bytes exceed `max_bytes`."""

    def __init__(self, max_bytes: int, clock: Any = time.time) -> None:
        self.max_bytes = max_bytes
        self.clock = clock
        self._data: OrderedDict[str, tuple[bytes, float]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.evictions = 0

    @property
    def size_bytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._data)

    def get_now(self, key: str) -> bytes | None:
        with self._lock:
            item = self._data.get(key)
            if item is None:
                return None
            value, expires = item
            if expires <= self.clock():
                self._drop(key)
                return None
            self._data.move_to_end(key)
            return value

    def set_now(self, key: str, value: bytes, expires: float) -> None:
        # orjson hands back bytes in a 4 KiB block however short the JSON: an LRU of
        # 300-byte answers held 12x its byte budget until each value was copied to size.
        value = bytes(memoryview(value))
        cost = len(value) + len(key) + ENTRY_OVERHEAD
        if cost > self.max_bytes:
            return
        with self._lock:
            if key in self._data:
                self._drop(key)
            self._data[key] = (value, expires)
            self._bytes += cost
            while self._bytes > self.max_bytes and self._data:
                oldest = next(iter(self._data))
                self._drop(oldest)
                self.evictions += 1

    def _drop(self, key: str) -> None:
        value, _ = self._data.pop(key)
        self._bytes -= len(value) + len(key) + ENTRY_OVERHEAD

    async def get(self, key: str) -> bytes | None:
        return self.get_now(key)

    async def set(self, key: str, value: bytes, ttl_s: float) -> None:
        self.set_now(key, value, self.clock() + ttl_s)

    async def delete(self, key: str) -> None:
        with self._lock:
            if key in self._data:
                self._drop(key)

    async def aclose(self) -> None:
        return None


class SQLiteBackend:
    """A SQLite file behind the in-process LRU: hits come from memory; a restart keeps
    the entries."""

    def __init__(self, path: str, max_bytes: int, clock: Any = time.time) -> None:
        self.path = path
        self.clock = clock
        self.lru = MemoryLRU(max_bytes, clock)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS cache_entries "
            "(key TEXT PRIMARY KEY, value BLOB NOT NULL, expires REAL NOT NULL)"
        )

    async def get(self, key: str) -> bytes | None:
        hit = self.lru.get_now(key)
        if hit is not None:
            return hit
        with self._lock:
            row = self._db.execute(
                "SELECT value, expires FROM cache_entries WHERE key = ?", (key,)
            ).fetchone()
        if row is None:
            return None
        value, expires = bytes(row[0]), float(row[1])
        if expires <= self.clock():
            await asyncio.to_thread(self._delete, key)
            return None
        self.lru.set_now(key, value, expires)
        return value

    def _write(self, key: str, value: bytes, expires: float) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO cache_entries (key, value, expires) VALUES (?, ?, ?)",
                (key, value, expires),
            )
            if hash(key) % 64 == 0:  # an occasional sweep keeps the file from growing forever
                self._db.execute("DELETE FROM cache_entries WHERE expires <= ?", (self.clock(),))

    def _delete(self, key: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM cache_entries WHERE key = ?", (key,))

    async def set(self, key: str, value: bytes, ttl_s: float) -> None:
        expires = self.clock() + ttl_s
        self.lru.set_now(key, value, expires)
        await asyncio.to_thread(self._write, key, value, expires)

    async def delete(self, key: str) -> None:
        await self.lru.delete(key)
        await asyncio.to_thread(self._delete, key)

    async def aclose(self) -> None:
        with self._lock:
            self._db.close()


class RedisBackend:
    """Entries in Redis under `prefix`, with Redis's own expiry (shared by all replicas)."""

    def __init__(self, url: str, prefix: str) -> None:
        self.url = url
        self.prefix = prefix
        self._redis = LoopRedis(url)

    async def get(self, key: str) -> bytes | None:
        value = await self._redis().get(self.prefix + key)
        return bytes(value) if value is not None else None

    async def set(self, key: str, value: bytes, ttl_s: float) -> None:
        await self._redis().set(self.prefix + key, value, px=max(1, int(ttl_s * 1000)))

    async def delete(self, key: str) -> None:
        await self._redis().delete(self.prefix + key)

    async def aclose(self) -> None:
        await self._redis.aclose()


def open_backend(url: str, *, max_bytes: int, prefix: str) -> Backend:
    """`memory`, `sqlite:///path`, or `redis://…` → a backend."""
    if url in ("memory", "memory://"):
        return MemoryLRU(max_bytes)
    if url.startswith("sqlite:///"):
        return SQLiteBackend(url[len("sqlite:///") :], max_bytes)
    if url.startswith(("redis://", "rediss://", "unix://")):
        return RedisBackend(url, prefix)
    raise ValueError(f"cache.backend: unsupported URL {url!r} (memory, sqlite:///…, redis://…)")
