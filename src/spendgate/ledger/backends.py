"""`open_ledger`: the `LedgerStore` backend a URL names (SQLite file, or PostgreSQL)."""

from __future__ import annotations

from spendgate.ledger.sqlite import SQLiteLedger
from spendgate.ledger.store import LedgerStore

__all__ = ["open_ledger"]


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
