"""Reading a YAML file the way every spendgate file is read: a missing or unreadable file
and a file that is not YAML each fail with the caller's own error, so a settings file and a
price file keep their own messages while the reading itself is written once."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

__all__ = ["load_yaml", "parse_yaml"]


def parse_yaml(text: str, invalid: Callable[[yaml.YAMLError], Exception]) -> Any:
    """`text` parsed (`None` for an empty document); `invalid(error)` is raised if it is not
    YAML (JSON is YAML, so a JSON file parses too)."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise invalid(exc) from None


def load_yaml(
    path: Path,
    *,
    unreadable: Callable[[OSError], Exception],
    invalid: Callable[[yaml.YAMLError], Exception],
) -> Any:
    """The YAML file at `path` parsed; `unreadable(error)` is raised if it cannot be read,
    `invalid(error)` if it is not YAML."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise unreadable(exc) from None
    return parse_yaml(text, invalid)
