"""`LedgerStore`, the contract every ledger backend meets, and `open_ledger` to pick one by URL.

The contract is small on purpose: append batches idempotently, answer grouped spend
queries, stream events back. Everything a PostgreSQL store needs is expressible in it
(`ON CONFLICT (request_id) DO NOTHING`, `GROUP BY`, keyset pagination).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from typing import Protocol, runtime_checkable

from spendgate.ledger.event import UsageEvent
from spendgate.ledger.spend import SpendRow
from spendgate.ledger.sqlite import SQLiteLedger

__all__ = ["LedgerStore", "open_ledger"]


@runtime_checkable
class LedgerStore(Protocol):
    def write_batch(self, events: Sequence[UsageEvent]) -> None:
        """Store all of `events` atomically. Must be idempotent per request_id: the writer
        re-sends a batch whose outcome it could not see."""
        ...

    def spend(
        self,
        by: Sequence[str],
        since: datetime | None = None,
        until: datetime | None = None,
        filters: Mapping[str, str] | None = None,
    ) -> list[SpendRow]:
        """Totals per group of `by` (names from `DIMENSIONS`) over [since, until),
        most costly first; `filters` maps a dimension to the one value to keep."""
        ...

    def count(self) -> int: ...

    def events(
        self,
        limit: int | None = None,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        filters: Mapping[str, str] | None = None,
    ) -> Iterator[UsageEvent]: ...

    def close(self) -> None: ...


def open_ledger(url: str, *, create: bool = True, read_only: bool = False) -> LedgerStore:
    """The store a URL names. `sqlite:///rel/path.db`, `sqlite:////abs/path.db` (SQLAlchemy's
    convention), `sqlite:///:memory:`, a bare path, or `postgresql://…[?schema=NAME]`
    (`PostgresLedger`, for many replicas). `create=False` refuses to conjure an
    empty ledger at a mistyped path (what a report wants). `read_only=True` (reports, CLI
    reads) leaves a SQLite ledger's upkeep — folding rollups, checkpoints — to the process
    that writes it; PostgreSQL has none to leave."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return SQLiteLedger(url, create=create, read_only=read_only)
    scheme = scheme.lower()
    if scheme == "sqlite":
        if rest in ("", "/", "/:memory:"):
            return SQLiteLedger(":memory:")
        if not rest.startswith("/"):
            raise ValueError(
                f"bad SQLite URL {url!r}: use sqlite:///relative.db or sqlite:////absolute.db"
            )
        if "?" in rest:
            raise ValueError(f"SQLite ledger URLs take no query parameters: {url!r}")
        return SQLiteLedger(rest[1:], create=create, read_only=read_only)
    if scheme in ("postgresql", "postgres") or scheme.startswith("postgresql+"):
        # Imported here: only deployments that use PostgreSQL pay for loading psycopg.
        from spendgate.ledger.postgres import PostgresLedger

        return PostgresLedger(url, create=create)
    raise ValueError(
        f"unsupported ledger URL scheme {scheme!r} in {url!r}; use sqlite:/// or postgresql://"
    )
