"""The simulated upstream, driven through real sockets by the real openai and anthropic SDKs."""

from __future__ import annotations

import json
from collections.abc import Iterator

import anthropic
import httpx2
import openai
import pytest

from openai_schema import assert_valid
from spendgate import tokens
from spendgate.simulated import SimulatedUpstream

LONG = " ".join(f"Clause {i}: the supplier shall deliver goods on schedule." for i in range(250))
TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {
            "type": "object",
            "properties": {
                "location": {"type": "string"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                "days": {"type": "integer", "minimum": 1, "maximum": 7},
            },
            "required": ["location", "days"],
        },
    },
}


@pytest.fixture(scope="module")
def up() -> Iterator[SimulatedUpstream]:
    with SimulatedUpstream(latency="none") as server:
        yield server


@pytest.fixture
def oai(up: SimulatedUpstream) -> openai.OpenAI:
    httpx2.delete(up.url + "/_sim/faults")
    return openai.OpenAI(base_url=up.url + "/v1", api_key="sk-test", max_retries=0)


@pytest.fixture
def ant(up: SimulatedUpstream) -> anthropic.Anthropic:
    httpx2.delete(up.url + "/_sim/faults")
    return anthropic.Anthropic(base_url=up.url, api_key="sk-ant-test", max_retries=0)


def test_chat_non_stream_matches_spec_and_tokenizer(oai: openai.OpenAI) -> None:
    messages = [{"role": "user", "content": "Tell me about budgets."}]
    raw = oai.chat.completions.with_raw_response.create(model="gpt-4o", messages=messages)
    body = json.loads(raw.text)
    assert_valid("CreateChatCompletionResponse", body)
    reply = raw.parse()
    text = reply.choices[0].message.content or ""
    assert reply.usage is not None
    assert reply.usage.prompt_tokens == tokens.count_openai_request(
        "gpt-4o", {"messages": messages}
    )
    assert reply.usage.completion_tokens == tokens.count_text("gpt-4o", text)
    again = oai.chat.completions.create(model="gpt-4o", messages=messages)
    assert again.choices[0].message.content == text  # deterministic per request


def test_chat_stream_with_usage(oai: openai.OpenAI) -> None:
    messages = [{"role": "user", "content": "Write a detailed essay on caching."}]
    stream = oai.chat.completions.create(
        model="gpt-4o-mini", messages=messages, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    last = chunks[-1]
    assert last.choices == [] and last.usage is not None
    assert last.usage.completion_tokens == tokens.count_text("gpt-4o-mini", text)
    assert chunks[-2].choices[0].finish_reason == "stop"


def test_max_tokens_truncates_with_length(oai: openai.OpenAI) -> None:
    reply = oai.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "Write a story"}], max_tokens=7
    )
    assert reply.choices[0].finish_reason == "length"
    assert reply.usage is not None and reply.usage.completion_tokens <= 7


def test_reasoning_models_report_reasoning_tokens(oai: openai.OpenAI) -> None:
    reply = oai.chat.completions.create(model="o3", messages=[{"role": "user", "content": "Why?"}])
    usage = reply.usage
    assert usage is not None and usage.completion_tokens_details is not None
    reasoning = usage.completion_tokens_details.reasoning_tokens or 0
    visible = tokens.count_text("o3", reply.choices[0].message.content or "")
    assert reasoning > 0 and usage.completion_tokens == visible + reasoning


def test_tool_calls_fill_required_arguments(oai: openai.OpenAI) -> None:
    reply = oai.chat.completions.create(
        model="gpt-4o",
        messages=[{"role": "user", "content": "Use get_weather for Paris"}],
        tools=[TOOL],  # type: ignore[list-item]
    )
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls or []
    args = json.loads(call.function.arguments)  # type: ignore[union-attr]
    assert {"location", "days"} <= set(args) and 1 <= args["days"] <= 7
    plain = oai.chat.completions.create(
        model="gpt-4o",
        messages=[{"role": "user", "content": "Hello"}],
        tools=[TOOL],  # type: ignore[list-item]
    )
    assert plain.choices[0].finish_reason == "stop"  # auto and no mention: prose


def test_tool_call_stream(oai: openai.OpenAI) -> None:
    stream = oai.chat.completions.create(
        model="gpt-4o",
        messages=[{"role": "user", "content": "Anything"}],
        tools=[TOOL],  # type: ignore[list-item]
        tool_choice="required",
        stream=True,
    )
    args = ""
    finish = None
    for chunk in stream:
        delta = chunk.choices[0].delta
        for tc in delta.tool_calls or []:
            args += (tc.function.arguments if tc.function else "") or ""
        finish = chunk.choices[0].finish_reason or finish
    assert finish == "tool_calls" and "location" in json.loads(args)


def test_json_modes(oai: openai.OpenAI) -> None:
    obj = oai.chat.completions.create(
        model="gpt-4o",
        messages=[{"role": "user", "content": "Reply in JSON"}],
        response_format={"type": "json_object"},
    )
    assert isinstance(json.loads(obj.choices[0].message.content or ""), dict)
    schema = {
        "type": "object",
        "properties": {"title": {"type": "string"}, "score": {"type": "number"}},
        "required": ["title", "score"],
        "additionalProperties": False,
    }
    structured = oai.chat.completions.create(
        model="gpt-4o",
        messages=[{"role": "user", "content": "Rate it"}],
        response_format={"type": "json_schema", "json_schema": {"name": "r", "schema": schema}},
    )
    value = json.loads(structured.choices[0].message.content or "")
    assert set(value) == {"title", "score"} and isinstance(value["score"], float | int)


def test_openai_prefix_cache(oai: openai.OpenAI) -> None:
    messages = [{"role": "system", "content": LONG}, {"role": "user", "content": "Summarise."}]
    first = oai.chat.completions.create(model="gpt-4.1", messages=messages)
    second = oai.chat.completions.create(model="gpt-4.1", messages=messages)
    assert first.usage and first.usage.prompt_tokens_details
    assert second.usage and second.usage.prompt_tokens_details
    assert first.usage.prompt_tokens_details.cached_tokens == 0
    cached = second.usage.prompt_tokens_details.cached_tokens or 0
    assert cached >= 1024 and cached % 128 == 0 and cached <= second.usage.prompt_tokens


def test_anthropic_non_stream_and_usage(ant: anthropic.Anthropic) -> None:
    body = {"system": "Be brief.", "messages": [{"role": "user", "content": "What is a budget?"}]}
    msg = ant.messages.create(model="claude-sonnet-4-5", max_tokens=300, **body)  # type: ignore[arg-type]
    assert msg.type == "message" and msg.stop_reason == "end_turn"
    text = msg.content[0].text  # type: ignore[union-attr]
    assert msg.usage.input_tokens == tokens.count_anthropic_request("claude-sonnet-4-5", body)
    assert msg.usage.output_tokens == tokens.count_text("claude-sonnet-4-5", text)


def test_anthropic_stream_events(up: SimulatedUpstream, ant: anthropic.Anthropic) -> None:
    kinds = []
    with ant.messages.stream(
        model="claude-haiku-4-5",
        max_tokens=5,
        messages=[{"role": "user", "content": "Write a story"}],
    ) as stream:
        for event in stream:
            kinds.append(event.type)
        final = stream.get_final_message()
    assert kinds[0] == "message_start" and "content_block_delta" in kinds
    assert final.stop_reason == "max_tokens" and final.usage.output_tokens <= 5


def test_anthropic_tool_use(ant: anthropic.Anthropic) -> None:
    tool = {
        "name": "lookup",
        "description": "Look up",
        "input_schema": TOOL["function"]["parameters"],
    }  # type: ignore[index]
    msg = ant.messages.create(
        model="claude-sonnet-4-5",
        max_tokens=200,
        tools=[tool],  # type: ignore[list-item]
        tool_choice={"type": "any"},
        messages=[{"role": "user", "content": "weather?"}],
    )
    assert msg.stop_reason == "tool_use"
    block = msg.content[-1]
    assert block.type == "tool_use" and {"location", "days"} <= set(block.input)  # type: ignore[union-attr]
    with ant.messages.stream(
        model="claude-sonnet-4-5",
        max_tokens=200,
        tools=[tool],  # type: ignore[list-item]
        tool_choice={"type": "tool", "name": "lookup"},
        messages=[{"role": "user", "content": "weather?"}],
    ) as stream:
        final = stream.get_final_message()
    assert final.content[-1].input == block.input  # type: ignore[union-attr]


def test_anthropic_missing_max_tokens(up: SimulatedUpstream) -> None:
    r = httpx2.post(
        up.url + "/v1/messages",
        json={"model": "claude-sonnet-4-5", "messages": [{"role": "user", "content": "hi"}]},
    )
    assert r.status_code == 400
    assert r.json()["type"] == "error" and r.json()["error"]["type"] == "invalid_request_error"


def test_anthropic_cache_write_then_read(ant: anthropic.Anthropic) -> None:
    system = [{"type": "text", "text": LONG + " anthropic", "cache_control": {"type": "ephemeral"}}]
    messages = [{"role": "user", "content": "Summarise."}]
    first = ant.messages.create(
        model="claude-sonnet-4-5", max_tokens=50, system=system, messages=messages
    )  # type: ignore[arg-type]
    second = ant.messages.create(
        model="claude-sonnet-4-5", max_tokens=50, system=system, messages=messages
    )  # type: ignore[arg-type]
    total = tokens.count_anthropic_request(
        "claude-sonnet-4-5", {"system": system, "messages": messages}
    )
    ((prefix, _ttl),) = tokens.anthropic_cache_breakpoints(
        "claude-sonnet-4-5", {"system": system, "messages": messages}
    )
    assert (
        first.usage.cache_creation_input_tokens == prefix
        and first.usage.cache_read_input_tokens == 0
    )
    assert first.usage.cache_creation is not None
    assert first.usage.cache_creation.ephemeral_5m_input_tokens == prefix
    assert second.usage.cache_read_input_tokens == prefix
    assert second.usage.cache_creation_input_tokens == 0
    assert second.usage.input_tokens == total - prefix


def test_embeddings(oai: openai.OpenAI) -> None:
    r = oai.embeddings.create(
        model="text-embedding-3-small", input=["alpha", "beta"], dimensions=64
    )
    a, b = (d.embedding for d in r.data)
    assert len(a) == 64 and abs(sum(x * x for x in a) - 1) < 1e-5 and a != b
    again = oai.embeddings.create(model="text-embedding-3-small", input="alpha", dimensions=64)
    assert again.data[0].embedding == pytest.approx(a, abs=1e-6)  # base64 float32 round trip
    assert r.usage.prompt_tokens == tokens.count_embedding_input(
        "text-embedding-3-small", ["alpha", "beta"]
    )


def test_models_list(oai: openai.OpenAI) -> None:
    assert "gpt-4o" in {m.id for m in oai.models.list()}


def test_status_fault_and_stats(up: SimulatedUpstream, oai: openai.OpenAI) -> None:
    httpx2.delete(up.url + "/_sim/stats")
    httpx2.post(
        up.url + "/_sim/faults",
        json={
            "faults": [
                {"kind": "status", "status": 503, "times": 2, "model": "gpt-4o", "retry_after": 1}
            ]
        },
    )
    msgs = [{"role": "user", "content": "x"}]
    assert oai.chat.completions.create(model="gpt-4o-mini", messages=msgs).choices  # model filter
    for _ in range(2):
        with pytest.raises(openai.InternalServerError) as err:
            oai.chat.completions.create(model="gpt-4o", messages=msgs)
        assert err.value.response.headers["retry-after"] == "1"
        assert set(err.value.response.json()["error"]) == {"message", "type", "param", "code"}
    assert oai.chat.completions.create(model="gpt-4o", messages=msgs).choices
    stats = httpx2.get(up.url + "/_sim/stats").json()
    assert stats["total"] == 4 and stats["by_model"] == {"gpt-4o-mini": 1, "gpt-4o": 3}


def test_header_fault(oai: openai.OpenAI) -> None:
    with pytest.raises(openai.RateLimitError):
        oai.chat.completions.create(
            model="gpt-4o",
            messages=[{"role": "user", "content": "x"}],
            extra_headers={"x-sim-fault": "status=429"},
        )


def test_cut_fault_ends_stream_without_done(up: SimulatedUpstream) -> None:
    httpx2.post(up.url + "/_sim/faults", json={"faults": [{"kind": "cut", "after_chunks": 3}]})
    body = {"model": "gpt-4o", "stream": True, "messages": [{"role": "user", "content": "essay"}]}
    received = b""
    with (
        pytest.raises(httpx2.TransportError),
        httpx2.stream("POST", up.url + "/v1/chat/completions", json=body) as r,
    ):
        for part in r.iter_bytes():
            received += part
    assert received.count(b"data: ") == 3 and b"[DONE]" not in received


def test_garbage_fault(up: SimulatedUpstream, ant: anthropic.Anthropic) -> None:
    httpx2.post(up.url + "/_sim/faults", json={"faults": [{"kind": "garbage"}]})
    r = httpx2.post(up.url + "/v1/messages", json={"model": "m", "max_tokens": 5, "messages": []})
    assert r.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        json.loads(r.text)


def test_timeout_fault_does_not_block_others(up: SimulatedUpstream) -> None:
    httpx2.post(
        up.url + "/_sim/faults",
        json={"faults": [{"kind": "timeout", "seconds": 30, "model": "slow"}]},
    )
    body = {"model": "slow", "messages": [{"role": "user", "content": "x"}]}
    with pytest.raises(httpx2.ReadTimeout):
        httpx2.post(up.url + "/v1/chat/completions", json=body, timeout=0.5)
    fast = httpx2.post(up.url + "/v1/chat/completions", json={**body, "model": "fast"}, timeout=5)
    assert fast.status_code == 200


def test_require_key() -> None:
    with SimulatedUpstream(require_key="secret") as up:
        bad = openai.OpenAI(base_url=up.url + "/v1", api_key="wrong", max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            bad.models.list() and bad.chat.completions.create(
                model="gpt-4o", messages=[{"role": "user", "content": "x"}]
            )
        good = anthropic.Anthropic(base_url=up.url, api_key="secret", max_retries=0)
        assert good.messages.create(
            model="claude-sonnet-4-5", max_tokens=5, messages=[{"role": "user", "content": "x"}]
        ).content
