"""OpenAI Chat Completions (and Embeddings, which share its usage and errors): the format of
OpenAI itself and of every OpenAI-compatible server (vLLM, Ollama, Groq, Azure's v1…)."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

import orjson

from spendgate.call import API, Endpoint, Usage
from spendgate.errors import GatewayError
from spendgate.pricing import usage_from_openai
from spendgate.providers.dialects.base import (
    GOOD_FINISH,
    JSON,
    TOOL_FINISH,
    DialectDefaults,
    events,
    sse,
)
from spendgate.providers.translate import (
    anthropic_response_to_openai,
    openai_to_anthropic_request,
)
from spendgate.tokens import count_openai_request

__all__ = ["OPENAI", "OpenAIDialect", "chat_answer_text", "chat_system_text"]

_SYSTEM_ROLES = ("system", "developer")


def _leading_system(body: JSON) -> list[Any]:
    """The `content` of the leading system/developer messages (the system prompt)."""
    out: list[Any] = []
    for msg in body.get("messages") or []:
        if not isinstance(msg, dict) or msg.get("role") not in _SYSTEM_ROLES:
            break
        out.append(msg.get("content"))
    return out


def chat_system_text(body: JSON) -> str:
    """The leading system/developer messages' text (text parts only), newline-joined."""
    parts: list[str] = []
    for content in _leading_system(body):
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, list):
            parts.extend(
                str(p.get("text") or "")
                for p in content
                if isinstance(p, dict) and p.get("type") == "text"
            )
    return "\n".join(parts)


def chat_answer_text(body: JSON) -> str:
    """The first choice's content, or its tool calls as sorted JSON."""
    choices = body.get("choices")
    if not (isinstance(choices, list) and choices and isinstance(choices[0], dict)):
        return ""
    msg = choices[0].get("message") or {}
    content = msg.get("content")
    if isinstance(content, str) and content:
        return content
    calls = msg.get("tool_calls")
    return json.dumps(calls, sort_keys=True) if calls else ""


class OpenAIDialect(DialectDefaults):
    api: API = "openai"
    endpoint: Endpoint = "chat"
    path = "/v1/chat/completions"
    chat_family = True
    system_in_messages = True
    client_cache_control = False
    passes_upstream_errors = True
    logprobs_field: str | None = "logprobs"

    # ---- reading a request
    def count_request(self, model: str, body: JSON) -> int:
        return count_openai_request(model, body)

    def system_text(self, body: JSON) -> str:
        return chat_system_text(body)

    def system_material(self, body: JSON) -> Any:
        return _leading_system(body)

    def output_limit(self, body: JSON, reasoning: bool) -> tuple[str, int | None]:
        for key in ("max_completion_tokens", "max_tokens"):
            value = body.get(key)
            if isinstance(value, int):
                return key, value
        return ("max_completion_tokens" if reasoning else "max_tokens"), None

    def answers_per_call(self, body: JSON) -> int:
        n = body.get("n")
        return n if isinstance(n, int) and n > 1 else 1

    # ---- changing a request
    def with_hint(self, body: JSON, text: str, *, reasoning: bool, json_mode: bool) -> JSON:
        messages = list(body.get("messages") or [])
        # Appended last: the prompt prefix (and so provider prompt caching) is unchanged.
        messages.append({"role": "developer" if reasoning else "system", "content": text})
        new = {**body, "messages": messages}
        if json_mode and "response_format" not in body and not body.get("tools"):
            new["response_format"] = {"type": "json_object"}
        return new

    def with_history(self, head: list[Any], kept: list[Any], note: str) -> list[Any]:
        return [*head, {"role": "system", "content": note}, *kept]

    def with_summary(self, body: JSON, summary: str) -> JSON:
        return body  # the summary is a system message already (`with_history`)

    def conversation(self, model: str, system: str, messages: list[Any]) -> JSON:
        return {"model": model, "messages": [{"role": "system", "content": system}, *messages]}

    # ---- answers
    def parse_usage(self, raw: Mapping[str, Any]) -> Usage:
        return usage_from_openai(dict(raw))

    def answer_text(self, body: JSON) -> str:
        return chat_answer_text(body)

    def is_answer(self, body: JSON) -> bool:
        return "choices" in body

    def skip_reason(self, body: JSON, *, cache_tool_calls: bool) -> str | None:
        choices = body.get("choices") or []
        if len(choices) != 1 or not isinstance(choices[0], dict):
            return "choices"
        choice = choices[0]
        finish = choice.get("finish_reason")
        message = choice.get("message") or {}
        if message.get("refusal"):
            return "refusal"
        if finish in TOOL_FINISH or message.get("tool_calls"):
            return None if cache_tool_calls else "tool_calls"
        if finish not in GOOD_FINISH:
            return f"finish_reason={finish}"
        return None

    def zero_usage(self, body: JSON) -> JSON:
        return {**body, "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}}

    def error_body(self, error: GatewayError) -> JSON:
        return error.to_openai()

    def error_frame(self, message: str, code: str) -> bytes:
        body = {"error": {"message": message, "type": "upstream_error", "param": None,
                          "code": code}}  # fmt: skip
        return b"data: " + orjson.dumps(body) + b"\n\n"

    def body_from_sse(self, raw: bytes) -> JSON | None:
        return _body_from_chunks(raw)

    def sse_from_body(self, body: JSON, *, include_usage: bool) -> list[bytes]:
        return _chunks_from_body(body, include_usage)

    # ---- between formats
    def request_as(self, wire: API, body: JSON) -> JSON:
        return openai_to_anthropic_request(body) if wire == "anthropic" else body

    def response_from(
        self, wire: API, data: JSON, *, request: JSON, model: str, response_id: str
    ) -> JSON:
        return anthropic_response_to_openai(data, model=model) if wire == "anthropic" else data


OPENAI = OpenAIDialect()


def _body_from_chunks(raw: bytes) -> JSON | None:
    text: list[str] = []
    finish = None
    head: JSON = {}
    done = False
    for _, data in events(raw):
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


def _chunks_from_body(body: JSON, include_usage: bool) -> list[bytes]:
    base = {
        "id": body.get("id"),
        "object": "chat.completion.chunk",
        "created": body.get("created", int(time.time())),
        "model": body.get("model"),
    }

    def chunk(delta: JSON, finish: Any = None) -> bytes:
        choice = {"index": 0, "delta": delta, "finish_reason": finish}
        return sse(None, {**base, "choices": [choice]})

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
        out.append(sse(None, {**base, "choices": [], "usage": usage}))
    out.append(b"data: [DONE]\n\n")
    return out
