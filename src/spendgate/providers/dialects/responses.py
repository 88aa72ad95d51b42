"""OpenAI's Responses API: `input` items instead of messages, typed stream events, usage in
Responses' names. The translation to and from Chat Completions lives in
`spendgate.providers.responses`; this module is what the rest of the gateway asks."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from spendgate.call import API, Endpoint, Usage
from spendgate.errors import GatewayError
from spendgate.pricing import usage_from_openai
from spendgate.providers.dialects.base import JSON, NON_ANSWER_FIELDS, content_text, events, without
from spendgate.providers.dialects.openai import OPENAI
from spendgate.providers.responses import (
    body_from_events,
    count_input_tokens,
    events_from_response,
    from_chat_response,
    sse,
    to_chat_request,
)
from spendgate.providers.translate import (
    anthropic_response_to_openai,
    openai_to_anthropic_request,
)

__all__ = ["RESPONSES", "ResponsesDialect"]


class ResponsesDialect:
    api: API = "responses"
    endpoint: Endpoint = "responses"
    path = "/v1/responses"
    chat_family = False
    system_in_messages = True
    client_cache_control = False
    passes_upstream_errors = True
    client_headers: Mapping[str, str] = {}
    logprobs_field: str | None = None

    # ---- reading a request
    def count_request(self, model: str, body: JSON) -> int:
        return count_input_tokens(model, body)

    def content_text(self, content: Any) -> str:
        return content_text(content)

    # The system prompt of a Responses body is `instructions`, but the stages that hash it
    # (prefix fingerprint, trim) have always read Chat's leading messages, which a Responses
    # body lacks: kept as is so stored fingerprints do not change.
    def system_text(self, body: JSON) -> str:
        return OPENAI.system_text(body)

    def system_material(self, body: JSON) -> Any:
        return OPENAI.system_material(body)

    def cache_key_body(self, body: JSON) -> JSON:
        return without(body, NON_ANSWER_FIELDS)

    def output_limit(self, body: JSON, reasoning: bool) -> tuple[str, int | None]:
        return OPENAI.output_limit(body, reasoning)

    def answers_per_call(self, body: JSON) -> int:
        return 1

    # ---- changing a request
    def with_hint(self, body: JSON, text: str, *, reasoning: bool, json_mode: bool) -> JSON:
        return OPENAI.with_hint(body, text, reasoning=reasoning, json_mode=json_mode)

    def with_history(self, head: list[Any], kept: list[Any], note: str) -> list[Any]:
        return OPENAI.with_history(head, kept, note)

    def with_summary(self, body: JSON, summary: str) -> JSON:
        return body

    def conversation(self, model: str, system: str, messages: list[Any]) -> JSON:
        return {"model": model, "instructions": system, "input": messages}

    def client_request(self, payload: JSON) -> JSON:
        return payload

    # ---- answers
    def parse_usage(self, raw: Mapping[str, Any]) -> Usage:
        return usage_from_openai(dict(raw))

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

    def error_body(self, error: GatewayError) -> JSON:
        return error.to_openai()

    def error_frame(self, message: str, code: str) -> bytes:
        event = {"type": "error", "code": code, "message": message, "param": None,
                 "sequence_number": 0}  # fmt: skip
        return b"event: error\ndata: " + orjson.dumps(event) + b"\n\n"

    def body_from_sse(self, raw: bytes) -> JSON | None:
        return body_from_events(events(raw))

    def sse_from_body(self, body: JSON, *, include_usage: bool) -> list[bytes]:
        return [sse(e) for e in events_from_response(body)]

    # ---- between formats
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
