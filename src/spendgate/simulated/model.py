"""The simulated upstream's "model": deterministic answers, seeded by a hash of model and
prompt, whose length, tool calls, JSON and reasoning tokens look like a real model's.

Token counts come from `spendgate.tokens`, so cost arithmetic downstream is checked against
real tokenizers. Nothing here knows a wire format: each endpoint module reads its request
into an `Ask` and shapes the `Answer` into its own response.
"""

from __future__ import annotations

import hashlib
import math
import random
from dataclasses import dataclass
from typing import Any

import orjson

from spendgate import tokens
from spendgate.simulated.wire import text_of

__all__ = [
    "MODELS",
    "Answer",
    "Ask",
    "answer",
    "digest",
    "last_user_text",
    "per_token_delay",
    "pick_tool",
    "ttft",
]

MODELS = (
    "gpt-4o",
    "gpt-4o-mini",
    "gpt-4.1",
    "gpt-4.1-mini",
    "gpt-4.1-nano",
    "gpt-5",
    "gpt-5-mini",
    "o3",
    "o4-mini",
    "gpt-3.5-turbo",
    "text-embedding-3-small",
    "text-embedding-3-large",
    "claude-opus-4-1",
    "claude-sonnet-4-5",
    "claude-haiku-4-5",
    "claude-3-5-haiku-latest",
)
"""Advertised by /v1/models; any other name is answered too."""

_WORDS = [
    "the",
    "of",
    "and",
    "to",
    "in",
    "is",
    "that",
    "for",
    "it",
    "as",
    "with",
    "was",
    "on",
    "be",
    "by",
    "this",
    "are",
    "or",
    "from",
    "at",
    "which",
    "an",
    "have",
    "not",
    "but",
    "they",
    "more",
    "can",
    "their",
    "one",
    "all",
    "been",
    "were",
    "has",
    "other",
    "when",
    "there",
    "what",
    "so",
    "some",
    "if",
    "these",
    "would",
    "about",
    "into",
    "only",
    "time",
    "also",
    "may",
    "new",
    "first",
    "could",
    "then",
    "any",
    "two",
    "like",
    "than",
    "system",
    "data",
    "model",
    "process",
    "result",
    "example",
    "use",
    "value",
    "number",
    "part",
    "people",
    "work",
    "way",
    "well",
    "because",
    "each",
    "many",
    "most",
    "over",
    "such",
    "through",
    "where",
    "much",
    "should",
    "between",
    "those",
    "after",
    "world",
    "information",
    "used",
    "make",
    "first",
    "state",
    "design",
    "user",
    "both",
    "under",
    "cost",
    "during",
    "given",
    "group",
    "important",
    "however",
    "different",
    "small",
    "large",
    "often",
    "right",
    "show",
    "large",
    "point",
    "since",
    "level",
    "simple",
    "change",
    "method",
    "approach",
    "question",
    "answer",
    "general",
    "order",
    "case",
    "important",
    "provide",
    "support",
    "service",
    "request",
    "response",
    "token",
    "budget",
    "cache",
    "price",
    "report",
    "team",
    "feature",
    "performance",
    "quality",
    "before",
    "still",
    "every",
    "without",
    "while",
    "help",
    "keep",
    "build",
    "test",
    "result",
]

_SHORT_HINTS = ("one word", "briefly", "short", "yes or no", "one sentence", "tl;dr", "concise")
_LONG_HINTS = ("essay", "detailed", "explain", "step by step", "write a", "story", "article")
_REASONING_PREFIXES = ("o1", "o3", "o4", "gpt-5")


def digest(*parts: bytes) -> bytes:
    h = hashlib.blake2b(digest_size=16)
    for part in parts:
        h.update(part)
        h.update(b"\x00")
    return h.digest()


def _sentence_pieces(rng: random.Random, n_words: int) -> list[str]:
    """Word pieces ("The", " cost", " of", ".") of plausible-looking English sentences."""
    pieces: list[str] = []
    start = True
    since = 0
    length = rng.randint(6, 18)
    for _ in range(n_words):
        word = rng.choice(_WORDS)
        if start:
            pieces.append((" " if pieces else "") + word.capitalize())
            start = False
        else:
            pieces.append(" " + word)
        since += 1
        if since >= length:
            pieces.append(rng.choice((".", ".", ".", "?", "!")) if since > 8 else ".")
            since, start, length = 0, True, rng.randint(6, 18)
        elif since > 3 and rng.random() < 0.06:
            pieces.append(",")
    if not pieces or pieces[-1] not in (".", "?", "!"):
        pieces.append(".")
    return pieces


def _target_tokens(rng: random.Random, prompt_text: str, prompt_tokens: int) -> int:
    """Answer length: lognormal around a centre that grows with the prompt, nudged by hints
    the prompt gives about the length it wants; clamped to 20–400."""
    lower = prompt_text[-2000:].lower()
    centre = 70 + min(prompt_tokens, 4000) / 20
    if any(h in lower for h in _SHORT_HINTS):
        centre = 25
    elif any(h in lower for h in _LONG_HINTS):
        centre *= 2.2
    return max(20, min(400, int(rng.lognormvariate(math.log(centre), 0.45))))


def _fit(model: str, pieces: list[str], limit: int) -> tuple[list[str], int]:
    """The longest prefix of `pieces` whose text counts ≤ `limit` tokens, and its count."""
    lo, hi = 0, len(pieces)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if tokens.count_text(model, "".join(pieces[:mid])) <= limit:
            lo = mid
        else:
            hi = mid - 1
    return pieces[:lo], tokens.count_text(model, "".join(pieces[:lo]))


# ---- JSON values for tool arguments and structured output ---------------------------------


def _value_for(rng: random.Random, name: str, schema: Any, context: str, depth: int = 0) -> Any:
    """A plausible value for one JSON-schema node; `name` is the property it fills."""
    if not isinstance(schema, dict):
        return "example"
    if "const" in schema:
        return schema["const"]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return rng.choice(schema["enum"])
    for key in ("anyOf", "oneOf", "allOf"):
        if isinstance(schema.get(key), list) and schema[key]:
            options = [o for o in schema[key] if isinstance(o, dict) and o.get("type") != "null"]
            return _value_for(rng, name, (options or schema[key])[0], context, depth)
    kind = schema.get("type", "object" if "properties" in schema else "string")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "string")
    if kind == "array":
        n = max(int(schema.get("minItems", 1)), 1)
        return [
            _value_for(rng, name, schema.get("items", {}), context, depth + 1) for _ in range(n)
        ]
    if kind == "object":
        return _object_for(rng, schema, context, depth + 1, all_props=False)
    return _scalar_for(rng, name, kind, schema, context)


def _scalar_for(
    rng: random.Random, name: str, kind: str, schema: dict[str, Any], context: str
) -> Any:
    if kind == "integer":
        lo = int(schema.get("minimum", 1))
        return rng.randint(lo, max(lo, int(schema.get("maximum", lo + 9))))
    if kind == "number":
        low = float(schema.get("minimum", 0.0))
        return round(rng.uniform(low, float(schema.get("maximum", low + 100.0))), 2)
    if kind == "boolean":
        return rng.random() < 0.5
    if kind == "null":
        return None
    return _string_for(rng, name, schema, context)


def _string_for(rng: random.Random, name: str, schema: dict[str, Any], context: str) -> str:
    fmt, key = schema.get("format"), name.lower()
    if fmt == "date-time":
        return "2025-06-01T12:00:00Z"
    if fmt == "date" or key.endswith("date"):
        return "2025-06-01"
    if fmt == "email" or "email" in key:
        return "alex@example.com"
    if fmt in ("uri", "url") or key.endswith("url"):
        return "https://example.com/item/1"
    if key in ("location", "city", "place", "address"):
        return "San Francisco, CA"
    if key in ("unit", "units"):
        return "celsius"
    if key.endswith("name"):
        return "Alex Morgan"
    if key in ("query", "q", "search", "text", "prompt", "question") and context:
        return " ".join(context.split()[:8])
    return " ".join(rng.choice(_WORDS) for _ in range(rng.randint(1, 4)))


def _object_for(
    rng: random.Random, schema: dict[str, Any], context: str, depth: int, all_props: bool
) -> dict[str, Any]:
    raw = schema.get("properties")
    props: dict[str, Any] = raw if isinstance(raw, dict) else {}
    required = [r for r in schema.get("required") or () if r in props]
    names = list(props) if all_props or not required else required
    if depth > 6:
        return {}
    return {n: _value_for(rng, n, props[n], context, depth) for n in names}


# ---- reading what the request asks for ---------------------------------------------------


def last_user_text(messages: list[Any]) -> str | None:
    """Text of the final message if it is a user turn (not a tool result), else None: a model
    that just received a tool result answers in prose, so agent loops terminate."""
    if not messages or not isinstance(messages[-1], dict):
        return None
    last = messages[-1]
    if last.get("role") != "user":
        return None
    content = last.get("content")
    if isinstance(content, list) and any(
        isinstance(b, dict) and b.get("type") == "tool_result" for b in content
    ):
        return None
    return text_of(content)


def _mentions(text: str, name: str) -> bool:
    lower = text.lower()
    name = name.lower()
    return name in lower or name.replace("_", " ") in lower


def pick_tool(
    names: list[str], choice: str | None, forced: str | None, last_user: str | None
) -> str | None:
    """Which tool to call: forced name, "required"/"any" → mentioned or first, "auto" → only
    when the final user turn mentions a tool by name."""
    if not names or choice == "none":
        return None
    if forced:
        return forced
    mentioned = next((n for n in names if last_user and _mentions(last_user, n)), None)
    if choice in ("required", "any"):
        return mentioned or names[0]
    return mentioned


# ---- answering ---------------------------------------------------------------------------


@dataclass
class Ask:
    """What one request asks the model for, whatever its wire format."""

    model: str
    prompt_key: bytes
    """Seeds the answer: the same request gets the same answer."""
    prompt_text: str
    prompt_tokens: int
    limit: int | None = None
    tool: tuple[str, dict[str, Any]] | None = None
    """The tool to call and its parameter schema, when the model calls one."""
    json_schema: dict[str, Any] | None = None
    json_object: bool = False
    reasoning_effort: str | None = None

    def choose_tool(
        self, tool_defs: dict[str, Any], choice: Any, forced: str | None, last_user: str | None
    ) -> None:
        picked = pick_tool(list(tool_defs), choice, forced, last_user)
        self.tool = (picked, tool_defs.get(picked) or {}) if picked else None


class Answer:
    """What the model "says": text pieces or one tool call, with token counts and a stop."""

    __slots__ = ("args", "completion", "pieces", "reasoning", "tool", "truncated", "visible")

    def __init__(self) -> None:
        self.pieces: list[str] = []
        self.tool: str | None = None
        self.args: str = ""
        self.visible = 0
        self.reasoning = 0
        self.completion = 0
        self.truncated = False

    @property
    def text(self) -> str:
        return "".join(self.pieces)


def answer(ask: Ask, seed: int) -> Answer:
    rng = random.Random(digest(ask.prompt_key, str(seed).encode()))
    out = Answer()
    model = ask.model
    name = model.lower().rsplit("/", 1)[-1]
    if name.startswith(_REASONING_PREFIXES):
        scale = {"minimal": 0.1, "low": 0.4, "high": 2.5}.get(ask.reasoning_effort or "", 1.0)
        out.reasoning = max(16, int(rng.lognormvariate(math.log(320 * scale), 0.5)))
        if ask.limit is not None:
            out.reasoning = min(out.reasoning, max(0, ask.limit // 2))
    context = ask.prompt_text[-400:]
    if ask.tool is not None:
        out.tool = ask.tool[0]
        out.args = orjson.dumps(_object_for(rng, ask.tool[1], context, 0, all_props=False)).decode()
        out.visible = tokens.count_text(model, out.tool) + tokens.count_text(model, out.args)
    elif ask.json_schema is not None or ask.json_object:
        if ask.json_schema is not None:
            value: Any = _object_for(rng, ask.json_schema, context, 0, all_props=True)
        else:
            text = "".join(_sentence_pieces(rng, _target_tokens(rng, ask.prompt_text, 0) // 2))
            value = {"answer": text.strip()}
        out.pieces = [orjson.dumps(value).decode()]
        out.visible = tokens.count_text(model, out.pieces[0])
    else:
        _prose(ask, rng, out)
    out.completion = out.visible + out.reasoning
    return out


def _prose(ask: Ask, rng: random.Random, out: Answer) -> None:
    visible_limit = None if ask.limit is None else max(0, ask.limit - out.reasoning)
    pieces = _sentence_pieces(rng, _target_tokens(rng, ask.prompt_text, ask.prompt_tokens))
    out.pieces = pieces
    out.visible = tokens.count_text(ask.model, "".join(pieces))
    if visible_limit is not None and out.visible > visible_limit:
        out.pieces, out.visible = _fit(ask.model, pieces, visible_limit)
        out.truncated = True


# ---- pacing (latency="realistic") --------------------------------------------------------


def ttft(prompt_tokens: int, out: Answer, rng: random.Random) -> float:
    """Seconds to the first token: grows with the prompt and with hidden reasoning."""
    return 0.25 + prompt_tokens * 2e-5 + out.reasoning * 0.004 + rng.uniform(0, 0.15)


def per_token_delay(model: str) -> float:
    name = model.lower()
    if any(k in name for k in ("mini", "nano", "haiku", "flash")):
        return 0.007
    if "opus" in name or name.startswith("gpt-4-") or name == "gpt-4":
        return 0.03
    return 0.015
