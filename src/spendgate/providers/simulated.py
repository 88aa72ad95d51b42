"""A real HTTP upstream speaking OpenAI's and Anthropic's wire formats, for the demo, the tests
and the benchmarks (we cannot reach the real providers, and must not pay them to be measured).

It is a raw ASGI app (no framework, orjson) so that a gateway benchmark measures the gateway,
not this. Answers are deterministic per request (seeded by a hash of model + prompt), usage is
counted with `spendgate.tokens` so cost arithmetic downstream is checked against real
tokenizers, and provider prompt caching is modelled closely enough to exercise the gateway's
cache accounting. Faults are queued over HTTP (`/_sim/faults`) so a gateway test can drive
retries and fallbacks across a real socket.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import math
import random
import socket
import struct
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import orjson
import uvicorn

from spendgate import tokens

__all__ = ["SimApp", "SimulatedUpstream", "create_app", "serve"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

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

CACHE_MIN_TOKENS = 1024
"""Both providers' minimum cacheable prefix (Anthropic: Sonnet/Opus; OpenAI: all models)."""
OPENAI_CACHE_STEP = 128
OPENAI_CACHE_TTL = 600.0
"""OpenAI keeps a prefix 5–10 minutes after last use; we take the upper end."""
CACHE_ENTRIES = 50_000

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

_JSON = [(b"content-type", b"application/json")]
_SSE = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
]

log = logging.getLogger("spendgate.simulated")


class _Cut(Exception):
    """Raised inside a responder to drop the connection mid-response."""


# ---- deterministic text ------------------------------------------------------------------


def _digest(*parts: bytes) -> bytes:
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


class _Answer:
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
    if kind == "array":
        n = max(int(schema.get("minItems", 1)), 1)
        return [
            _value_for(rng, name, schema.get("items", {}), context, depth + 1) for _ in range(n)
        ]
    if kind == "object":
        return _object_for(rng, schema, context, depth + 1, all_props=False)
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


# ---- request reading ---------------------------------------------------------------------


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            str(p.get("text") or "") for p in content if isinstance(p, dict) and "text" in p
        )
    return ""


def _last_user_text(messages: list[Any]) -> str | None:
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
    return _text_of(content)


def _mentions(text: str, name: str) -> bool:
    lower = text.lower()
    name = name.lower()
    return name in lower or name.replace("_", " ") in lower


def _pick_tool(
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


def _usage_override(fault: dict[str, Any] | None) -> dict[str, Any] | None:
    """A queued `{"kind": "usage", "usage": {…}}`: report exactly this usage block (in the
    endpoint's own format), so a test can drive a golden cost case end to end through the
    gateway; the answer itself is unchanged."""
    if fault is None or fault.get("kind") != "usage":
        return None
    value = fault.get("usage")
    return value if isinstance(value, dict) else None


def _openai_tier(requested: Any) -> str:
    """The tier OpenAI reports as having served a request: flex and priority when asked,
    `default` otherwise (including `auto` on a project without scale capacity)."""
    return requested if requested in ("flex", "priority") else "default"


def _header_fault(value: str) -> dict[str, Any] | None:
    """`x-sim-fault: status=429;retry_after=2` / `timeout=5` / `cut=3` / `garbage`."""
    fault: dict[str, Any] = {}
    for i, part in enumerate(p.strip() for p in value.replace(",", ";").split(";")):
        if not part:
            continue
        key, _, raw = part.partition("=")
        key = key.strip()
        if i == 0:
            fault["kind"] = key
            arg = {"status": "status", "timeout": "seconds", "cut": "after_chunks"}.get(key)
            if arg and raw:
                fault[arg] = float(raw) if key == "timeout" else int(raw)
        elif raw:
            fault[key] = raw if key == "mode" else float(raw)
    return fault or None


_OPENAI_ERRORS = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("invalid_request_error", "unsupported_country_region_territory"),
    404: ("invalid_request_error", "model_not_found"),
    429: ("requests", "rate_limit_exceeded"),
}
_ANTHROPIC_ERRORS = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
    529: "overloaded_error",
}


def _error_body(api: str, status: int, message: str, param: str | None = None) -> bytes:
    if api == "anthropic":
        kind = _ANTHROPIC_ERRORS.get(status, "api_error")
        return orjson.dumps({"type": "error", "error": {"type": kind, "message": message}})
    kind, code = _OPENAI_ERRORS.get(status, ("server_error", None))
    return orjson.dumps({"error": {"message": message, "type": kind, "param": param, "code": code}})


# ---- the app -----------------------------------------------------------------------------


class SimApp:
    """The ASGI callable. State (stats, faults, prompt caches) lives on the instance and is
    only touched from the event loop, so it needs no locks."""

    def __init__(self, latency: str = "none", seed: int = 0, require_key: str | None = None):
        if latency not in ("none", "realistic"):
            raise ValueError(f"latency must be 'none' or 'realistic', not {latency!r}")
        self.latency = latency
        self.seed = seed
        self.require_key = require_key
        self.faults: list[dict[str, Any]] = []
        self.stats_total = 0
        self.by_path: Counter[str] = Counter()
        self.by_model: Counter[str] = Counter()
        self.faults_fired: Counter[str] = Counter()
        self._openai_cache: OrderedDict[bytes, float] = OrderedDict()
        self._anthropic_cache: OrderedDict[bytes, float] = OrderedDict()
        self._seq = 0
        self._closing: asyncio.Event | None = None
        from spendgate.providers.simulated_batches import SimBatches

        self.batches = SimBatches(self)
        self.public_url = ""
        """Where clients reach this upstream (set by `SimulatedUpstream`; batch result URLs)."""

    # -- plumbing --

    def release(self) -> None:
        """Let held ("timeout") responses go, so a graceful stop does not wait on them."""
        if self._closing is not None:
            self._closing.set()

    def _next_id(self) -> str:
        self._seq += 1
        return f"{self.seed:x}{self._seq:012x}"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        if self._closing is None:
            self._closing = asyncio.Event()
        path: str = scope["path"].rstrip("/")
        method: str = scope["method"]
        headers = dict(scope["headers"])
        raw = b""
        more = True
        while more:
            message = await receive()
            raw += message.get("body", b"")
            more = message.get("more_body", False)
        if path.startswith("/_sim/"):
            await self._control(method, path, raw, send)
            return
        if path.startswith("/v1/"):
            path = path[3:]
        api = "anthropic" if path.startswith("/messages") else "openai"
        if self.batches.handles(path):
            if self.require_key is not None and not self._key_ok(headers):
                await self._error(send, api, 401, "Incorrect API key provided.")
                return
            await self.batches.handle(method, path, headers, raw, send)
            return
        if method == "GET" and path == "/models":
            await self._models(headers, send)
            return
        handler = {
            "/chat/completions": self._chat,
            "/messages": self._messages,
            "/embeddings": self._embeddings,
            "/responses": self._responses,
            "/messages/count_tokens": self._count_tokens,
        }.get(path)
        if handler is None or method != "POST":
            await self._error(send, api, 404, f"Unknown route {method} {scope['path']}")
            return
        if self.require_key is not None and not self._key_ok(headers):
            await self._error(send, api, 401, "Incorrect API key provided.")
            return
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            await self._error(send, api, 400, f"We could not parse the JSON body: {exc}")
            return
        if not isinstance(body, dict):
            await self._error(send, api, 400, "The request body must be a JSON object.")
            return
        model = str(body.get("model") or "")
        self.stats_total += 1
        self.by_path[path] += 1
        self.by_model[model] += 1
        fault = self._take_fault(path, model, headers)
        if fault is not None:
            self.faults_fired[str(fault.get("kind"))] += 1
            kind = fault.get("kind")
            if kind == "status":
                status = int(fault.get("status", 500))
                extra = []
                if fault.get("retry_after") is not None:
                    extra.append((b"retry-after", str(fault["retry_after"]).encode()))
                msg = str(fault.get("message") or f"Simulated upstream error {status}.")
                await self._error(send, api, status, msg, extra)
                return
            if kind == "garbage":
                await send({"type": "http.response.start", "status": 200, "headers": _JSON})
                await send({"type": "http.response.body", "body": b"<html>502 Bad Gateway"})
                return
            if kind == "timeout" and not await self._hold(float(fault.get("seconds", 30)), receive):
                return
        try:
            await handler(body, model, headers, send, fault)
        except _Cut:
            return  # uvicorn closes the connection: the client sees a truncated response
        except (TypeError, KeyError, AttributeError, ValueError, IndexError) as exc:
            # A body of a shape the simulator can't read is the client's error, as upstream.
            await self._error(send, api, 400, f"Invalid request body ({type(exc).__name__}).")

    def _key_ok(self, headers: dict[bytes, bytes]) -> bool:
        auth = headers.get(b"authorization", b"").decode("latin-1")
        key = headers.get(b"x-api-key", b"").decode("latin-1")
        return self.require_key in (key, auth.removeprefix("Bearer ").strip())

    def _take_fault(
        self, path: str, model: str, headers: dict[bytes, bytes]
    ) -> dict[str, Any] | None:
        direct = headers.get(b"x-sim-fault")
        if direct:
            return _header_fault(direct.decode("latin-1"))
        for fault in self.faults:
            if fault.get("model") not in (None, model):
                continue
            if fault.get("path") not in (None, path, "/v1" + path):
                continue
            fault["times"] = int(fault.get("times", 1)) - 1
            if fault["times"] <= 0:
                self.faults.remove(fault)
            return fault
        return None

    async def _hold(self, seconds: float, receive: Receive) -> bool:
        """Wait `seconds` without blocking other requests; False if the client went away or
        the server is stopping (then there is no one to answer)."""
        assert self._closing is not None
        waiters = {
            asyncio.ensure_future(asyncio.sleep(seconds)),
            asyncio.ensure_future(receive()),
            asyncio.ensure_future(self._closing.wait()),
        }
        done, pending = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        first = done.pop()
        result = first.result()
        return result is None and not self._closing.is_set()

    async def _error(
        self,
        send: Send,
        api: str,
        status: int,
        message: str,
        extra: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        await send(
            {"type": "http.response.start", "status": status, "headers": _JSON + (extra or [])}
        )
        await send({"type": "http.response.body", "body": _error_body(api, status, message)})

    async def _json(self, send: Send, payload: Any, status: int = 200) -> None:
        await send({"type": "http.response.start", "status": status, "headers": _JSON})
        await send({"type": "http.response.body", "body": orjson.dumps(payload)})

    async def _control(self, method: str, path: str, raw: bytes, send: Send) -> None:
        if path == "/_sim/faults" and method == "POST":
            try:
                payload = orjson.loads(raw or b"{}")
                faults = payload["faults"] if isinstance(payload, dict) else payload
                assert isinstance(faults, list) and all(isinstance(f, dict) for f in faults)
            except (orjson.JSONDecodeError, KeyError, AssertionError):
                await self._error(send, "openai", 400, 'Expected {"faults": [{"kind": …}]}')
                return
            self.faults.extend(dict(f) for f in faults)
            await self._json(send, {"queued": len(faults), "pending": self.faults})
        elif path == "/_sim/faults" and method == "DELETE":
            self.faults.clear()
            await self._json(send, {"pending": []})
        elif path == "/_sim/faults" and method == "GET":
            await self._json(send, {"pending": self.faults})
        elif path == "/_sim/stats" and method == "GET":
            await self._json(send, self.stats())
        elif path == "/_sim/stats" and method == "DELETE":
            self.stats_total = 0
            self.by_path.clear()
            self.by_model.clear()
            self.faults_fired.clear()
            await self._json(send, self.stats())
        elif path == "/_sim/cache" and method == "DELETE":
            self._openai_cache.clear()
            self._anthropic_cache.clear()
            await self._json(send, {"cleared": True})
        else:
            await self._error(send, "openai", 404, f"Unknown control route {method} {path}")

    def stats(self) -> dict[str, Any]:
        """Upstream calls seen (faulted ones included): what tests use to prove call counts."""
        return {
            "total": self.stats_total,
            "by_path": {"/v1" + k: v for k, v in self.by_path.items()},
            "by_model": dict(self.by_model),
            "faults_fired": dict(self.faults_fired),
            "faults_pending": len(self.faults),
        }

    async def _models(self, headers: dict[bytes, bytes], send: Send) -> None:
        if b"anthropic-version" in headers:
            claude = [
                {"type": "model", "id": m, "display_name": m, "created_at": "2025-01-01T00:00:00Z"}
                for m in MODELS
                if m.startswith("claude")
            ]
            await self._json(
                send,
                {
                    "data": claude,
                    "has_more": False,
                    "first_id": claude[0]["id"],
                    "last_id": claude[-1]["id"],
                },
            )
            return
        data: list[dict[str, Any]] = [
            {"id": m, "object": "model", "created": 1_700_000_000, "owned_by": "spendgate-sim"}
            for m in MODELS
        ]
        await self._json(send, {"object": "list", "data": data})

    # -- generation --

    def _answer(
        self,
        model: str,
        prompt_key: bytes,
        prompt_text: str,
        prompt_tokens: int,
        limit: int | None,
        tool: tuple[str, dict[str, Any]] | None,
        json_schema: dict[str, Any] | None,
        json_object: bool,
        reasoning_effort: str | None,
    ) -> _Answer:
        rng = random.Random(_digest(prompt_key, str(self.seed).encode()))
        out = _Answer()
        name = model.lower().rsplit("/", 1)[-1]
        if name.startswith(_REASONING_PREFIXES):
            scale = {"minimal": 0.1, "low": 0.4, "high": 2.5}.get(reasoning_effort or "", 1.0)
            out.reasoning = max(16, int(rng.lognormvariate(math.log(320 * scale), 0.5)))
            if limit is not None:
                out.reasoning = min(out.reasoning, max(0, limit // 2))
        visible_limit = None if limit is None else max(0, limit - out.reasoning)
        context = prompt_text[-400:]
        if tool is not None:
            out.tool = tool[0]
            out.args = orjson.dumps(_object_for(rng, tool[1], context, 0, all_props=False)).decode()
            out.visible = tokens.count_text(model, out.tool) + tokens.count_text(model, out.args)
        elif json_schema is not None or json_object:
            if json_schema is not None:
                value: Any = _object_for(rng, json_schema, context, 0, all_props=True)
            else:
                text = "".join(_sentence_pieces(rng, _target_tokens(rng, prompt_text, 0) // 2))
                value = {"answer": text.strip()}
            out.pieces = [orjson.dumps(value).decode()]
            out.visible = tokens.count_text(model, out.pieces[0])
        else:
            target = _target_tokens(rng, prompt_text, prompt_tokens)
            pieces = _sentence_pieces(rng, target)
            out.pieces = pieces
            out.visible = tokens.count_text(model, "".join(pieces))
            if visible_limit is not None and out.visible > visible_limit:
                out.pieces, out.visible = _fit(model, pieces, visible_limit)
                out.truncated = True
        out.completion = out.visible + out.reasoning
        return out

    def _ttft(self, prompt_tokens: int, out: _Answer, rng: random.Random) -> float:
        return 0.25 + prompt_tokens * 2e-5 + out.reasoning * 0.004 + rng.uniform(0, 0.15)

    @staticmethod
    def _per_token(model: str) -> float:
        name = model.lower()
        if any(k in name for k in ("mini", "nano", "haiku", "flash")):
            return 0.007
        if "opus" in name or name.startswith("gpt-4-") or name == "gpt-4":
            return 0.03
        return 0.015

    # -- OpenAI prompt caching --

    def _openai_cached(self, model: str, body: dict[str, Any], prompt_tokens: int) -> int:
        """Automatic prefix caching: the longest 128-token-aligned prefix (≥ 1024 tokens) of
        this prompt seen in the last 10 minutes; every prefix of this one is then stored."""
        if prompt_tokens < CACHE_MIN_TOKENS:
            return 0
        parts = [orjson.dumps(body.get("tools") or []).decode()]
        for m in body.get("messages") or ():
            if isinstance(m, dict):
                parts.append(f"<|{m.get('role')}|>{_text_of(m.get('content'))}")
                if m.get("tool_calls"):
                    parts.append(orjson.dumps(m["tool_calls"]).decode())
        ids = tokens.encode(model, "\n".join(parts))
        usable = min(len(ids), prompt_tokens)
        if usable < CACHE_MIN_TOKENS:
            return 0
        now = time.monotonic()
        cache = self._openai_cache
        h = hashlib.blake2b(model.encode(), digest_size=16)
        h.update(struct.pack(f"<{CACHE_MIN_TOKENS}I", *ids[:CACHE_MIN_TOKENS]))
        keys = [(CACHE_MIN_TOKENS, h.digest())]
        for end in range(CACHE_MIN_TOKENS + OPENAI_CACHE_STEP, usable + 1, OPENAI_CACHE_STEP):
            h.update(struct.pack(f"<{OPENAI_CACHE_STEP}I", *ids[end - OPENAI_CACHE_STEP : end]))
            keys.append((end, h.digest()))
        cached = 0
        for length, key in keys:
            expires = cache.get(key)
            if expires is not None and expires > now:
                cached = length
            cache[key] = now + OPENAI_CACHE_TTL
            cache.move_to_end(key)
        while len(cache) > CACHE_ENTRIES:
            cache.popitem(last=False)
        return cached

    # -- Anthropic prompt caching --

    def _anthropic_cache_usage(self, model: str, body: dict[str, Any]) -> tuple[int, int, int, int]:
        """(total input, cache read, cache write 5m, cache write 1h) for a Messages body.

        The prefix up to the furthest breakpoint already cached is read; the part from there to
        the last breakpoint is written, each stretch at the TTL of the breakpoint that ends it.
        Breakpoints whose prefix is under the minimum are not cached, as on the real API.
        """
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
        total = running
        points = [p for p in points if p[0] >= CACHE_MIN_TOKENS]
        if not points:
            return total, 0, 0, 0
        now = time.monotonic()
        cache = self._anthropic_cache
        read = 0
        for length, key, ttl in points:
            expires = cache.get(key)
            if expires is not None and expires > now:
                read = length
                cache[key] = now + ttl  # a hit refreshes the entry's lifetime
        write_5m = write_1h = 0
        previous = read
        for length, key, ttl in points:
            if length <= read:
                continue
            if ttl > 300:
                write_1h += length - previous
            else:
                write_5m += length - previous
            previous = length
            cache[key] = now + ttl
            cache.move_to_end(key)
        while len(cache) > CACHE_ENTRIES:
            cache.popitem(last=False)
        return total, read, write_5m, write_1h

    # -- streaming helper --

    async def _stream(
        self,
        send: Send,
        events: list[bytes],
        ttft: float,
        per_event: float,
        fault: dict[str, Any] | None,
    ) -> None:
        headers = [*_SSE, (b"x-request-id", self._next_id().encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        cut = None
        if fault is not None and fault.get("kind") == "cut":
            cut = int(fault.get("after_chunks", 3))
            events = events[:cut]
        if self.latency == "none":
            await send({"type": "http.response.body", "body": b"".join(events), "more_body": True})
        else:
            await asyncio.sleep(ttft)
            for event in events:
                await send({"type": "http.response.body", "body": event, "more_body": True})
                await asyncio.sleep(per_event)
        if cut is not None:
            if fault is not None and fault.get("mode") == "eof":
                await send({"type": "http.response.body", "body": b""})
                return
            raise _Cut
        await send({"type": "http.response.body", "body": b""})

    async def _respond(
        self, send: Send, payload: dict[str, Any], delay: float, fault: dict[str, Any] | None
    ) -> None:
        if delay > 0:
            await asyncio.sleep(delay)
        data = orjson.dumps(payload)
        headers = [*_JSON, (b"x-request-id", self._next_id().encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        if fault is not None and fault.get("kind") == "cut":
            await send(
                {"type": "http.response.body", "body": data[: len(data) // 2], "more_body": True}
            )
            raise _Cut
        await send({"type": "http.response.body", "body": data})

    # -- /v1/chat/completions --

    async def _chat(
        self,
        body: dict[str, Any],
        model: str,
        headers: dict[bytes, bytes],
        send: Send,
        fault: dict[str, Any] | None,
    ) -> None:
        messages = body.get("messages")
        if not model:
            await self._error(send, "openai", 400, "you must provide a model parameter", None)
            return
        if not isinstance(messages, list) or not messages:
            await self._error(send, "openai", 400, "'messages' must be a non-empty array.")
            return
        prompt_tokens = tokens.count_openai_request(model, body)
        prompt_text = "\n".join(_text_of(m.get("content")) for m in messages if isinstance(m, dict))
        prompt_key = orjson.dumps(
            [model, messages, body.get("tools"), body.get("response_format")],
            option=orjson.OPT_SORT_KEYS,
        )
        tool_defs = {
            t["function"]["name"]: t["function"].get("parameters") or {}
            for t in body.get("tools") or ()
            if isinstance(t, dict) and isinstance(t.get("function"), dict)
        }
        choice = body.get("tool_choice")
        forced = None
        if isinstance(choice, dict):
            forced = (choice.get("function") or {}).get("name")
            choice = "required"
        picked = _pick_tool(list(tool_defs), choice, forced, _last_user_text(messages))
        raw_rf = body.get("response_format")
        rf: dict[str, Any] = raw_rf if isinstance(raw_rf, dict) else {}
        schema = None
        if rf.get("type") == "json_schema":
            schema = (rf.get("json_schema") or {}).get("schema") or {}
        limit = body.get("max_completion_tokens") or body.get("max_tokens")
        out = self._answer(
            model,
            prompt_key,
            prompt_text,
            prompt_tokens,
            int(limit) if limit else None,
            (picked, tool_defs.get(picked) or {}) if picked else None,
            schema,
            rf.get("type") == "json_object",
            body.get("reasoning_effort"),
        )
        cached = self._openai_cached(model, body, prompt_tokens)
        usage: dict[str, Any] = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": out.completion,
            "total_tokens": prompt_tokens + out.completion,
            "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": out.reasoning,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        }
        usage = _usage_override(fault) or usage
        tier = _openai_tier(body.get("service_tier"))
        finish = "tool_calls" if out.tool else ("length" if out.truncated else "stop")
        cid = "chatcmpl-" + self._next_id()
        created = int(time.time())
        call_id = "call_" + hashlib.blake2b(prompt_key, digest_size=12).hexdigest()
        rng = random.Random(prompt_key)
        per_token = self._per_token(model) if self.latency == "realistic" else 0.0
        ttft = self._ttft(prompt_tokens, out, rng) if self.latency == "realistic" else 0.0
        if not body.get("stream"):
            message: dict[str, Any] = {
                "role": "assistant",
                "content": None if out.tool else "".join(out.pieces),
                "refusal": None,
                "annotations": [],
            }
            if out.tool:
                message["tool_calls"] = [
                    {
                        "id": call_id,
                        "type": "function",
                        "function": {"name": out.tool, "arguments": out.args},
                    }
                ]
            payload = {
                "id": cid,
                "object": "chat.completion",
                "created": created,
                "model": model,
                "choices": [
                    {"index": 0, "message": message, "logprobs": None, "finish_reason": finish}
                ],
                "usage": usage,
                "service_tier": tier,
                "system_fingerprint": "fp_spendgate_sim",
            }
            await self._respond(send, payload, ttft + per_token * out.visible, fault)
            return
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        head = (
            b'{"id":"'
            + cid.encode()
            + b'","object":"chat.completion.chunk","created":'
            + str(created).encode()
            + b',"model":'
            + orjson.dumps(model)
            + b',"service_tier":'
            + orjson.dumps(tier)
            + b',"system_fingerprint":"fp_spendgate_sim","choices":'
        )
        tail = b',"usage":null}\n\n' if include_usage else b"}\n\n"

        def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
            return b"data: " + head + orjson.dumps([choice]) + tail

        if out.tool:
            first: dict[str, Any] = {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "index": 0,
                        "id": call_id,
                        "type": "function",
                        "function": {"name": out.tool, "arguments": ""},
                    }
                ],
            }
            events = [chunk(first)]
            step = 8
            for i in range(0, len(out.args), step):
                piece = out.args[i : i + step]
                events.append(
                    chunk({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]})
                )
        else:
            events = [chunk({"role": "assistant", "content": "", "refusal": None})]
            events.extend(chunk({"content": p}) for p in out.pieces)
        events.append(chunk({}, finish))
        if include_usage:
            events.append(b"data: " + head + b'[],"usage":' + orjson.dumps(usage) + b"}\n\n")
        events.append(b"data: [DONE]\n\n")
        await self._stream(send, events, ttft, per_token, fault)

    # -- /v1/messages --

    async def _messages(
        self,
        body: dict[str, Any],
        model: str,
        headers: dict[bytes, bytes],
        send: Send,
        fault: dict[str, Any] | None,
    ) -> None:
        messages = body.get("messages")
        if not model:
            await self._error(send, "anthropic", 400, "model: Field required")
            return
        if body.get("max_tokens") is None:
            await self._error(send, "anthropic", 400, "max_tokens: Field required")
            return
        if not isinstance(messages, list) or not messages:
            await self._error(send, "anthropic", 400, "messages: at least one message is required")
            return
        total, read, write_5m, write_1h = self._anthropic_cache_usage(model, body)
        system = body.get("system")
        prompt_text = "\n".join(
            [_text_of(system)]
            + [_text_of(m.get("content")) for m in messages if isinstance(m, dict)]
        )
        prompt_key = orjson.dumps(
            [model, system, messages, body.get("tools")], option=orjson.OPT_SORT_KEYS
        )
        tool_defs = {
            t["name"]: t.get("input_schema") or {}
            for t in body.get("tools") or ()
            if isinstance(t, dict) and "name" in t
        }
        raw_tc = body.get("tool_choice")
        tc: dict[str, Any] = raw_tc if isinstance(raw_tc, dict) else {}
        kind = tc.get("type", "auto")
        picked = _pick_tool(
            list(tool_defs),
            kind,
            tc.get("name") if kind == "tool" else None,
            _last_user_text(messages),
        )
        out = self._answer(
            model,
            prompt_key,
            prompt_text,
            total,
            int(body["max_tokens"]),
            (picked, tool_defs.get(picked) or {}) if picked else None,
            None,
            # Claude has no JSON mode; it follows a system instruction asking for JSON only
            # (what translate.py appends for response_format), so the simulation does too.
            "respond with a single valid json" in _text_of(system).lower(),
            None,
        )
        stop = "tool_use" if out.tool else ("max_tokens" if out.truncated else "end_turn")
        usage: dict[str, Any] = {
            "input_tokens": total - read - write_5m - write_1h,
            "cache_creation_input_tokens": write_5m + write_1h,
            "cache_read_input_tokens": read,
            "output_tokens": out.completion,
            "cache_creation": {
                "ephemeral_5m_input_tokens": write_5m,
                "ephemeral_1h_input_tokens": write_1h,
            },
            "service_tier": "standard",
        }
        usage = _usage_override(fault) or usage
        mid = "msg_" + self._next_id()
        tool_id = "toolu_" + hashlib.blake2b(prompt_key, digest_size=12).hexdigest()
        rng = random.Random(prompt_key)
        per_token = self._per_token(model) if self.latency == "realistic" else 0.0
        ttft = self._ttft(total, out, rng) if self.latency == "realistic" else 0.0
        content: list[dict[str, Any]] = []
        if out.tool:
            content.append(
                {
                    "type": "tool_use",
                    "id": tool_id,
                    "name": out.tool,
                    "input": orjson.loads(out.args),
                }
            )
        else:
            content.append({"type": "text", "text": "".join(out.pieces)})
        message = {
            "id": mid,
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": content,
            "stop_reason": stop,
            "stop_sequence": None,
            "usage": usage,
        }
        if not body.get("stream"):
            await self._respond(send, message, ttft + per_token * out.visible, fault)
            return

        def event(name: str, data: dict[str, Any]) -> bytes:
            return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"

        start_usage = {**usage, "output_tokens": 1}
        events = [
            event(
                "message_start",
                {
                    "type": "message_start",
                    "message": {
                        **message,
                        "content": [],
                        "stop_reason": None,
                        "usage": start_usage,
                    },
                },
            )
        ]
        if out.tool:
            block = {"type": "tool_use", "id": tool_id, "name": out.tool, "input": {}}
            events.append(
                event(
                    "content_block_start",
                    {"type": "content_block_start", "index": 0, "content_block": block},
                )
            )
            events.append(event("ping", {"type": "ping"}))
            for i in range(0, len(out.args), 8):
                delta = {"type": "input_json_delta", "partial_json": out.args[i : i + 8]}
                events.append(
                    event(
                        "content_block_delta",
                        {"type": "content_block_delta", "index": 0, "delta": delta},
                    )
                )
        else:
            block = {"type": "text", "text": ""}
            events.append(
                event(
                    "content_block_start",
                    {"type": "content_block_start", "index": 0, "content_block": block},
                )
            )
            events.append(event("ping", {"type": "ping"}))
            for piece in out.pieces:
                delta = {"type": "text_delta", "text": piece}
                events.append(
                    event(
                        "content_block_delta",
                        {"type": "content_block_delta", "index": 0, "delta": delta},
                    )
                )
        events.append(event("content_block_stop", {"type": "content_block_stop", "index": 0}))
        events.append(
            event(
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": stop, "stop_sequence": None},
                    "usage": {"output_tokens": usage.get("output_tokens", out.completion)},
                },
            )
        )
        events.append(event("message_stop", {"type": "message_stop"}))
        await self._stream(send, events, ttft, per_token, fault)

    # -- /v1/messages/count_tokens --

    async def _count_tokens(
        self,
        body: dict[str, Any],
        model: str,
        headers: dict[bytes, bytes],
        send: Send,
        fault: dict[str, Any] | None,
    ) -> None:
        if not model or not isinstance(body.get("messages"), list):
            await self._error(send, "anthropic", 400, "model and messages are required")
            return
        await self._json(send, {"input_tokens": tokens.count_anthropic_request(model, body)})

    # -- /v1/responses --

    async def _responses(
        self,
        body: dict[str, Any],
        model: str,
        headers: dict[bytes, bytes],
        send: Send,
        fault: dict[str, Any] | None,
    ) -> None:
        from spendgate.providers.simulated_responses import serve_responses

        await serve_responses(self, body, model, headers, send, fault)

    # -- /v1/embeddings --

    async def _embeddings(
        self,
        body: dict[str, Any],
        model: str,
        headers: dict[bytes, bytes],
        send: Send,
        fault: dict[str, Any] | None,
    ) -> None:
        raw_input = body.get("input")
        if not model or raw_input is None or raw_input == [] or raw_input == "":
            await self._error(send, "openai", 400, "'input' and 'model' are required.")
            return
        if isinstance(raw_input, str) or (
            isinstance(raw_input, list) and all(isinstance(x, int) for x in raw_input)
        ):
            items: list[Any] = [raw_input]
        else:
            items = list(raw_input)
        dims = body.get("dimensions") or (3072 if model.endswith("-large") else 1536)
        if not isinstance(dims, int) or not 1 <= dims <= 3072:
            # OpenAI's widest model has 3,072; an unbounded value would allocate without limit.
            await self._error(send, "openai", 400, "'dimensions' must be between 1 and 3072.")
            return
        as_b64 = body.get("encoding_format") == "base64"
        data = []
        for index, item in enumerate(items):
            seed = _digest(model.encode(), orjson.dumps(item), str(self.seed).encode())
            rng = random.Random(seed)
            vec = [rng.gauss(0.0, 1.0) for _ in range(dims)]
            norm = math.sqrt(sum(v * v for v in vec)) or 1.0
            vec = [v / norm for v in vec]
            embedding: Any = (
                base64.b64encode(struct.pack(f"<{dims}f", *vec)).decode() if as_b64 else vec
            )
            data.append({"object": "embedding", "index": index, "embedding": embedding})
        used = tokens.count_embedding_input(model, raw_input)
        payload = {
            "object": "list",
            "data": data,
            "model": model,
            "usage": {"prompt_tokens": used, "total_tokens": used},
        }
        delay = 0.05 + used * 1e-5 if self.latency == "realistic" else 0.0
        await self._respond(send, payload, delay, fault)


def create_app(latency: str = "none", seed: int = 0, require_key: str | None = None) -> SimApp:
    """The simulated upstream as an ASGI app (mount it, or run it with `serve`)."""
    return SimApp(latency=latency, seed=seed, require_key=require_key)


# ---- running it ---------------------------------------------------------------------------


class _QuietCut(logging.Filter):
    """A deliberate "cut" fault makes uvicorn log that the app did not finish its response;
    that is the point of the fault, not an error worth a log line."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "without completing response" not in record.getMessage()


def _config(app: SimApp, host: str, port: int, log_level: str) -> uvicorn.Config:
    logging.getLogger("uvicorn.error").addFilter(_QuietCut())
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        loop="uvloop",
        http="httptools",
        lifespan="off",
        access_log=False,
        log_level=log_level,
        timeout_graceful_shutdown=5,
        backlog=4096,
    )


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, ready: threading.Event) -> None:
        super().__init__(config)
        self._ready = ready
        self.loop: asyncio.AbstractEventLoop | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        self.loop = asyncio.get_running_loop()
        try:
            await super().startup(sockets)
        finally:
            self._ready.set()


class SimulatedUpstream:
    """The simulated upstream on a loopback port in a background thread.

    `with SimulatedUpstream() as up: OpenAI(base_url=up.url + "/v1")`. The socket is bound
    before the thread starts (so `.url` is known at once) and `start()` returns only after
    uvicorn has finished its startup, so the first request never races the server.
    """

    def __init__(
        self,
        latency: str = "none",
        seed: int = 0,
        port: int = 0,
        require_key: str | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        self.app = create_app(latency=latency, seed=seed, require_key=require_key)
        self.host = host
        self.port = port
        self._sock: socket.socket | None = None
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 10.0) -> SimulatedUpstream:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        self.port = sock.getsockname()[1]
        self.app.public_url = self.url
        self._sock = sock
        ready = threading.Event()
        server = _Server(_config(self.app, self.host, self.port, "warning"), ready)
        self._server = server
        self._thread = threading.Thread(
            target=server.run, kwargs={"sockets": [sock]}, name="sim-upstream", daemon=True
        )
        self._thread.start()
        if not ready.wait(timeout) or not server.started:
            self.stop()
            raise RuntimeError("simulated upstream failed to start")
        return self

    def stop(self) -> None:
        """Graceful: held responses are released, open streams finish, then the thread ends."""
        server, thread = self._server, self._thread
        if server is not None:
            if server.loop is not None and not server.loop.is_closed():
                server.loop.call_soon_threadsafe(self.app.release)
            server.should_exit = True
        if thread is not None:
            thread.join(timeout=15)
        if self._sock is not None:
            self._sock.close()
        self._server = self._thread = self._sock = None

    def stats(self) -> dict[str, Any]:
        return self.app.stats()

    def __enter__(self) -> SimulatedUpstream:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve(
    host: str = "127.0.0.1", port: int = 8900, latency: str = "realistic", seed: int = 0
) -> None:
    """Run the simulated upstream in the foreground (`spendgate simulate-upstream`)."""
    app = create_app(latency=latency, seed=seed)
    uvicorn.Server(_config(app, host, port, "info")).run()
