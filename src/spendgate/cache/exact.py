"""Exact-match keys, what may be cached, and replaying a stored answer in either format.

The key is a hash of the normalised request — everything in the body that can change the
answer (model, messages/system, tools, tool_choice, sampling params, response_format, seed,
stop, max tokens…) — plus the scope (tenant by default). Fields that cannot change the
answer (stream, stream_options, user, metadata) are left out, so a streamed and a plain
request share an entry; everything else stays in, because a false hit costs more than a
miss.

Entries store the answer once, as a non-streaming body in the client's wire format;
a streaming request is answered by synthesising the SSE events from it.
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

from spendgate.call import TOKEN_COUNTS, Call, Usage
from spendgate.providers.dialects import ANTHROPIC, DIALECTS, Dialect, dialect_for
from spendgate.providers.dialects.base import NON_ANSWER_FIELDS

__all__ = [
    "NON_ANSWER_FIELDS",
    "body_from_sse",
    "exact_key",
    "request_skip_reason",
    "response_skip_reason",
    "scope_value",
    "sse_from_body",
    "zero_usage_body",
]


def scope_value(call: Call, scope: str) -> str:
    tenant = call.tags.tenant or "(none)"
    feature = call.tags.feature or "(none)"
    if scope == "tenant":
        return "t:" + tenant
    if scope == "feature":
        return "f:" + feature
    if scope == "tenant+feature":
        return f"t:{tenant}|f:{feature}"
    return "global"


def exact_key(call: Call, scope: str) -> str:
    material = dialect_for(call.api).cache_key_body(call.body)
    material["model"] = call.model
    payload = orjson.dumps(
        {"api": call.api, "endpoint": call.endpoint, "scope": scope_value(call, scope),
         "body": material},
        option=orjson.OPT_SORT_KEYS,
    )  # fmt: skip
    return hashlib.blake2b(payload, digest_size=20).hexdigest()


def request_skip_reason(call: Call, *, cache_sampled: bool) -> str | None:
    """Why this request must not use the cache at all (None: it may)."""
    if call.endpoint not in ("chat", "messages", "responses"):
        return "endpoint"
    body = call.body
    n = body.get("n")
    if isinstance(n, int) and n > 1:
        return "n>1"
    temperature = body.get("temperature")
    if not cache_sampled and isinstance(temperature, int | float) and temperature > 0:
        return "temperature>0"
    return None


def _answer_dialect(body: dict[str, Any]) -> Dialect | None:
    """The format a stored or fresh answer is in, by its shape."""
    return next((d for d in DIALECTS.values() if d.is_answer(body)), None)


def response_skip_reason(body: dict[str, Any] | None, *, cache_tool_calls: bool) -> str | None:
    """Why this answer must not be stored (None: it may). Errors, refusals, truncated and
    filtered answers are never stored; tool calls only when enabled."""
    if not isinstance(body, dict):
        return "no body"
    dialect = _answer_dialect(body)
    if dialect is None:
        return "unknown shape"
    return dialect.skip_reason(body, cache_tool_calls=cache_tool_calls)


def zero_usage_body(body: dict[str, Any]) -> dict[str, Any]:
    """The stored body as a hit returns it: nothing was billed for this call."""
    return (_answer_dialect(body) or ANTHROPIC).zero_usage(body)


# ------------------------------------------------------------------ streams ↔ bodies


def body_from_sse(api: str, raw: bytes) -> dict[str, Any] | None:
    """Rebuild the non-streaming body a stream amounts to (text answers only; None when the
    stream holds anything we would not replay faithfully)."""
    try:
        return dialect_for(api).body_from_sse(raw)
    except (ValueError, TypeError, KeyError, AttributeError):
        return None


def sse_from_body(api: str, body: dict[str, Any], *, include_usage: bool) -> list[bytes]:
    """The SSE events a provider would have streamed for `body`, with zero usage."""
    return dialect_for(api).sse_from_body(body, include_usage=include_usage)


def usage_to_dict(usage: Usage) -> dict[str, int]:
    return {name: getattr(usage, name) for name in TOKEN_COUNTS}


def usage_from_dict(data: dict[str, Any]) -> Usage:
    usage = Usage()
    for name in TOKEN_COUNTS:
        if name in data:
            setattr(usage, name, int(data[name]))
    return usage
