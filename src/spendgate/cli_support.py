"""What every `spendgate …` command shares: how it fails, and which settings it reads.

A leaf of the CLI: the main group (`spendgate.cli`) and each package's commands import it,
so no package's commands need the main group (which imports them to register them).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click

from spendgate.config import ConfigError, Settings, load_settings

__all__ = [
    "choice_option",
    "config_option",
    "fail",
    "json_option",
    "ledger_option",
    "settings_for",
    "window_options",
]

F = TypeVar("F", bound=Callable[..., Any])


def fail(message: str, code: int = 2) -> NoReturn:
    """`spendgate: message` on stderr, then exit with `code` (2: bad usage or settings)."""
    click.echo(f"spendgate: {message}", err=True)
    sys.exit(code)


def settings_for(config_path: str | None) -> Settings:
    """`--config`'s settings, else `./spendgate.yaml`'s, else the defaults; a file that does
    not validate ends the command with its error."""
    try:
        if config_path:
            return load_settings(config_path)
        default = Path("spendgate.yaml")
        return load_settings(default) if default.exists() else Settings()
    except ConfigError as exc:
        fail(str(exc))


def choice_option(
    *decls: str, choices: Sequence[str], default: str, help: str | None = None
) -> Callable[[F], F]:
    """An option taking one of `choices`, its default shown in `--help`."""
    return click.option(
        *decls, type=click.Choice(list(choices)), default=default, show_default=True, help=help
    )


def config_option(help: str | None = None) -> Callable[[F], F]:
    """`--config PATH` (as `config_path`): the settings file, read with `settings_for`."""
    return click.option("--config", "config_path", type=click.Path(dir_okay=False), help=help)


def ledger_option() -> Callable[[F], F]:
    """`--ledger URL` (as `ledger_url`): the ledger to read, else the one the settings name."""
    return click.option(
        "--ledger", "ledger_url", default=None, help="Ledger URL (default from config)."
    )


def json_option(help: str | None = None) -> Callable[[F], F]:
    """`--json` (as `as_json`): print the result as JSON instead of text."""
    return click.option("--json", "as_json", is_flag=True, help=help)


def window_options(f: F) -> F:
    """`--since` and `--until`: the time window a report covers."""
    f = click.option("--until", default=None)(f)
    return click.option("--since", default=None, help="ISO date/time or relative (7d, 24h).")(f)
