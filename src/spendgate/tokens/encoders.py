"""Model name → tokenizer family, and counting plain text in that family.

OpenAI families are exact (bpe-openai ships the real o200k/cl100k merge tables). Claude has
no public tokenizer: with the optional `ctok` package installed we use its offline
reconstruction (measured exact against Anthropic's `count_tokens` on its own corpora); without
it we scale the o200k count by a ratio measured against ctok on real Chatbot Arena prompts
(1,289 English turns, /work/shared/data/traffic/arena_prompts.jsonl.gz):

    Claude 3 … Opus 4.6 (ctok "v3")        131,048 / 118,723 o200k tokens = 1.104
    Opus 4.7 and later  (ctok "v4.7"/"4.8") 177,441 / 118,723 o200k tokens = 1.495

ctok is ~100× slower than the Rust BPE (≈ 90k tokens/s against ≈ 8M), so Claude counts are
memoised per text: the simulated upstream and the gateway see the same system prompts and
answers over and over.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import cache, lru_cache
from typing import Any

__all__ = [
    "CLAUDE_RATIO_V3",
    "CLAUDE_RATIO_V47",
    "claude_frame",
    "claude_version",
    "count_text",
    "encode",
    "family",
    "has_ctok",
    "warm_up",
]

CLAUDE_RATIO_V3 = 1.104
"""Claude-3-family tokens per o200k token on English chat prompts (measured against ctok)."""
CLAUDE_RATIO_V47 = 1.495
"""Claude Opus 4.7+ tokens per o200k token on the same prompts (ctok v4.7 vocabulary)."""

_PREFIX = re.compile(r"^(?:[\w.-]+/)+")  # "openai/", "anthropic/", "azure/eu/" …
_CL100K = ("gpt-4", "gpt-3.5", "text-embedding-", "gpt-35")
_O200K_OVERRIDES = ("gpt-4o", "gpt-4.1", "gpt-4.5", "chatgpt-4o")


def _bare(model: str) -> str:
    name = _PREFIX.sub("", model.strip().lower())
    return name[3:] if name.startswith("ft:") else name


@lru_cache(maxsize=1024)
def family(model: str) -> str:
    """The tokenizer family a model name counts in: "o200k", "cl100k" or "claude".

    Unknown models count as o200k, the family of every current OpenAI model and the closest
    general-purpose BPE for anything else (Mistral, Llama … are within ~10% on English).
    """
    name = _bare(model)
    if name.startswith("claude") or ".claude" in name or name.startswith("anthropic."):
        return "claude"
    if name.startswith(_O200K_OVERRIDES):
        return "o200k"
    if name.startswith(_CL100K) or name in ("text-embedding-ada-002", "davinci-002"):
        return "cl100k"
    return "o200k"


@lru_cache(maxsize=1024)
def claude_version(model: str) -> str:
    """The ctok family version ("3.0", "4.7", "4.8") a Claude model name tokenizes with.

    Claude names carry their generation either before the tier ("claude-3-5-sonnet-20241022")
    or after it ("claude-opus-4-7"); dates (8 digits) are not versions.
    """
    name = _bare(model)
    nums = [p for p in re.split(r"[^0-9]+", name) if p and len(p) < 4]
    parts = [int(p) for p in nums[:2]]
    if not parts or parts[0] < 3:
        return "3.0"
    version = tuple(parts) if len(parts) == 2 else (parts[0], 0)
    if version >= (4, 8):
        return "4.8"
    if version >= (4, 7):
        return "4.7"
    return "3.0"


def _load_bpe(name: str) -> Callable[[str], int]:
    try:
        from bpe_openai import _bindings

        backend: Any = _bindings.tokenizer_for_encoding(name)
        count: Callable[[str], int] = backend.count
    except (ImportError, AttributeError):  # the private binding moved: the public API
        import bpe_openai

        enc = bpe_openai.get_encoding(name)

        def count(text: str) -> int:
            return len(enc.encode_ordinary(text))

    def safe(text: str) -> int:
        try:
            return count(text)
        except UnicodeEncodeError:  # lone surrogates from a sloppy client
            return count(text.encode("utf-16", "surrogatepass").decode("utf-16", "replace"))

    return safe


@cache
def _bpe(name: str) -> Callable[[str], int]:
    return _load_bpe(name + "_base")


@cache
def _bpe_encoder(name: str) -> Any:
    from bpe_openai import _bindings

    return _bindings.tokenizer_for_encoding(name + "_base")


def encode(model: str, text: str) -> list[int]:
    """Token ids of `text` in the model's BPE family (o200k for Claude, which has no public
    ids): used to find shared prompt prefixes at token granularity."""
    fam = family(model)
    enc = _bpe_encoder("cl100k" if fam == "cl100k" else "o200k")
    try:
        return list(enc.encode(text))
    except UnicodeEncodeError:
        return list(enc.encode(text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")))


@lru_cache(maxsize=1)
def has_ctok() -> bool:
    """Whether the optional Claude tokenizer reconstruction is importable."""
    try:
        import ctok  # noqa: F401
    except Exception:  # ctok declares Python ≥ 3.12; any import failure means "not available"
        return False
    return True


@lru_cache(maxsize=4)
def claude_frame(version: str) -> int:
    """Tokens Anthropic adds around a single user message (ctok's measured frame; 7 for v3)."""
    if has_ctok():
        from ctok.main import _family, _model

        return int(_model(_family(version)).message_overhead)
    return {"3.0": 7, "4.7": 11}.get(version, 6)


@lru_cache(maxsize=16384)
def _claude_count(version: str, text: str) -> int:
    if has_ctok():
        import ctok

        return max(0, ctok.token_count(text, version) - claude_frame(version))
    ratio = CLAUDE_RATIO_V3 if version == "3.0" else CLAUDE_RATIO_V47
    return round(_bpe("o200k")(text) * ratio)


def count_text(model: str, text: str) -> int:
    """Tokens `text` costs for `model`, with no message framing."""
    if not text:
        return 0
    fam = family(model)
    if fam == "claude":
        return _claude_count(claude_version(model), text)
    return _bpe(fam)(text)


def warm_up(models: list[str]) -> list[str]:
    """Load the tokenizer of every family `models` count in (o200k ≈ 1.1 s, ctok ≈ 0.8 s on
    a loaded 2-core machine), so no request pays for it; returns the families loaded. Safe
    to run in a worker thread: the loaders are memoised and idempotent."""
    loaded: list[str] = []
    for model in models:
        fam = family(model)
        key = f"claude-{claude_version(model)}" if fam == "claude" else fam
        if key in loaded:
            continue
        count_text(model, "warm up")
        loaded.append(key)
    return loaded
