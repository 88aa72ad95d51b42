"""The gateway end to end: real openai / anthropic SDKs → GatewayServer (uvicorn, real socket)
→ SimulatedUpstream, with every call checked in the SQLite ledger against list prices."""

from __future__ import annotations

import json
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import anthropic
import httpx2
import openai
import pytest

from conftest import (
    Harness,
    assert_priced,
    expected_cost_nanos,
    nanos_per_token,
    openai_chunks,
    unique,
)
from openai_schema import assert_valid

SERVED = {"gpt-4o": "gpt-4o", "claude-sonnet-4": "claude-sonnet-4-20250514"}
CHAT_MODELS = ["gpt-4o", "claude-sonnet-4"]

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {
            "type": "object",
            "properties": {
                "location": {"type": "string"},
                "days": {"type": "integer", "minimum": 1, "maximum": 7},
            },
            "required": ["location", "days"],
        },
    },
}


@pytest.fixture(scope="module")
def oai(gw: Harness) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=gw.v1, api_key="sk-unused", max_retries=0) as client:
        yield client


@pytest.fixture(scope="module")
def claude(gw: Harness) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=gw.url, api_key="sk-unused", max_retries=0) as client:
        yield client


def _feature_headers(feature: str, **more: str) -> dict[str, str]:
    return {"x-spendgate-feature": feature, **more}


def _cost_header_nanos(value: str) -> int:
    nanos = Decimal(value) * 1_000_000_000
    assert nanos == nanos.to_integral_value(), value
    return int(nanos)


# ------------------------------------------------------------------ OpenAI SDK → chat


@pytest.mark.parametrize("model", CHAT_MODELS)
def test_openai_chat_non_stream(gw: Harness, oai: openai.OpenAI, model: str) -> None:
    feature = unique("e2e-chat")
    raw = oai.chat.completions.with_raw_response.create(
        model=model,
        messages=[
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "Name three uses of a ledger."},
        ],
        max_tokens=200,
        extra_headers=_feature_headers(feature, **{"x-spendgate-team": "core"}),
    )
    completion = raw.parse()
    assert completion.choices[0].message.content
    assert completion.usage is not None

    request_id = raw.headers["x-spendgate-request-id"]
    assert request_id.startswith("sg-")
    assert raw.headers["x-spendgate-model"] == SERVED[model]

    event = gw.one(request_id)
    assert event.feature == feature and event.team == "core"
    assert event.endpoint == "chat" and event.api == "openai" and not event.stream
    assert event.requested_model == model
    assert event.served_model == SERVED[model]
    assert event.provider == "simulated"
    assert event.input_tokens == completion.usage.prompt_tokens
    assert event.output_tokens == completion.usage.completion_tokens
    assert not event.usage_estimated
    assert_priced(event)
    assert _cost_header_nanos(raw.headers["x-spendgate-cost-usd"]) == event.cost_nanos


@pytest.mark.parametrize("model", CHAT_MODELS)
def test_openai_chat_stream(gw: Harness, oai: openai.OpenAI, model: str) -> None:
    feature = unique("e2e-stream")
    raw = oai.chat.completions.with_raw_response.create(
        model=model,
        messages=[{"role": "user", "content": "Explain what a usage ledger is."}],
        max_tokens=120,
        stream=True,
        stream_options={"include_usage": True},
        extra_headers=_feature_headers(feature),
    )
    assert raw.headers["content-type"].startswith("text/event-stream")
    request_id = raw.headers["x-spendgate-request-id"]
    text: list[str] = []
    usage = None
    finish = None
    with raw.parse() as stream:
        for chunk in stream:
            if chunk.usage is not None:
                usage = chunk.usage
            for choice in chunk.choices:
                text.append(choice.delta.content or "")
                finish = choice.finish_reason or finish
    assert "".join(text).strip()
    assert finish in ("stop", "length")
    assert usage is not None, "include_usage asked for a usage chunk"

    event = gw.one(request_id)
    assert event.feature == feature and event.stream
    assert event.served_model == SERVED[model]
    assert event.input_tokens == usage.prompt_tokens
    assert event.output_tokens == usage.completion_tokens
    assert not event.usage_estimated and not event.client_disconnected
    assert event.error_type is None
    assert_priced(event)


@pytest.mark.parametrize("model", CHAT_MODELS)
def test_openai_tool_call(gw: Harness, oai: openai.OpenAI, model: str) -> None:
    feature = unique("e2e-tools")
    completion = oai.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "What's the weather in Paris for 3 days?"}],
        tools=[WEATHER_TOOL],  # type: ignore[list-item]
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        max_tokens=200,
        extra_headers=_feature_headers(feature),
    )
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    calls = choice.message.tool_calls
    assert calls and len(calls) == 1
    call = calls[0]
    assert call.type == "function" and call.function.name == "get_weather"
    args = json.loads(call.function.arguments)
    assert isinstance(args["location"], str)
    assert isinstance(args["days"], int) and 1 <= args["days"] <= 7

    event = gw.one_for(feature)
    assert completion.usage is not None
    assert event.output_tokens == completion.usage.completion_tokens
    assert_priced(event)


@pytest.mark.parametrize(
    "model",
    [
        "gpt-4o",
        "claude-sonnet-4",
    ],
)
def test_openai_json_object(gw: Harness, oai: openai.OpenAI, model: str) -> None:
    feature = unique("e2e-json")
    completion = oai.chat.completions.create(
        model=model,
        messages=[
            {"role": "system", "content": "Reply with a JSON object."},
            {"role": "user", "content": "Summarize why cost tracking matters, as JSON."},
        ],
        response_format={"type": "json_object"},
        max_tokens=300,
        extra_headers=_feature_headers(feature),
    )
    content = completion.choices[0].message.content
    assert content
    assert isinstance(json.loads(content), dict)
    assert_priced(gw.one_for(feature))


def test_openai_embeddings(gw: Harness, oai: openai.OpenAI) -> None:
    feature = unique("e2e-embed")
    raw = oai.embeddings.with_raw_response.create(
        model="text-embedding-3-small",
        input=["first sentence to embed", "a second, different one"],
        extra_headers=_feature_headers(feature),
    )
    result = raw.parse()
    assert [d.index for d in result.data] == [0, 1]
    assert all(len(d.embedding) == 1536 for d in result.data)
    event = gw.one(raw.headers["x-spendgate-request-id"])
    assert event.endpoint == "embeddings" and event.feature == feature
    assert event.input_tokens == result.usage.prompt_tokens > 0
    assert event.output_tokens == 0
    assert event.cost_nanos == event.input_tokens * nanos_per_token(0.02)
    assert_priced(event)


def test_models_list(gw: Harness, oai: openai.OpenAI) -> None:
    ids = {m.id for m in oai.models.list()}
    assert {"gpt-4o", "claude-sonnet-4", "text-embedding-3-small"} <= ids


# ------------------------------------------------------------------ Anthropic SDK → messages


ANTHROPIC_MODELS = ["claude-sonnet-4", "gpt-4o"]  # passthrough, then translated


@pytest.mark.parametrize("model", ANTHROPIC_MODELS)
def test_anthropic_messages_non_stream(
    gw: Harness, claude: anthropic.Anthropic, model: str
) -> None:
    feature = unique("e2e-msg")
    raw = claude.messages.with_raw_response.create(
        model=model,
        max_tokens=200,
        system="You are terse.",
        messages=[{"role": "user", "content": "Name three uses of a ledger."}],
        extra_headers=_feature_headers(feature),
    )
    message = raw.parse()
    assert message.type == "message" and message.role == "assistant"
    assert message.content and message.content[0].type == "text"
    assert message.content[0].text.strip()
    assert message.stop_reason in ("end_turn", "max_tokens")

    event = gw.one(raw.headers["x-spendgate-request-id"])
    assert event.endpoint == "messages" and event.api == "anthropic"
    assert event.feature == feature
    assert event.served_model == SERVED[model]
    assert event.input_tokens == message.usage.input_tokens
    assert event.output_tokens == message.usage.output_tokens
    assert_priced(event)
    assert _cost_header_nanos(raw.headers["x-spendgate-cost-usd"]) == event.cost_nanos


@pytest.mark.parametrize("model", ANTHROPIC_MODELS)
def test_anthropic_messages_stream(gw: Harness, claude: anthropic.Anthropic, model: str) -> None:
    feature = unique("e2e-msg-stream")
    with claude.messages.stream(
        model=model,
        max_tokens=150,
        messages=[{"role": "user", "content": "Explain what a usage ledger is."}],
        extra_headers=_feature_headers(feature),
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text.strip()
    assert final.stop_reason in ("end_turn", "max_tokens")

    event = gw.one_for(feature)
    assert event.stream and event.endpoint == "messages"
    assert event.served_model == SERVED[model]
    assert event.input_tokens == final.usage.input_tokens
    assert event.output_tokens == final.usage.output_tokens
    assert not event.usage_estimated and event.error_type is None
    assert_priced(event)


def test_anthropic_prompt_caching(gw: Harness, claude: anthropic.Anthropic) -> None:
    """A ≥1024-token system prompt with cache_control: the first call writes the cache,
    the second reads it, and the ledger prices each bucket at its own rate."""
    marker = unique("policy")
    long_system = f"[{marker}] " + " ".join(
        f"Clause {i}: the supplier shall deliver goods on schedule and invoice monthly."
        for i in range(200)
    )
    system: Any = [{"type": "text", "text": long_system, "cache_control": {"type": "ephemeral"}}]
    results = []
    for turn in ("first", "second"):
        feature = unique(f"e2e-cache-{turn}")
        message = claude.messages.create(
            model="claude-sonnet-4",
            max_tokens=100,
            system=system,
            messages=[{"role": "user", "content": "Which clause covers invoicing?"}],
            extra_headers=_feature_headers(feature),
        )
        results.append((message, gw.one_for(feature)))

    (first, first_row), (second, second_row) = results
    # First call: written to the cache, nothing read.
    assert first.usage.cache_creation_input_tokens
    assert first.usage.cache_creation_input_tokens >= 1024
    assert not first.usage.cache_read_input_tokens
    assert first_row.cache_write_tokens == first.usage.cache_creation_input_tokens
    assert first_row.cache_read_tokens == 0
    # Second call: read from the cache, nothing written.
    assert second.usage.cache_read_input_tokens == first.usage.cache_creation_input_tokens
    assert not second.usage.cache_creation_input_tokens
    assert second_row.cache_read_tokens == second.usage.cache_read_input_tokens
    assert second_row.cache_write_tokens == 0

    for message, row in results:
        u = message.usage
        total_in = (
            u.input_tokens + (u.cache_creation_input_tokens or 0) + (u.cache_read_input_tokens or 0)
        )
        assert row.input_tokens == total_in
        assert row.output_tokens == u.output_tokens
        hand = (
            u.input_tokens * 3000  # $3.00/MTok uncached input
            + (u.cache_creation_input_tokens or 0) * 3750  # $3.75/MTok 5-minute cache write
            + (u.cache_read_input_tokens or 0) * 300  # $0.30/MTok cache read
            + u.output_tokens * 15000  # $15/MTok output
        )
        assert row.cost_nanos == hand == expected_cost_nanos(row)
        assert row.baseline_nanos == row.cost_nanos
    assert second_row.cost_nanos < first_row.cost_nanos


# ------------------------------------------------------------------ OpenAI schema, raw HTTP


SCHEMA_BODY = {
    "messages": [
        {"role": "system", "content": "You are helpful."},
        {"role": "user", "content": "Give me a short overview of LLM pricing."},
    ],
    "max_tokens": 120,
}


@pytest.mark.parametrize("model", CHAT_MODELS)
def test_schema_non_stream(gw: Harness, http: httpx2.Client, model: str) -> None:
    r = http.post(gw.v1 + "/chat/completions", json={**SCHEMA_BODY, "model": model})
    assert r.status_code == 200, r.text
    assert_valid("CreateChatCompletionResponse", r.json())
    r = http.post(
        gw.v1 + "/chat/completions",
        json={
            **SCHEMA_BODY,
            "model": model,
            "tools": [WEATHER_TOOL],
            "tool_choice": "required",
            "messages": [{"role": "user", "content": "Weather in Oslo for 2 days?"}],
        },
    )
    assert r.status_code == 200, r.text
    assert_valid("CreateChatCompletionResponse", r.json())


@pytest.mark.parametrize("include_usage", [True, False])
@pytest.mark.parametrize("model", CHAT_MODELS)
def test_schema_stream_chunks(
    gw: Harness, http: httpx2.Client, model: str, include_usage: bool
) -> None:
    body: dict[str, Any] = {**SCHEMA_BODY, "model": model, "stream": True}
    if include_usage:
        body["stream_options"] = {"include_usage": True}
    with http.stream("POST", gw.v1 + "/chat/completions", json=body) as r:
        assert r.status_code == 200
        lines = list(r.iter_lines())
    chunks, done = openai_chunks(lines)
    assert done, "stream must end with data: [DONE]"
    assert chunks
    for chunk in chunks:
        assert_valid("CreateChatCompletionStreamResponse", chunk)
    ids = {c["id"] for c in chunks}
    assert len(ids) == 1, "every chunk of one completion shares its id"
    usage_chunks = [c for c in chunks if c.get("usage")]
    if include_usage:
        assert len(usage_chunks) == 1 and usage_chunks[0]["choices"] == []
        assert chunks[-1] is usage_chunks[0]
    else:
        assert usage_chunks == []


def test_schema_stream_tool_call_chunks(gw: Harness, http: httpx2.Client) -> None:
    for model in CHAT_MODELS:
        body = {
            "model": model,
            "stream": True,
            "messages": [{"role": "user", "content": "Weather in Rome for 4 days?"}],
            "tools": [WEATHER_TOOL],
            "tool_choice": "required",
            "max_tokens": 200,
        }
        with http.stream("POST", gw.v1 + "/chat/completions", json=body) as r:
            assert r.status_code == 200
            lines = list(r.iter_lines())
        chunks, done = openai_chunks(lines)
        assert done
        arguments = ""
        for chunk in chunks:
            assert_valid("CreateChatCompletionStreamResponse", chunk)
            for choice in chunk["choices"]:
                for tc in choice["delta"].get("tool_calls") or ():
                    arguments += tc.get("function", {}).get("arguments") or ""
        assert isinstance(json.loads(arguments), dict), model
