"""Dynamic rules (made by `spendgate budgets set` or the admin API), persisted so every
gateway sees them: in SQLite for one machine (a table in the key store's file by default),
in Redis for replicas (one hash). YAML rules are not stored here; they are read-only.

The store is synchronous (the CLI uses it directly); gateways re-read it off the event loop.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from typing import Any, Protocol

import orjson
from pydantic import TypeAdapter

from spendgate.budgets.config import BudgetRule, RateLimitRule, Rule

__all__ = [
    "DefinitionStore",
    "RedisDefinitions",
    "SQLiteDefinitions",
    "open_definitions",
    "rule_from_json",
    "rule_to_json",
]

_RULE = TypeAdapter(BudgetRule | RateLimitRule)


def rule_to_json(rule: Rule) -> dict[str, Any]:
    return {"kind": rule.kind, **rule.model_dump(mode="json", exclude_none=True)}


def rule_from_json(data: dict[str, Any]) -> Rule:
    """A rule from its JSON form; `kind` (budget | limit) picks the model, else the fields do."""
    data = dict(data)
    kind = data.pop("kind", None)
    if kind == "budget":
        return BudgetRule.model_validate(data)
    if kind == "limit":
        return RateLimitRule.model_validate(data)
    if kind is not None:
        raise ValueError(f"unknown rule kind {kind!r}; use budget or limit")
    if "limit_usd" in data:
        return BudgetRule.model_validate(data)
    return RateLimitRule.model_validate(data)


class DefinitionStore(Protocol):
    url: str

    def all(self) -> list[Rule]: ...

    def put(self, rule: Rule) -> None: ...

    def delete(self, name: str) -> bool: ...

    def close(self) -> None: ...


_SCHEMA = """
CREATE TABLE IF NOT EXISTS spendgate_budget_rules (
    name TEXT PRIMARY KEY,
    rule TEXT NOT NULL,
    updated_at REAL NOT NULL
)
"""


class SQLiteDefinitions:
    def __init__(self, path: str) -> None:
        self.url = f"sqlite:///{path}"
        self._conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._conn.execute("PRAGMA busy_timeout = 5000")
        self._conn.execute(_SCHEMA)
        self._lock = threading.Lock()

    def all(self) -> list[Rule]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT rule FROM spendgate_budget_rules ORDER BY name"
            ).fetchall()
        return [rule_from_json(orjson.loads(r[0])) for r in rows]

    def put(self, rule: Rule) -> None:
        with self._lock:
            self._conn.execute(
                "INSERT INTO spendgate_budget_rules (name, rule, updated_at) VALUES (?, ?, ?) "
                "ON CONFLICT(name) DO UPDATE SET rule = excluded.rule, "
                "updated_at = excluded.updated_at",
                (rule.name, orjson.dumps(rule_to_json(rule)).decode(), time.time()),
            )

    def delete(self, name: str) -> bool:
        with self._lock:
            cur = self._conn.execute("DELETE FROM spendgate_budget_rules WHERE name = ?", (name,))
        return cur.rowcount > 0

    def close(self) -> None:
        self._conn.close()


class RedisDefinitions:
    def __init__(self, url: str, prefix: str, timeout_s: float = 0.5) -> None:
        import redis

        self.url = url
        self.key = prefix + "rules"
        self._client = redis.Redis.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s, decode_responses=True
        )

    def all(self) -> list[Rule]:
        raw: Any = self._client.hgetall(self.key)
        return [rule_from_json(orjson.loads(raw[name])) for name in sorted(raw)]

    def put(self, rule: Rule) -> None:
        self._client.hset(self.key, rule.name, orjson.dumps(rule_to_json(rule)).decode())

    def delete(self, name: str) -> bool:
        return bool(self._client.hdel(self.key, name))

    def close(self) -> None:
        self._client.close()


def open_definitions(
    url: str, prefix: str = "spendgate:", timeout_s: float = 0.5
) -> DefinitionStore:
    """The definition store a URL names (`sqlite:///path`, `redis://…`)."""
    if url.startswith(("redis://", "rediss://", "unix://")):
        return RedisDefinitions(url, prefix, timeout_s)
    from spendgate.sqlite_files import sqlite_path

    path = sqlite_path(url)
    if path in ("", "/:memory:"):
        path = ":memory:"
    return SQLiteDefinitions(path)
