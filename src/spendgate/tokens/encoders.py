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

import hashlib
import math
import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from contextvars import ContextVar
from functools import cache, lru_cache
from typing import Any

__all__ = [
    "CLAUDE_FRAMES",
    "CLAUDE_RATIO_V3",
    "CLAUDE_RATIO_V47",
    "claude_frame",
    "claude_version",
    "count_text",
    "encode",
    "estimated_counts",
    "family",
    "has_ctok",
    "warm_up",
]

CLAUDE_RATIO_V3 = 1.104
"""Claude-3-family tokens per o200k token on English chat prompts (measured against ctok)."""
CLAUDE_RATIO_V47 = 1.495
"""Claude Opus 4.7+ tokens per o200k token on the same prompts (ctok v4.7 vocabulary)."""

_TIKTOKEN_LOCK = threading.Lock()
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


def _tiktoken_encoding(name: str) -> Any | None:
    """`name` ("o200k_base", "cl100k_base") as a tiktoken Encoding built from the merge
    table bpe-openai ships (tiktoken alone would download it), or None without tiktoken.

    Why tiktoken: the same encoding (identical ids and counts) in 43 MB of RSS for o200k,
    where bpe-openai's tables take 121 MB (measured in docs/resilience.md). The Python copy
    of the ranks is dropped once the Rust side holds its own."""
    try:
        import tiktoken
        from tiktoken_ext import openai_public
    except ImportError:
        return None
    import base64
    import gzip
    from importlib.util import find_spec
    from pathlib import Path

    # Found without importing bpe_openai: its import alone costs ~68 MB of RSS.
    spec_ = find_spec("bpe_openai")
    if spec_ is None or spec_.origin is None:
        return None
    path = Path(spec_.origin).parent / "data" / f"{name}.tiktoken.gz"
    if not path.is_file():
        return None
    raw = path.read_bytes()
    ranks = {
        base64.b64decode(token): int(rank)
        for token, rank in (line.split() for line in gzip.decompress(raw).splitlines() if line)
    }
    with _TIKTOKEN_LOCK:  # borrow tiktoken's own definition (pattern, special tokens)
        original = openai_public.load_tiktoken_bpe
        openai_public.load_tiktoken_bpe = lambda *_a, _r=ranks, **_k: _r
        try:
            spec = getattr(openai_public, name)()
        finally:
            openai_public.load_tiktoken_bpe = original
    enc = tiktoken.Encoding(**spec)
    enc._mergeable_ranks = {}  # the Rust core keeps its own table
    del ranks, spec, raw
    _trim_heap()
    return enc


def _trim_heap() -> None:
    """Hand freed heap pages back to the OS (glibc keeps them otherwise)."""
    import ctypes
    import gc

    gc.collect()
    with suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _load_bpe(name: str) -> Callable[[str], int]:
    enc = _encoder(name)
    if hasattr(enc, "encode_ordinary"):  # tiktoken

        def count(text: str) -> int:
            return len(enc.encode_ordinary(text))

    else:  # bpe-openai's binding
        count = enc.count

    def safe(text: str) -> int:
        try:
            return count(text)
        except UnicodeEncodeError:  # lone surrogates from a sloppy client
            return count(text.encode("utf-16", "surrogatepass").decode("utf-16", "replace"))

    return safe


@cache
def _encoder(name: str) -> Any:
    """One encoder per encoding, shared by counting and `encode`: tiktoken when installed
    (smaller), else bpe-openai."""
    enc = _tiktoken_encoding(name)
    if enc is not None:
        return enc
    from bpe_openai import _bindings

    return _bindings.tokenizer_for_encoding(name)


@cache
def _bpe(name: str) -> Callable[[str], int]:
    return _load_bpe(name + "_base")


def encode(model: str, text: str) -> list[int]:
    """Token ids of `text` in the model's BPE family (o200k for Claude, which has no public
    ids): used to find shared prompt prefixes at token granularity."""
    fam = family(model)
    enc = _encoder(("cl100k" if fam == "cl100k" else "o200k") + "_base")
    call = enc.encode_ordinary if hasattr(enc, "encode_ordinary") else enc.encode
    try:
        return list(call(text))
    except UnicodeEncodeError:
        return list(call(text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")))


@lru_cache(maxsize=1)
def has_ctok() -> bool:
    """Whether the optional Claude tokenizer reconstruction is importable."""
    try:
        import ctok  # noqa: F401
    except Exception:  # ctok declares Python ≥ 3.12; any import failure means "not available"
        return False
    return True


CLAUDE_FRAMES = {"3.0": 7, "4.7": 11, "4.8": 6}
"""Tokens Anthropic adds around a single user message, per tokenizer family: ctok's measured
`message_overhead` (a test holds them equal), kept here so that asking for the frame does
not load ctok's 50 MB of tables where counts are estimates."""


def claude_frame(version: str) -> int:
    """Tokens Anthropic adds around a single user message (7 for the v3 family)."""
    return CLAUDE_FRAMES.get(version, 6)


COUNTING: ContextVar[str] = ContextVar("spendgate_counting", default="exact")
"""`exact` (the family's BPE; ctok for Claude when installed), `estimate` (bytes at the mean
rate) or `upper` (bytes at a rate 95 % of prompts stay under). Set for a scope with
`estimated_counts()` where no exact count is needed: budget reservations (a worst case),
the system-prompt share and usage a provider did not report (both marked as estimates).
There the gateway loads no tokenizer tables at all (o200k's take ~40 MB, ctok's ~67 MB), so
a gateway whose stages never need exact counts stays small."""

BYTES_PER_TOKEN = 4.38
"""UTF-8 bytes per o200k token over the 1,135 Chatbot Arena prompts (all prompts' bytes over
all their tokens)."""
BYTES_PER_TOKEN_LOW = 3.49
"""The 5th percentile of the per-prompt ratio: `upper` estimates exceed the exact o200k
count for 95 % of those prompts."""


@contextmanager
def estimated_counts(*, upper: bool = False) -> Iterator[None]:
    """Within this block (this task or thread only), counts are estimates from the text's
    size: the mean rate, or with `upper` a rate that over-counts 95 % of prompts."""
    token = COUNTING.set("upper" if upper else "estimate")
    try:
        yield
    finally:
        COUNTING.reset(token)


def _estimate(text: str, mode: str) -> int:
    size = len(text.encode("utf-8", "surrogatepass"))
    return math.ceil(size / (BYTES_PER_TOKEN_LOW if mode == "upper" else BYTES_PER_TOKEN))


_MEMO_KEY_CHARS = 256
"""Longer texts are memoised under a digest, so the memo's size does not grow with them."""


def _memo_key(text: str) -> str | bytes:
    if len(text) <= _MEMO_KEY_CHARS:
        return text
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()


def _claude_count(version: str, text: str) -> int:
    mode = COUNTING.get()
    if has_ctok() and mode == "exact":
        key = _memo_key(text)
        found = _CTOK_MEMO.get((version, key))
        if found is not None:
            return found
        n = max(0, _ctok_token_count(text, version) - claude_frame(version))
        if len(_CTOK_MEMO) >= 8192:
            _CTOK_MEMO.clear()
        _CTOK_MEMO[(version, key)] = n
        return n
    ratio = CLAUDE_RATIO_V3 if version == "3.0" else CLAUDE_RATIO_V47
    o200k = _bpe("o200k")(text) if mode == "exact" else _estimate(text, mode)
    return round(o200k * ratio)


_CTOK_MEMO: dict[tuple[str, str | bytes], int] = {}
"""ctok is ~100× slower than the Rust BPE: counts are memoised per (version, text); texts
longer than 256 characters by a 16-byte digest (the memo once kept whole prompts)."""


def _ctok_token_count(text: str, version: str) -> int:
    import ctok

    return int(ctok.token_count(text, version))


def count_text(model: str, text: str) -> int:
    """Tokens `text` costs for `model`, with no message framing."""
    if not text:
        return 0
    fam = family(model)
    if fam == "claude":
        return _claude_count(claude_version(model), text)
    mode = COUNTING.get()
    return _bpe(fam)(text) if mode == "exact" else _estimate(text, mode)


def warm_up(models: list[str], *, exact: bool = False) -> list[str]:
    """Load the tokenizers exact counts need (o200k ≈ 1.1 s, ctok ≈ 0.8 s on a loaded 2-core
    machine), so no request pays for them; returns the families loaded. Only a gateway
    whose stages count exactly (trim) loads any: budgets, prefix, accounting and stream
    estimates count from text size. Safe in a worker thread (loaders are memoised)."""
    if not exact:
        return []
    loaded: list[str] = []
    for model in models:
        fam = family(model)
        key = f"claude-{claude_version(model)}" if fam == "claude" and has_ctok() else fam
        if fam == "claude" and key == "claude":
            key = "o200k"  # no ctok: Claude counts are o200k × ratio
        if key in loaded:
            continue
        count_text(model, "warm up")
        loaded.append(key)
    return loaded
