"""`spendgate db upgrade | current | history`: the ledger's schema, managed explicitly.

Gateways upgrade the schema themselves when they open a ledger (under an advisory lock, so
replicas starting together are safe); these commands exist for deployments that run
migrations as a release step, or whose gateway role may not run DDL. `current` and
`history` only read.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

import click

from spendgate.config import ConfigError, Settings, load_settings

__all__ = ["commands", "db"]

T = TypeVar("T")


def _with_url(func: Callable[[str], None]) -> Callable[..., None]:
    """`func(url)` as a command taking `--ledger URL` or `--config` (whose storage.ledger
    it then reads)."""

    @functools.wraps(func)
    def command(config_path: str | None, ledger_url: str | None) -> None:
        func(_ledger_url(config_path, ledger_url))

    with_ledger = click.option("--ledger", "ledger_url", default=None, help="Ledger URL.")
    with_config = click.option(
        "--config", "config_path", type=click.Path(dir_okay=False), help="YAML settings."
    )
    return with_config(with_ledger(command))


def _fail(message: str, code: int = 1) -> NoReturn:
    click.echo(f"spendgate: {message}", err=True)
    sys.exit(code)


def _ledger_url(config_path: str | None, ledger_url: str | None) -> str:
    if ledger_url:
        return ledger_url
    try:
        settings = load_settings(config_path) if config_path else Settings()
    except ConfigError as exc:
        _fail(str(exc), 2)
    return settings.storage.ledger


def _is_postgres(url: str) -> bool:
    scheme = url.partition("://")[0].lower()
    return scheme in ("postgresql", "postgres") or scheme.startswith("postgresql+")


@click.group()
def db() -> None:
    """Ledger schema migrations (PostgreSQL; a SQLite ledger migrates itself on open)."""


def _on_postgres(
    url: str, doing: str, work: Callable[[Any, str], T], *errors: type[Exception]
) -> tuple[str, T]:
    """(schema, `work(connection, schema)`) on the PostgreSQL ledger `url` names; a failure
    ends the command with "cannot {doing} {url}: …"."""
    import psycopg

    from spendgate.ledger.postgres import connect_ledger_db

    caught: tuple[type[Exception], ...] = (psycopg.Error, ValueError, *errors)
    try:
        conn, schema = connect_ledger_db(url)
        with conn:
            return schema, work(conn, schema)
    except caught as exc:
        _fail(f"cannot {doing} {url}: {exc}")


@db.command()
@_with_url
def upgrade(url: str) -> None:
    """Bring the ledger schema to the latest version."""
    if not _is_postgres(url):
        from spendgate.ledger.backends import open_ledger
        from spendgate.ledger.sqlite import SCHEMA_VERSION

        try:
            open_ledger(url).close()
        except (OSError, ValueError, RuntimeError) as exc:
            _fail(f"cannot upgrade {url}: {exc}")
        click.echo(f"SQLite ledger at version {SCHEMA_VERSION}")
        return
    from spendgate.ledger.migrations import LATEST
    from spendgate.ledger.postgres import upgrade_schema

    schema, applied = _on_postgres(url, "upgrade", upgrade_schema, RuntimeError)
    done = f"applied {', '.join(map(str, applied))}" if applied else "nothing to do"
    click.echo(f"ledger schema {schema!r} at version {LATEST} ({done})")


@db.command()
@_with_url
def current(url: str) -> None:
    """Print the schema version the ledger is at (0: not created yet)."""
    if not _is_postgres(url):
        from spendgate.ledger.sqlite import SCHEMA_VERSION

        click.echo(f"SQLite ledger: version {SCHEMA_VERSION} (applied on open)")
        return
    from spendgate.ledger.postgres import schema_version

    schema, version = _on_postgres(url, "read", schema_version)
    click.echo(f"ledger schema {schema!r}: version {version}")


@db.command()
@_with_url
def history(url: str) -> None:
    """List every migration and when it was applied."""
    if not _is_postgres(url):
        _fail("history is kept for PostgreSQL ledgers only", 2)
    from spendgate.ledger.postgres import schema_history

    _, rows = _on_postgres(url, "read", schema_history)
    for version, description, applied_at in rows:
        when = applied_at.isoformat(timespec="seconds") if applied_at else "pending"
        click.echo(f"{version:>4}  {when:<25}  {description}")


commands = [db]
