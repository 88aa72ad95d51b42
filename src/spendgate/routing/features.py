"""Cheap text features for the learned router: hashed word n-grams plus a few dense signals.

Why hashing: the model is a linear scorer over a fixed number of buckets, so the shipped
artifact is a flat float array (no vocabulary to ship or version) and scoring is a handful of
`zlib.crc32` calls and additions — well under a millisecond for a typical prompt, with no
numpy at run time. Long prompts are cut to their first and last `MAX_CHARS // 2` characters:
the question is usually at one end, and the cut bounds the per-call cost.
"""

from __future__ import annotations

import math
import re
import zlib
from collections import Counter
from collections.abc import Iterable
from typing import Any

from spendgate.providers.dialects.base import content_text

__all__ = [
    "DENSE_NAMES",
    "MAX_CHARS",
    "call_text",
    "dense_features",
    "hashed_features",
    "messages_text",
]

MAX_CHARS = 2000

_TOKEN = re.compile(r"[a-z]+|\d+|[^\sa-z\d]")
# Each pattern starts with a lookahead on the characters its alternatives can start with: the
# same matches, but the engine skips most positions at once (4× faster on long prompts).
_CODE = re.compile(
    r"(?=[`dfrci#=;])(?:```|\bdef \w+\(|\bfunction\b|\breturn\b|\bclass \w+|#include"
    r"|\bimport \w+|=>|\bconsole\.|;\s*$)",
    re.M,
)
_MATH = re.compile(
    r"(?=[=+*/^<>\\$sch])(?:[=+*/^<>]|\\frac|\\sqrt|\$|\bsolve\b|\bcalculate\b|\bhow many\b"
    r"|\bhow much\b)"
)
_CHOICES = re.compile(r"(?m)^\s*\(?[A-D][.)]\s")
_NUMBER = re.compile(r"\d+(?:\.\d+)?")

DENSE_NAMES: tuple[str, ...] = (
    "bias",
    "log_chars",
    "log_words",
    "log_lines",
    "numbers",
    "math_ops",
    "code",
    "choices",
    "questions",
    "non_ascii",
    "turns",
    "tools",
)


def _clip(text: str) -> str:
    if len(text) <= MAX_CHARS:
        return text
    half = MAX_CHARS // 2
    return text[:half] + "\n" + text[-half:]


def dense_features(text: str, turns: int = 1, tools: bool = False) -> list[float]:
    """Shape signals that carry across benchmarks (length, numbers, code, options)."""
    n = len(text)
    words = text.count(" ") + 1
    lines = text.count("\n") + 1
    text = _clip(text)
    return [
        1.0,
        math.log1p(n) / 8.0,
        math.log1p(words) / 7.0,
        math.log1p(lines) / 4.0,
        min(len(_NUMBER.findall(text)), 40) / 20.0,
        min(len(_MATH.findall(text)), 40) / 20.0,
        min(len(_CODE.findall(text)), 10) / 5.0,
        1.0 if _CHOICES.search(text) else 0.0,
        min(text.count("?"), 5) / 5.0,
        # non-ASCII characters, counted without building a list of them (CJK prompts)
        min((len(text) - len(text.encode("ascii", "ignore"))) / max(n, 1), 1.0),
        min(turns - 1, 10) / 5.0,
        1.0 if tools else 0.0,
    ]


def hashed_features(text: str, buckets: int) -> dict[int, float]:
    """Word unigrams and bigrams hashed into `buckets`, counts scaled by 1/sqrt(total)."""
    toks = _TOKEN.findall(_clip(text).lower())
    if not toks:
        return {}
    crc = zlib.crc32
    grams = [crc(t.encode()) % buckets for t in toks]
    pairs = zip(["<s>", *toks], toks, strict=False)  # (previous token, token)
    grams += [crc(f"{p} {t}".encode()) % buckets for p, t in pairs]
    counts = Counter(grams)
    scale = 1.0 / math.sqrt(sum(v * v for v in counts.values()))
    return {h: v * scale for h, v in counts.items()}


def messages_text(messages: Iterable[Any], role: str | None = "user") -> list[str]:
    """Texts of the messages (of one role, or all when `role` is None), in order."""
    out = []
    for m in messages:
        if isinstance(m, dict) and (role is None or m.get("role") == role):
            out.append(content_text(m.get("content")))
    return out


def call_text(body: dict[str, Any]) -> tuple[str, int, bool]:
    """(the text the router scores, user-turn count, whether tools are offered).

    The router scores the last user turn: that is what the model must answer now; earlier
    turns count through `turns` (conversation depth). A Responses body's `input` items read
    like messages (the gateway makes a string input one user item)."""
    messages = body.get("messages") if "messages" in body else body.get("input")
    if not isinstance(messages, list):
        return "", 0, False
    users = messages_text(messages, "user")
    text = users[-1] if users else ""
    return text, len(users), bool(body.get("tools"))
