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

__all__ = ["choice_option", "fail", "settings_for"]

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
