"""Anthropic Messages: the system prompt is a top-level field, content is typed blocks, usage
counts input *excluding* cache reads and writes, errors have their own envelope."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import orjson

from spendgate.call import API, Endpoint, Usage
from spendgate.errors import GatewayError
from spendgate.pricing import usage_from_anthropic
from spendgate.providers.dialects.base import (
    GOOD_FINISH,
    JSON,
    TOOL_FINISH,
    DialectDefaults,
    events,
    sse,
)
from spendgate.providers.translate import (
    anthropic_to_openai_request,
    openai_response_to_anthropic,
)
from spendgate.tokens import count_anthropic_request

__all__ = ["ANTHROPIC", "ANTHROPIC_VERSION", "AnthropicDialect", "messages_answer_text"]

ANTHROPIC_VERSION = "2023-06-01"


def _system_text(body: JSON) -> str:
    system = body.get("system")
    if isinstance(system, str):
        return system
    if isinstance(system, list):
        return "\n".join(
            str(b.get("text") or "")
            for b in system
            if isinstance(b, dict) and b.get("type") == "text"
        )
    return ""


def messages_answer_text(body: JSON) -> str:
    """The text blocks of a Messages answer, tool uses as `{name: input}` JSON."""
    content = body.get("content")
    if not isinstance(content, list):
        return ""
    parts = []
    for block in content:
        if not isinstance(block, dict):
            continue
        if block.get("type") == "text":
            parts.append(str(block.get("text", "")))
        elif block.get("type") == "tool_use":
            parts.append(json.dumps({block.get("name"): block.get("input")}, sort_keys=True))
    return "".join(parts)


class AnthropicDialect(DialectDefaults):
    api: API = "anthropic"
    endpoint: Endpoint = "messages"
    path = "/v1/messages"
    chat_family = True
    system_in_messages = False
    client_cache_control = True
    passes_upstream_errors = False
    client_headers: Mapping[str, str] = {"anthropic-version": ANTHROPIC_VERSION}
    logprobs_field: str | None = None

    # ---- reading a request
    def count_request(self, model: str, body: JSON) -> int:
        return count_anthropic_request(model, body)

    def system_text(self, body: JSON) -> str:
        return _system_text(body)

    def system_material(self, body: JSON) -> Any:
        return body.get("system")

    def output_limit(self, body: JSON, reasoning: bool) -> tuple[str, int | None]:
        value = body.get("max_tokens")
        return "max_tokens", value if isinstance(value, int) else None

    # ---- changing a request
    def with_hint(self, body: JSON, text: str, *, reasoning: bool, json_mode: bool) -> JSON:
        return _append_system(body, text)

    def with_history(self, head: list[Any], kept: list[Any], note: str) -> list[Any]:
        return kept  # the note goes into `system` (`with_summary`)

    def with_summary(self, body: JSON, summary: str) -> JSON:
        return _append_system(body, summary)

    def conversation(self, model: str, system: str, messages: list[Any]) -> JSON:
        return {"model": model, "system": system, "messages": messages}

    def client_request(self, payload: JSON) -> JSON:
        payload.setdefault("max_tokens", 1024)  # required by Messages
        return payload

    # ---- answers
    def parse_usage(self, raw: Mapping[str, Any]) -> Usage:
        return usage_from_anthropic(dict(raw))

    def answer_text(self, body: JSON) -> str:
        return messages_answer_text(body)

    def is_answer(self, body: JSON) -> bool:
        return body.get("type") == "message"

    def skip_reason(self, body: JSON, *, cache_tool_calls: bool) -> str | None:
        stop = body.get("stop_reason")
        blocks = body.get("content") or []
        if stop == "refusal":
            return "refusal"
        if stop in TOOL_FINISH or any(b.get("type") == "tool_use" for b in blocks):
            return None if cache_tool_calls else "tool_calls"
        if stop not in GOOD_FINISH:
            return f"stop_reason={stop}"
        if any(b.get("type") not in ("text",) for b in blocks):
            return "non-text content"
        return None

    def zero_usage(self, body: JSON) -> JSON:
        return {**body, "usage": {"input_tokens": 0, "output_tokens": 0}}

    def error_body(self, error: GatewayError) -> JSON:
        return error.to_anthropic()

    def error_frame(self, message: str, code: str) -> bytes:
        payload = {"type": "error", "error": {"type": "api_error", "message": message}}
        return b"event: error\ndata: " + orjson.dumps(payload) + b"\n\n"

    def body_from_sse(self, raw: bytes) -> JSON | None:
        return _body_from_events(raw)

    def sse_from_body(self, body: JSON, *, include_usage: bool) -> list[bytes]:
        return _events_from_body(body)

    # ---- between formats
    def request_as(self, wire: API, body: JSON) -> JSON:
        return anthropic_to_openai_request(body) if wire == "openai" else body

    def response_from(
        self, wire: API, data: JSON, *, request: JSON, model: str, response_id: str
    ) -> JSON:
        return openai_response_to_anthropic(data, model=model) if wire == "openai" else data


ANTHROPIC = AnthropicDialect()


def _append_system(body: JSON, text: str) -> JSON:
    system = body.get("system")
    if system is None or system == "":
        return {**body, "system": text}
    if isinstance(system, str):
        return {**body, "system": system + "\n\n" + text}
    return {**body, "system": [*system, {"type": "text", "text": text}]}


def _body_from_events(raw: bytes) -> JSON | None:
    message: JSON | None = None
    text: list[str] = []
    stop = None
    stopped = False
    for event, data in events(raw):
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


def _events_from_body(body: JSON) -> list[bytes]:
    start = {k: v for k, v in body.items() if k not in ("content", "stop_reason", "usage")}
    start.update(
        content=[],
        stop_reason=None,
        stop_sequence=None,
        usage={"input_tokens": 0, "output_tokens": 0},
    )
    out = [sse("message_start", {"type": "message_start", "message": start})]
    for i, block in enumerate(body.get("content") or ()):
        delta: JSON
        if block.get("type") == "tool_use":
            empty = {**block, "input": {}}
            partial = orjson.dumps(block["input"]).decode()
            delta = {"type": "input_json_delta", "partial_json": partial}
        else:
            empty = {"type": "text", "text": ""}
            delta = {"type": "text_delta", "text": block.get("text", "")}
        start_ev = {"type": "content_block_start", "index": i, "content_block": empty}
        out.append(sse("content_block_start", start_ev))
        delta_ev = {"type": "content_block_delta", "index": i, "delta": delta}
        out.append(sse("content_block_delta", delta_ev))
        out.append(sse("content_block_stop", {"type": "content_block_stop", "index": i}))
    stop = {"stop_reason": body.get("stop_reason"), "stop_sequence": body.get("stop_sequence")}
    message_delta = {"type": "message_delta", "delta": stop, "usage": {"output_tokens": 0}}
    out.append(sse("message_delta", message_delta))
    out.append(sse("message_stop", {"type": "message_stop"}))
    return out
