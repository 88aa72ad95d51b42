"""Reading attribution tags from a request, and keeping their cardinality bounded.

Precedence: `x-spendgate-*` headers, then the body (`metadata.{feature,…}`, OpenAI's `user`,
Anthropic's `metadata.user_id`), then the virtual key's defaults — except `team` and `tenant`,
which a key that names them fixes: a team's budget must not be dodged by sending another
team's header, and a tenant is a security boundary (cache entries and budgets are scoped by
it), so a request may name its tenant only when its key allows it (`may_set_tenant`) or when
the gateway runs with no keys at all.
"""

from __future__ import annotations

import hashlib
import math
import re
import threading
from collections.abc import Mapping
from typing import Any

from spendgate.call import TAG_NAMES, Tags
from spendgate.errors import GatewayError

__all__ = ["OVERFLOW", "SeenFilter", "TagGuard", "read_tags"]

OVERFLOW = "(other)"
_VALID = re.compile(r"[\w.:@/+\-= ]{1,128}")
"""Matched with `fullmatch`: `$` would also accept a trailing newline."""
_HEADER = {name: "x-spendgate-" + name.replace("_", "-") for name in TAG_NAMES}


def _check(name: str, value: Any, where: str) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str) or not _VALID.fullmatch(value) or not value.isprintable():
        raise GatewayError(
            400,
            f"tag {name!r} from {where} must be 1–128 characters of letters, digits, spaces "
            f"and . _ : @ / + - =",
            param=where,
            code="invalid_tag",
        )
    return value


def read_tags(
    headers: Mapping[str, str],
    body: dict[str, Any],
    defaults: Tags,
    *,
    may_set_tenant: bool = True,
) -> Tags:
    """The call's tags. `may_set_tenant` is False for a key that may not name a tenant: a
    tenant from the request is then refused (403) rather than silently dropped, so a
    misconfigured backend finds out at once instead of sharing one cache partition."""
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
    if values["tenant"] is not None and not defaults.tenant and not may_set_tenant:
        raise GatewayError(
            403,
            "This key may not name a tenant (x-spendgate-tenant or metadata.tenant): a tenant "
            "scopes cached answers and budgets. Create a key bound to the tenant "
            "(`spendgate keys create --tenant T`), or one for a trusted backend that serves "
            "many tenants (`--may-set-tenant`).",
            type="permission_error",
            param=_HEADER["tenant"],
            code="tenant_not_allowed",
        )
    tags = Tags(**values, key_id=defaults.key_id).merged_over(defaults)
    fixed = {
        name: getattr(defaults, name)
        for name in ("team", "tenant")
        if getattr(defaults, name) and getattr(tags, name) != getattr(defaults, name)
    }
    if fixed:
        tags = Tags(**{**tags.as_dict(), **fixed})
    return tags


EXACT_UP_TO = 10_000
"""Caps up to this many values are kept as exact sets; larger ones (users: 1M, tenants: 100k
by default) in a `SeenFilter`, so that a process that has seen a million users holds ~1.2 MB
for them instead of ~100 MB of strings (a 10-minute soak with every user new grew 3 MB/min
on that set alone)."""


class SeenFilter:
    """A Bloom filter sized for `capacity` values at a 1 % false-positive rate: `add` says
    whether the value may have been added before. A false positive admits a new value
    without counting it, so the cap can be passed by ~1 %: harmless for a cardinality
    guard, and the price of bounded memory."""

    def __init__(self, capacity: int, error: float = 0.01) -> None:
        self.bits = max(64, math.ceil(-capacity * math.log(error) / math.log(2) ** 2))
        self.hashes = max(1, round(self.bits / capacity * math.log(2)))
        self._array = bytearray((self.bits + 7) // 8)
        self.count = 0

    def __len__(self) -> int:
        return self.count

    def _positions(self, value: str) -> list[int]:
        digest = hashlib.blake2b(value.encode("utf-8", "surrogatepass"), digest_size=16).digest()
        h1, h2 = int.from_bytes(digest[:8], "little"), int.from_bytes(digest[8:], "little") | 1
        return [(h1 + i * h2) % self.bits for i in range(self.hashes)]

    def __contains__(self, value: object) -> bool:
        if not isinstance(value, str):
            return False
        return all(self._array[p >> 3] & (1 << (p & 7)) for p in self._positions(value))

    def add(self, value: str) -> None:
        new = False
        for p in self._positions(value):
            byte, bit = p >> 3, 1 << (p & 7)
            if not self._array[byte] & bit:
                self._array[byte] |= bit
                new = True
        self.count += new


class TagGuard:
    """Caps distinct values per tag per process; values past the cap become `(other)`."""

    def __init__(self, max_values: Mapping[str, int]) -> None:
        self._max = dict(max_values)
        self._seen: dict[str, set[str] | SeenFilter] = {
            name: SeenFilter(cap) if (cap := self._max.get(name, 1_000_000)) > EXACT_UP_TO
            else set()
            for name in TAG_NAMES
        }  # fmt: skip
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
