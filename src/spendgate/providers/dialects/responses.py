"""OpenAI's Responses API: `input` items instead of messages, typed stream events, usage in
Responses' names. It is an OpenAI format, so what it shares with Chat Completions (usage
parser, error envelope, output-cap fields, hints) is inherited from the Chat dialect.
The translation to and from Chat Completions lives in `spendgate.providers.responses`."""

from __future__ import annotations

from typing import Any

import orjson

from spendgate.call import API, Endpoint
from spendgate.providers.dialects.base import JSON, events
from spendgate.providers.dialects.openai import OpenAIDialect
from spendgate.providers.responses import (
    body_from_events,
    count_input_tokens,
    events_from_response,
    from_chat_response,
    is_cacheable,
    sse,
    to_chat_request,
    zero_usage,
)
from spendgate.providers.translate import (
    anthropic_response_to_openai,
    openai_to_anthropic_request,
)

__all__ = ["RESPONSES", "ResponsesDialect"]


class ResponsesDialect(OpenAIDialect):
    """The system prompt of a Responses body is `instructions`, but the stages that hash it
    (prefix fingerprint, trim) have always read Chat's leading messages, which a Responses
    body lacks: `system_text`/`system_material` stay Chat's so stored fingerprints keep."""

    api: API = "responses"
    endpoint: Endpoint = "responses"
    path = "/v1/responses"
    chat_family = False
    logprobs_field: str | None = None

    def count_request(self, model: str, body: JSON) -> int:
        return count_input_tokens(model, body)

    def answers_per_call(self, body: JSON) -> int:
        return 1

    def with_summary(self, body: JSON, summary: str) -> JSON:
        return body

    def conversation(self, model: str, system: str, messages: list[Any]) -> JSON:
        return {"model": model, "instructions": system, "input": messages}

    def answer_text(self, body: JSON) -> str:
        output = body.get("output")
        texts: list[str] = []
        for item in output if isinstance(output, list) else ():
            if not isinstance(item, dict):
                continue
            if item.get("type") == "message":
                texts += [
                    str(part.get("text") or "")
                    for part in item.get("content") or ()
                    if isinstance(part, dict) and part.get("type") == "output_text"
                ]
            elif item.get("type") == "function_call":
                texts.append(orjson.dumps({item.get("name"): item.get("arguments")}).decode())
        return "".join(texts)

    def is_answer(self, body: JSON) -> bool:
        return body.get("object") == "response"

    def skip_reason(self, body: JSON, *, cache_tool_calls: bool) -> str | None:
        return is_cacheable(body, cache_tool_calls=cache_tool_calls)

    def zero_usage(self, body: JSON) -> JSON:
        return {**body, "usage": zero_usage()}

    def error_frame(self, message: str, code: str) -> bytes:
        event = {"type": "error", "code": code, "message": message, "param": None,
                 "sequence_number": 0}  # fmt: skip
        return b"event: error\ndata: " + orjson.dumps(event) + b"\n\n"

    def body_from_sse(self, raw: bytes) -> JSON | None:
        return body_from_events(events(raw))

    def sse_from_body(self, body: JSON, *, include_usage: bool) -> list[bytes]:
        return [sse(e) for e in events_from_response(body)]

    def upstream_api(self, serves_natively: bool, wire: API) -> API:
        return "responses" if serves_natively else wire

    def request_as(self, wire: API, body: JSON) -> JSON:
        if wire == "responses":
            return body
        chat = to_chat_request(body)
        return openai_to_anthropic_request(chat) if wire == "anthropic" else chat

    def response_from(
        self, wire: API, data: JSON, *, request: JSON, model: str, response_id: str
    ) -> JSON:
        if wire == "responses":
            return {**data, "id": response_id}
        chat = anthropic_response_to_openai(data, model=model) if wire == "anthropic" else data
        return from_chat_response(chat, request, response_id=response_id)


RESPONSES = ResponsesDialect()
