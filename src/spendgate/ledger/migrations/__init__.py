"""Versioned schema migrations for the PostgreSQL ledger.

A small table of our own (`<schema>.spendgate_schema`) rather than alembic: the ledger is
one table family with hand-written DDL (declarative partitioning, which alembic's
autogenerate does not model anyway), every migration must run under the same advisory
lock the partition maker uses, and the store is psycopg-only — pulling in SQLAlchemy +
alembic for a dozen statements would double the install for no gain. Each migration is a
module `vNNN_<what>.py` exposing `VERSION`, `DESCRIPTION` and `statements(schema)`;
`MIGRATIONS` lists them in order. Never edit a released migration: add the next one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from spendgate.ledger.migrations import v001_events

__all__ = ["LATEST", "MIGRATIONS", "Migration"]


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    description: str
    statements: Callable[[str], list[str]]
    """Schema name (already quoted) → the DDL that brings version-1 to this version."""


MIGRATIONS: tuple[Migration, ...] = tuple(
    Migration(m.VERSION, m.DESCRIPTION, m.statements) for m in (v001_events,)
)

LATEST: int = MIGRATIONS[-1].version

assert [m.version for m in MIGRATIONS] == list(range(1, LATEST + 1)), "gap in migrations"
