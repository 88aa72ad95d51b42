"""Reading attribution tags from a request, and keeping their cardinality bounded.

Precedence: `x-spendgate-*` headers, then the body (`metadata.{feature,…}`, OpenAI's `user`,
Anthropic's `metadata.user_id`), then the virtual key's defaults — except `team`, which a
key that names a team fixes: a team's budget must not be dodged by sending another team's
header.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping
from typing import Any

from spendgate.call import TAG_NAMES, Tags
from spendgate.errors import GatewayError

__all__ = ["OVERFLOW", "TagGuard", "read_tags"]

OVERFLOW = "(other)"
_VALID = re.compile(r"^[\w.:@/+\-= ]{1,128}$")
_HEADER = {name: "x-spendgate-" + name.replace("_", "-") for name in TAG_NAMES}


def _check(name: str, value: Any, where: str) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str) or not _VALID.match(value):
        raise GatewayError(
            400,
            f"tag {name!r} from {where} must be 1–128 characters of letters, digits, spaces "
            f"and . _ : @ / + - =",
            param=where,
            code="invalid_tag",
        )
    return value


def read_tags(headers: Mapping[str, str], body: dict[str, Any], defaults: Tags) -> Tags:
    meta = body.get("metadata") if isinstance(body.get("metadata"), dict) else {}
    assert isinstance(meta, dict)
    values: dict[str, str | None] = {}
    for name in TAG_NAMES:
        header = _HEADER[name]
        value = _check(name, headers.get(header), header)
        if value is None and name in meta:
            value = _check(name, meta.get(name), f"metadata.{name}")
        values[name] = value
    if values["user"] is None:
        user = body.get("user")
        if user is None and "user_id" in meta:
            user = meta.get("user_id")
        values["user"] = _check("user", user, "user")
    tags = Tags(**values, key_id=defaults.key_id).merged_over(defaults)
    if defaults.team and tags.team != defaults.team:
        tags = Tags(**{**tags.as_dict(), "team": defaults.team})
    return tags


class TagGuard:
    """Caps distinct values per tag per process; values past the cap become `(other)`."""

    def __init__(self, max_values: Mapping[str, int]) -> None:
        self._max = dict(max_values)
        self._seen: dict[str, set[str]] = {name: set() for name in TAG_NAMES}
        self._lock = threading.Lock()
        self.overflowed: dict[str, int] = {name: 0 for name in TAG_NAMES}

    def admit(self, tags: Tags) -> Tags:
        changed: dict[str, str] = {}
        for name in TAG_NAMES:
            value = getattr(tags, name)
            if value is None:
                continue
            seen = self._seen[name]
            if value in seen:
                continue
            with self._lock:
                if len(seen) < self._max.get(name, 1_000_000):
                    seen.add(value)
                else:
                    changed[name] = OVERFLOW
                    self.overflowed[name] += 1
        if not changed:
            return tags
        return Tags(**{**tags.as_dict(), **changed})
