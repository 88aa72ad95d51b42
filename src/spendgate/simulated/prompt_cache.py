"""Provider prompt caching, modelled closely enough to exercise the gateway's cache
accounting: OpenAI's automatic prefix cache and Anthropic's explicit breakpoints.

Both keep `{prefix digest: expiry}` in an LRU bounded at `CACHE_ENTRIES`; they differ in
what a prefix is (128-token steps vs. breakpoints) and in what they report.
"""

from __future__ import annotations

import hashlib
import struct
import time
from collections import OrderedDict
from typing import Any

import orjson

from spendgate import tokens
from spendgate.simulated.wire import text_of

__all__ = [
    "CACHE_ENTRIES",
    "CACHE_MIN_TOKENS",
    "AnthropicPromptCache",
    "CacheUse",
    "OpenAIPromptCache",
]

CACHE_MIN_TOKENS = 1024
"""Both providers' minimum cacheable prefix (Anthropic: Sonnet/Opus; OpenAI: all models)."""
OPENAI_CACHE_STEP = 128
OPENAI_CACHE_TTL = 600.0
"""OpenAI keeps a prefix 5–10 minutes after last use; we take the upper end."""
CACHE_ENTRIES = 50_000


class _Expiring:
    """Prefix digests with their expiry (monotonic seconds), least recently stored first."""

    def __init__(self) -> None:
        self.entries: OrderedDict[bytes, float] = OrderedDict()

    def live(self, key: bytes, now: float) -> bool:
        expires = self.entries.get(key)
        return expires is not None and expires > now

    def store(self, key: bytes, expires: float) -> None:
        self.entries[key] = expires
        self.entries.move_to_end(key)

    def evict(self) -> None:
        while len(self.entries) > CACHE_ENTRIES:
            self.entries.popitem(last=False)

    def clear(self) -> None:
        self.entries.clear()


class OpenAIPromptCache(_Expiring):
    def cached(self, model: str, body: dict[str, Any], prompt_tokens: int) -> int:
        """Automatic prefix caching: the longest 128-token-aligned prefix (≥ 1024 tokens) of
        this prompt seen in the last 10 minutes; every prefix of this one is then stored."""
        if prompt_tokens < CACHE_MIN_TOKENS:
            return 0
        ids = tokens.encode(model, _prompt_text(body))
        usable = min(len(ids), prompt_tokens)
        if usable < CACHE_MIN_TOKENS:
            return 0
        now = time.monotonic()
        cached = 0
        for length, key in _prefix_keys(model, ids, usable):
            if self.live(key, now):
                cached = length
            self.store(key, now + OPENAI_CACHE_TTL)
        self.evict()
        return cached


def _prompt_text(body: dict[str, Any]) -> str:
    parts = [orjson.dumps(body.get("tools") or []).decode()]
    for m in body.get("messages") or ():
        if isinstance(m, dict):
            parts.append(f"<|{m.get('role')}|>{text_of(m.get('content'))}")
            if m.get("tool_calls"):
                parts.append(orjson.dumps(m["tool_calls"]).decode())
    return "\n".join(parts)


def _prefix_keys(model: str, ids: list[int], usable: int) -> list[tuple[int, bytes]]:
    """(length, digest) of every 128-token-aligned prefix from the minimum up to `usable`."""
    h = hashlib.blake2b(model.encode(), digest_size=16)
    h.update(struct.pack(f"<{CACHE_MIN_TOKENS}I", *ids[:CACHE_MIN_TOKENS]))
    keys = [(CACHE_MIN_TOKENS, h.digest())]
    for end in range(CACHE_MIN_TOKENS + OPENAI_CACHE_STEP, usable + 1, OPENAI_CACHE_STEP):
        h.update(struct.pack(f"<{OPENAI_CACHE_STEP}I", *ids[end - OPENAI_CACHE_STEP : end]))
        keys.append((end, h.digest()))
    return keys


class CacheUse:
    """What one Messages request read from and wrote to Anthropic's prompt cache."""

    __slots__ = ("read", "total", "write_1h", "write_5m")

    def __init__(self, total: int, read: int = 0, write_5m: int = 0, write_1h: int = 0) -> None:
        self.total = total
        self.read = read
        self.write_5m = write_5m
        self.write_1h = write_1h

    @property
    def uncached(self) -> int:
        return self.total - self.read - self.write_5m - self.write_1h


class AnthropicPromptCache(_Expiring):
    def usage(self, model: str, body: dict[str, Any]) -> CacheUse:
        """Input, cache read and cache writes (5-minute, 1-hour) for a Messages body.

        The prefix up to the furthest breakpoint already cached is read; the part from there to
        the last breakpoint is written, each stretch at the TTL of the breakpoint that ends it.
        Breakpoints whose prefix is under the minimum are not cached, as on the real API.
        """
        total, points = _breakpoints(model, body)
        points = [p for p in points if p[0] >= CACHE_MIN_TOKENS]
        if not points:
            return CacheUse(total)
        now = time.monotonic()
        use = CacheUse(total)
        for length, key, ttl in points:
            if self.live(key, now):
                use.read = length
                self.entries[key] = now + ttl  # a hit refreshes the entry's lifetime
        previous = use.read
        for length, key, ttl in points:
            if length <= use.read:
                continue
            if ttl > 300:
                use.write_1h += length - previous
            else:
                use.write_5m += length - previous
            previous = length
            self.store(key, now + ttl)
        self.evict()
        return use


def _breakpoints(model: str, body: dict[str, Any]) -> tuple[int, list[tuple[int, bytes, float]]]:
    """The prompt's token total, and (prefix length, prefix digest, TTL) at each breakpoint."""
    h = hashlib.blake2b(model.encode(), digest_size=16)
    running = 0
    points: list[tuple[int, bytes, float]] = []
    for count, piece in tokens.iter_anthropic_prompt(model, body):
        running += count
        control = piece.get("cache_control") if isinstance(piece, dict) else None
        if isinstance(piece, dict) and control is not None:
            piece = {k: v for k, v in piece.items() if k != "cache_control"}
        h.update(orjson.dumps(piece, option=orjson.OPT_SORT_KEYS))
        if isinstance(control, dict) and control.get("type") == "ephemeral":
            ttl = 3600.0 if control.get("ttl") == "1h" else 300.0
            points.append((running, h.digest(), ttl))
    return running, points
