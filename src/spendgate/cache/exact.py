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
import time
from typing import Any

import orjson

from spendgate.call import Call, Usage
from spendgate.providers import responses as responses_dialect

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

NON_ANSWER_FIELDS = frozenset(
    {"stream", "stream_options", "user", "metadata", "store", "include", "safety_identifier"}
)
_GOOD_FINISH = frozenset({"stop", "end_turn", "stop_sequence"})
_TOOL_FINISH = frozenset({"tool_calls", "tool_use", "function_call"})


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
    material = {k: v for k, v in call.body.items() if k not in NON_ANSWER_FIELDS}
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


def response_skip_reason(body: dict[str, Any] | None, *, cache_tool_calls: bool) -> str | None:
    """Why this answer must not be stored (None: it may). Errors, refusals, truncated and
    filtered answers are never stored; tool calls only when enabled."""
    if not isinstance(body, dict):
        return "no body"
    if body.get("object") == "response":  # OpenAI Responses
        return responses_dialect.is_cacheable(body, cache_tool_calls=cache_tool_calls)
    if "choices" in body:  # OpenAI
        choices = body.get("choices") or []
        if len(choices) != 1 or not isinstance(choices[0], dict):
            return "choices"
        choice = choices[0]
        finish = choice.get("finish_reason")
        message = choice.get("message") or {}
        if message.get("refusal"):
            return "refusal"
        if finish in _TOOL_FINISH or message.get("tool_calls"):
            return None if cache_tool_calls else "tool_calls"
        if finish not in _GOOD_FINISH:
            return f"finish_reason={finish}"
        return None
    if body.get("type") == "message":  # Anthropic
        stop = body.get("stop_reason")
        blocks = body.get("content") or []
        if stop == "refusal":
            return "refusal"
        if stop in _TOOL_FINISH or any(b.get("type") == "tool_use" for b in blocks):
            return None if cache_tool_calls else "tool_calls"
        if stop not in _GOOD_FINISH:
            return f"stop_reason={stop}"
        if any(b.get("type") not in ("text",) for b in blocks):
            return "non-text content"
        return None
    return "unknown shape"


def zero_usage_body(body: dict[str, Any]) -> dict[str, Any]:
    """The stored body as a hit returns it: nothing was billed for this call."""
    out = dict(body)
    if out.get("object") == "response":
        out["usage"] = responses_dialect.zero_usage()
    elif "choices" in out:
        out["usage"] = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    else:
        out["usage"] = {"input_tokens": 0, "output_tokens": 0}
    return out


# ------------------------------------------------------------------ streams ↔ bodies


def _events(raw: bytes) -> list[tuple[str | None, bytes]]:
    out: list[tuple[str | None, bytes]] = []
    for block in raw.replace(b"\r\n", b"\n").split(b"\n\n"):
        event: str | None = None
        data: list[bytes] = []
        for line in block.split(b"\n"):
            if line.startswith(b"data:"):
                data.append(line[5:].lstrip(b" "))
            elif line.startswith(b"event:"):
                event = line[6:].strip().decode()
        if data:
            out.append((event, b"\n".join(data)))
    return out


def body_from_sse(api: str, raw: bytes) -> dict[str, Any] | None:
    """Rebuild the non-streaming body a stream amounts to (text answers only; None when the
    stream holds anything we would not replay faithfully)."""
    try:
        if api == "responses":
            return responses_dialect.body_from_events(_events(raw))
        if api == "openai":
            return _openai_body(raw)
        return _anthropic_body(raw)
    except (ValueError, TypeError, KeyError, AttributeError):
        return None


def _openai_body(raw: bytes) -> dict[str, Any] | None:
    text: list[str] = []
    finish = None
    head: dict[str, Any] = {}
    done = False
    for _, data in _events(raw):
        if data == b"[DONE]":
            done = True
            continue
        chunk = orjson.loads(data)
        if "error" in chunk:
            return None
        head = head or chunk
        for choice in chunk.get("choices") or ():
            if choice.get("index", 0) != 0:
                return None
            delta = choice.get("delta") or {}
            if delta.get("tool_calls") or delta.get("refusal") or delta.get("function_call"):
                return None
            if delta.get("content"):
                text.append(delta["content"])
            if choice.get("finish_reason"):
                finish = choice["finish_reason"]
    if not done or not head:
        return None
    return {
        "id": head.get("id"),
        "object": "chat.completion",
        "created": head.get("created", int(time.time())),
        "model": head.get("model"),
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "".join(text), "refusal": None},
                "logprobs": None,
                "finish_reason": finish,
            }
        ],
    }


def _anthropic_body(raw: bytes) -> dict[str, Any] | None:
    message: dict[str, Any] | None = None
    text: list[str] = []
    stop = None
    stopped = False
    for event, data in _events(raw):
        payload = orjson.loads(data)
        kind = event or payload.get("type")
        if kind == "message_start":
            message = dict(payload["message"])
        elif kind == "content_block_start":
            if payload["content_block"].get("type") != "text":
                return None
        elif kind == "content_block_delta":
            delta = payload["delta"]
            if delta.get("type") != "text_delta":
                return None
            text.append(delta["text"])
        elif kind == "message_delta":
            stop = (payload.get("delta") or {}).get("stop_reason")
        elif kind == "message_stop":
            stopped = True
        elif kind == "error":
            return None
    if message is None or not stopped:
        return None
    message.update(
        content=[{"type": "text", "text": "".join(text)}], stop_reason=stop, stop_sequence=None
    )
    return message


def _sse(name: str | None, payload: Any) -> bytes:
    data = payload if isinstance(payload, bytes) else orjson.dumps(payload)
    return (b"event: " + name.encode() + b"\n" if name else b"") + b"data: " + data + b"\n\n"


def sse_from_body(api: str, body: dict[str, Any], *, include_usage: bool) -> list[bytes]:
    """The SSE events a provider would have streamed for `body`, with zero usage."""
    if api == "responses":
        return [responses_dialect.sse(e) for e in responses_dialect.events_from_response(body)]
    if api == "openai":
        return _openai_sse(body, include_usage)
    return _anthropic_sse(body)


def _openai_sse(body: dict[str, Any], include_usage: bool) -> list[bytes]:
    base = {
        "id": body.get("id"),
        "object": "chat.completion.chunk",
        "created": body.get("created", int(time.time())),
        "model": body.get("model"),
    }

    def chunk(delta: dict[str, Any], finish: Any = None) -> bytes:
        choice = {"index": 0, "delta": delta, "finish_reason": finish}
        return _sse(None, {**base, "choices": [choice]})

    choice = body["choices"][0]
    message = choice.get("message") or {}
    out = [chunk({"role": "assistant", "content": ""})]
    if message.get("content"):
        out.append(chunk({"content": message["content"]}))
    for i, tc in enumerate(message.get("tool_calls") or ()):
        out.append(chunk({"tool_calls": [{"index": i, **tc}]}))
    out.append(chunk({}, choice.get("finish_reason")))
    if include_usage:
        usage = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
        out.append(_sse(None, {**base, "choices": [], "usage": usage}))
    out.append(b"data: [DONE]\n\n")
    return out


def _anthropic_sse(body: dict[str, Any]) -> list[bytes]:
    start = {k: v for k, v in body.items() if k not in ("content", "stop_reason", "usage")}
    start.update(
        content=[],
        stop_reason=None,
        stop_sequence=None,
        usage={"input_tokens": 0, "output_tokens": 0},
    )
    out = [_sse("message_start", {"type": "message_start", "message": start})]
    for i, block in enumerate(body.get("content") or ()):
        delta: dict[str, Any]
        if block.get("type") == "tool_use":
            empty = {**block, "input": {}}
            partial = orjson.dumps(block["input"]).decode()
            delta = {"type": "input_json_delta", "partial_json": partial}
        else:
            empty = {"type": "text", "text": ""}
            delta = {"type": "text_delta", "text": block.get("text", "")}
        start_ev = {"type": "content_block_start", "index": i, "content_block": empty}
        out.append(_sse("content_block_start", start_ev))
        delta_ev = {"type": "content_block_delta", "index": i, "delta": delta}
        out.append(_sse("content_block_delta", delta_ev))
        out.append(_sse("content_block_stop", {"type": "content_block_stop", "index": i}))
    stop = {"stop_reason": body.get("stop_reason"), "stop_sequence": body.get("stop_sequence")}
    message_delta = {"type": "message_delta", "delta": stop, "usage": {"output_tokens": 0}}
    out.append(_sse("message_delta", message_delta))
    out.append(_sse("message_stop", {"type": "message_stop"}))
    return out


def usage_to_dict(usage: Usage) -> dict[str, int]:
    return {
        "input_tokens": usage.input_tokens,
        "output_tokens": usage.output_tokens,
        "cache_read_tokens": usage.cache_read_tokens,
        "cache_write_tokens": usage.cache_write_tokens,
        "cache_write_1h_tokens": usage.cache_write_1h_tokens,
        "reasoning_tokens": usage.reasoning_tokens,
    }


def usage_from_dict(data: dict[str, Any]) -> Usage:
    usage = Usage()
    for name in _USAGE_FIELDS:
        if name in data:
            setattr(usage, name, int(data[name]))
    return usage


_USAGE_FIELDS = (
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "cache_write_1h_tokens",
    "reasoning_tokens",
)
