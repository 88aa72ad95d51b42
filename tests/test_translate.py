"""Translation between OpenAI Chat Completions and Anthropic Messages.

Why validate against outside schemas: our own expectations would drift with our code, so every
OpenAI-side output is checked against OpenAI's published spec and every Anthropic-side output
against the Anthropic SDK's models.
"""

from __future__ import annotations

import json
from typing import Any

import pydantic
import pytest
from anthropic.types import Message, RawMessageStreamEvent

from openai_schema import assert_valid
from spendgate.providers.translate import (
    AnthropicToOpenAIStream,
    OpenAIToAnthropicStream,
    TranslationError,
    anthropic_response_to_openai,
    anthropic_to_openai_request,
    openai_response_to_anthropic,
    openai_to_anthropic_request,
)

_EVENT = pydantic.TypeAdapter(RawMessageStreamEvent)
PNG = "iVBORw0KGgo="


def _req(**kw: Any) -> dict[str, Any]:
    return {"model": "m", "messages": [{"role": "user", "content": "hi"}], **kw}


# --------------------------------------------------------------------------- OpenAI → Anthropic


def test_system_and_developer_are_hoisted_in_order() -> None:
    out = openai_to_anthropic_request(
        {
            "model": "claude",
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "developer", "content": [{"type": "text", "text": "no emoji"}]},
                {"role": "user", "content": "hi"},
            ],
        }
    )
    assert out["system"] == [
        {"type": "text", "text": "be brief"},
        {"type": "text", "text": "no emoji"},
    ]
    assert out["messages"] == [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]
    assert out["max_tokens"] == 4096
    assert out["model"] == "claude"


def test_multipart_user_content_and_images() -> None:
    out = openai_to_anthropic_request(
        {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "what is this?"},
                        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
                        {
                            "type": "image_url",
                            "image_url": {"url": "https://x.test/a.jpg", "detail": "low"},
                        },
                        {"type": "text", "text": ""},
                    ],
                }
            ]
        },
        default_max_tokens=100,
    )
    assert out["messages"][0]["content"] == [
        {"type": "text", "text": "what is this?"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
        {"type": "image", "source": {"type": "url", "url": "https://x.test/a.jpg"}},
    ]
    assert out["max_tokens"] == 100


def test_tool_round_trip_and_merging() -> None:
    body = {
        "messages": [
            {"role": "user", "content": "weather in Paris and Rome?"},
            {
                "role": "assistant",
                "content": "Checking.",
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "weather", "arguments": '{"city": "Paris"}'},
                    },
                    {
                        "id": "call_2",
                        "type": "function",
                        "function": {"name": "weather", "arguments": '{"city": "Rome"}'},
                    },
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
            {
                "role": "tool",
                "tool_call_id": "call_2",
                "content": [{"type": "text", "text": "25C"}],
            },
            {"role": "user", "content": "thanks"},
            {"role": "user", "content": "which is warmer?"},
        ],
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": "weather",
                    "description": "Current weather",
                    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
                },
            }
        ],
        "tool_choice": "required",
        "parallel_tool_calls": False,
    }
    out = openai_to_anthropic_request(body)
    msgs = out["messages"]
    assert [m["role"] for m in msgs] == ["user", "assistant", "user"]
    assert msgs[1]["content"] == [
        {"type": "text", "text": "Checking."},
        {"type": "tool_use", "id": "call_1", "name": "weather", "input": {"city": "Paris"}},
        {"type": "tool_use", "id": "call_2", "name": "weather", "input": {"city": "Rome"}},
    ]
    assert msgs[2]["content"] == [
        {"type": "tool_result", "tool_use_id": "call_1", "content": "18C"},
        {
            "type": "tool_result",
            "tool_use_id": "call_2",
            "content": [{"type": "text", "text": "25C"}],
        },
        {"type": "text", "text": "thanks"},
        {"type": "text", "text": "which is warmer?"},
    ]
    assert out["tools"] == [
        {
            "name": "weather",
            "description": "Current weather",
            "input_schema": body["tools"][0]["function"]["parameters"],
        }
    ]
    assert out["tool_choice"] == {"type": "any", "disable_parallel_tool_use": True}


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ("auto", {"type": "auto"}),
        ("none", {"type": "none"}),
        ({"type": "function", "function": {"name": "f"}}, {"type": "tool", "name": "f"}),
        (None, None),
    ],
)
def test_tool_choice(choice: Any, expected: Any) -> None:
    tools = [{"type": "function", "function": {"name": "f"}}]
    out = openai_to_anthropic_request(_req(tools=tools, tool_choice=choice))
    assert out.get("tool_choice") == expected
    assert out["tools"][0]["input_schema"] == {"type": "object", "properties": {}}


def test_sampling_params() -> None:
    out = openai_to_anthropic_request(
        _req(
            temperature=1.7,
            top_p=0.9,
            stop="END",
            max_tokens=50,
            max_completion_tokens=70,
            stream=True,
            user="u-1",
            seed=3,
            store=True,
            n=1,
            logprobs=False,
            logit_bias={},
            presence_penalty=0,
            stream_options={"include_usage": True},
        )
    )
    assert out["temperature"] == 1.0  # clamped, not scaled
    assert out["top_p"] == 0.9
    assert out["stop_sequences"] == ["END"]
    assert out["max_tokens"] == 70  # max_completion_tokens wins
    assert out["stream"] is True
    assert out["metadata"] == {"user_id": "u-1"}
    for dropped in ("seed", "store", "n", "logprobs", "logit_bias", "stream_options"):
        assert dropped not in out
    assert openai_to_anthropic_request(_req(temperature=0.3))["temperature"] == 0.3
    assert openai_to_anthropic_request(_req(stop=["a", "b"]))["stop_sequences"] == ["a", "b"]


def test_response_format_becomes_system_instruction() -> None:
    out = openai_to_anthropic_request(
        {
            "messages": [{"role": "system", "content": "sys"}, {"role": "user", "content": "x"}],
            "response_format": {
                "type": "json_schema",
                "json_schema": {
                    "name": "answer",
                    "schema": {"type": "object", "properties": {"a": {"type": "integer"}}},
                },
            },
        }
    )
    assert out["system"][0] == {"type": "text", "text": "sys"}
    assert "JSON" in out["system"][1]["text"]
    assert '"a":{"type":"integer"}' in out["system"][1]["text"]
    plain = openai_to_anthropic_request(_req(response_format={"type": "json_object"}))
    assert "JSON object" in plain["system"][0]["text"]
    assert "system" not in openai_to_anthropic_request(_req(response_format={"type": "text"}))


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (_req(n=2), "n"),
        (_req(logprobs=True), "logprobs"),
        (_req(top_logprobs=3), "top_logprobs"),
        (_req(logit_bias={"50256": -100}), "logit_bias"),
        (_req(audio={"voice": "alloy", "format": "wav"}), "audio"),
        (_req(modalities=["text", "audio"]), "modalities"),
        (_req(frequency_penalty=0.5), "frequency_penalty"),
        (_req(functions=[]), "functions"),
        (_req(made_up_param=1), "made_up_param"),
        (_req(temperature=-1), "temperature"),
        (_req(max_tokens=0), "max_tokens"),
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "system", "content": "only system"}]}, "messages"),
        (
            {
                "messages": [
                    {"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}
                ]
            },
            "messages[0].content[0]",
        ),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "image_url", "image_url": {"url": "data:image/bmp;base64,AAA"}}
                        ],
                    }
                ]
            },
            "messages[0].content[0].image_url.url",
        ),
        (
            {
                "messages": [
                    {"role": "user", "content": "x"},
                    {
                        "role": "assistant",
                        "tool_calls": [
                            {
                                "id": "c",
                                "type": "function",
                                "function": {"name": "f", "arguments": "{oops"},
                            }
                        ],
                    },
                ]
            },
            "messages[1].tool_calls[0].function.arguments",
        ),
        ({"messages": [{"role": "tool", "content": "x"}]}, "messages[0].tool_call_id"),
        ({"messages": [{"role": "function", "content": "x"}]}, "messages[0].role"),
    ],
)
def test_untranslatable_requests_name_the_param(body: dict[str, Any], param: str) -> None:
    with pytest.raises(TranslationError) as info:
        openai_to_anthropic_request(body)
    assert info.value.param == param
    assert isinstance(info.value, ValueError)
    assert str(info.value)


# --------------------------------------------------------------------------- Anthropic responses


def _anthropic_message(**kw: Any) -> dict[str, Any]:
    msg = {
        "id": "msg_01",
        "type": "message",
        "role": "assistant",
        "model": "claude-x",
        "content": [{"type": "text", "text": "Hello"}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {
            "input_tokens": 10,
            "output_tokens": 5,
            "cache_read_input_tokens": 100,
            "cache_creation_input_tokens": 20,
        },
    }
    msg.update(kw)
    Message.model_validate(msg)
    return msg


def test_anthropic_text_response_to_openai() -> None:
    out = anthropic_response_to_openai(
        _anthropic_message(
            content=[
                {"type": "thinking", "thinking": "hmm", "signature": "s"},
                {"type": "text", "text": "Hel"},
                {"type": "text", "text": "lo"},
            ]
        ),
        created=7,
    )
    assert_valid("CreateChatCompletionResponse", out)
    choice = out["choices"][0]
    assert choice["message"] == {"role": "assistant", "content": "Hello", "refusal": None}
    assert choice["finish_reason"] == "stop"
    assert out["created"] == 7 and out["model"] == "claude-x"
    assert out["usage"] == {
        "prompt_tokens": 130,
        "completion_tokens": 5,
        "total_tokens": 135,
        "prompt_tokens_details": {"cached_tokens": 100, "cache_write_tokens": 20},
        # the TTL split, so a client can reproduce the cost (no split reported: all 5-minute)
        "cache_creation": {"ephemeral_5m_input_tokens": 20, "ephemeral_1h_input_tokens": 0},
    }


def test_anthropic_tool_response_to_openai() -> None:
    out = anthropic_response_to_openai(
        _anthropic_message(
            content=[
                {
                    "type": "tool_use",
                    "id": "toolu_1",
                    "name": "weather",
                    "input": {"city": "Zürich"},
                }
            ],
            stop_reason="tool_use",
            usage={"input_tokens": 3, "output_tokens": 4},
        ),
        model="alias",
    )
    assert_valid("CreateChatCompletionResponse", out)
    msg = out["choices"][0]["message"]
    assert msg["content"] is None
    assert msg["tool_calls"][0]["id"] == "toolu_1"
    assert json.loads(msg["tool_calls"][0]["function"]["arguments"]) == {"city": "Zürich"}
    assert out["choices"][0]["finish_reason"] == "tool_calls"
    assert out["model"] == "alias"
    assert out["usage"]["prompt_tokens_details"] == {"cached_tokens": 0}


@pytest.mark.parametrize(
    ("stop", "finish"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
        ("pause_turn", "stop"),
        ("model_context_window_exceeded", "length"),
    ],
)
def test_stop_reason_mapping(stop: str, finish: str) -> None:
    out = anthropic_response_to_openai(_anthropic_message(stop_reason=stop))
    assert_valid("CreateChatCompletionResponse", out)
    assert out["choices"][0]["finish_reason"] == finish


# --------------------------------------------------------------------------- Anthropic → OpenAI


def test_anthropic_request_to_openai() -> None:
    body = {
        "model": "gpt-x",
        "max_tokens": 256,
        "temperature": 0.5,
        "stop_sequences": ["##"],
        "system": [{"type": "text", "text": "be brief", "cache_control": {"type": "ephemeral"}}],
        "metadata": {"user_id": "u-9"},
        "thinking": {"type": "enabled", "budget_tokens": 2048},
        "stream": True,
        "tools": [
            {
                "name": "weather",
                "description": "d",
                "input_schema": {"type": "object", "properties": {}},
            }
        ],
        "tool_choice": {"type": "any", "disable_parallel_tool_use": True},
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "look", "cache_control": {"type": "ephemeral"}},
                    {
                        "type": "image",
                        "source": {"type": "base64", "media_type": "image/png", "data": PNG},
                    },
                ],
            },
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "...", "signature": "sig"},
                    {"type": "text", "text": "calling"},
                    {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"c": 1}},
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"},
                    {
                        "type": "tool_result",
                        "tool_use_id": "toolu_2",
                        "is_error": True,
                        "content": [{"type": "text", "text": "boom"}],
                    },
                    {"type": "text", "text": "and?"},
                ],
            },
        ],
    }
    out = anthropic_to_openai_request(body)
    assert_valid("CreateChatCompletionRequest", out)
    assert out["messages"] == [
        {"role": "system", "content": "be brief"},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "look"},
                {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
            ],
        },
        {
            "role": "assistant",
            "content": "calling",
            "tool_calls": [
                {
                    "id": "toolu_1",
                    "type": "function",
                    "function": {"name": "weather", "arguments": '{"c": 1}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "toolu_1", "content": "sunny"},
        {"role": "tool", "tool_call_id": "toolu_2", "content": "[tool error] boom"},
        {"role": "user", "content": "and?"},
    ]
    assert out["max_completion_tokens"] == 256
    assert out["stop"] == ["##"]
    assert out["user"] == "u-9"
    assert out["stream_options"] == {"include_usage": True}
    assert out["tool_choice"] == "required" and out["parallel_tool_calls"] is False
    assert out["tools"][0]["function"]["parameters"] == {"type": "object", "properties": {}}
    assert "thinking" not in out and "cache_control" not in json.dumps(out)


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (
            {"messages": [{"role": "user", "content": "x"}], "stop_sequences": list("abcde")},
            "stop_sequences",
        ),
        (
            {
                "messages": [{"role": "user", "content": "x"}],
                "tools": [{"type": "web_search_20250305", "name": "web_search"}],
            },
            "tools[0]",
        ),
        ({"messages": [{"role": "user", "content": "x"}], "mcp_servers": []}, "mcp_servers"),
        ({"messages": []}, "messages"),
    ],
)
def test_anthropic_untranslatable(body: dict[str, Any], param: str) -> None:
    with pytest.raises(TranslationError) as info:
        anthropic_to_openai_request(body)
    assert info.value.param == param


def _openai_response(**message: Any) -> dict[str, Any]:
    resp = {
        "id": "chatcmpl-abc",
        "object": "chat.completion",
        "created": 1,
        "model": "gpt-x",
        "choices": [
            {
                "index": 0,
                "logprobs": None,
                "finish_reason": "stop",
                "message": {"role": "assistant", "content": "hi", "refusal": None, **message},
            }
        ],
        "usage": {
            "prompt_tokens": 120,
            "completion_tokens": 8,
            "total_tokens": 128,
            "prompt_tokens_details": {"cached_tokens": 100},
        },
    }
    assert_valid("CreateChatCompletionResponse", resp)
    return resp


def test_openai_response_to_anthropic() -> None:
    out = openai_response_to_anthropic(_openai_response())
    Message.model_validate(out)
    assert out["id"] == "msg_chatcmpl-abc"
    assert out["content"] == [{"type": "text", "text": "hi"}]
    assert out["stop_reason"] == "end_turn"
    assert out["usage"] == {
        "input_tokens": 20,
        "output_tokens": 8,
        "cache_read_input_tokens": 100,
        "cache_creation_input_tokens": 0,
    }


def test_openai_tool_response_to_anthropic() -> None:
    resp = _openai_response(
        content=None,
        tool_calls=[
            {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": '{"x":1}'}},
            {"id": "call_2", "type": "function", "function": {"name": "g", "arguments": "{bad"}},
        ],
    )
    resp["choices"][0]["finish_reason"] = "tool_calls"
    out = openai_response_to_anthropic(resp, model="alias")
    Message.model_validate(out)
    assert out["model"] == "alias" and out["stop_reason"] == "tool_use"
    assert out["content"] == [
        {"type": "tool_use", "id": "call_1", "name": "f", "input": {"x": 1}},
        {"type": "tool_use", "id": "call_2", "name": "g", "input": {"_raw_arguments": "{bad"}},
    ]


def test_openai_refusal_and_length() -> None:
    out = openai_response_to_anthropic(_openai_response(content=None, refusal="I can't."))
    assert out["stop_reason"] == "refusal" and out["content"][0]["text"] == "I can't."
    resp = _openai_response()
    resp["choices"][0]["finish_reason"] = "length"
    assert openai_response_to_anthropic(resp)["stop_reason"] == "max_tokens"


def test_round_trip_openai_request_through_anthropic() -> None:
    original = {
        "model": "m",
        "max_completion_tokens": 64,
        "messages": [
            {"role": "system", "content": "sys"},
            {"role": "user", "content": "q"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "c1",
                        "type": "function",
                        "function": {"name": "f", "arguments": '{"a": 1}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "c1", "content": "r"},
        ],
    }
    back = anthropic_to_openai_request(openai_to_anthropic_request(original))
    assert_valid("CreateChatCompletionRequest", back)
    assert back["messages"] == original["messages"]
    assert back["max_completion_tokens"] == 64


# --------------------------------------------------------------------------- streaming


def _anthropic_events(stop: str = "tool_use") -> list[tuple[str, dict[str, Any]]]:
    events: list[tuple[str, dict[str, Any]]] = [
        (
            "message_start",
            {
                "type": "message_start",
                "message": {
                    "id": "msg_1",
                    "type": "message",
                    "role": "assistant",
                    "content": [],
                    "model": "claude-x",
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": {
                        "input_tokens": 12,
                        "output_tokens": 1,
                        "cache_read_input_tokens": 30,
                        "cache_creation_input_tokens": 0,
                    },
                },
            },
        ),
        ("ping", {"type": "ping"}),
        (
            "content_block_start",
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            },
        ),
        (
            "content_block_delta",
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "text_delta", "text": "Let me "},
            },
        ),
        (
            "content_block_delta",
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "text_delta", "text": "check."},
            },
        ),
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
    ]
    for block, (tid, city) in enumerate([("toolu_a", "Paris"), ("toolu_b", "Rome")], start=1):
        args = json.dumps({"city": city, "unit": "c"})
        events.append(
            (
                "content_block_start",
                {
                    "type": "content_block_start",
                    "index": block,
                    "content_block": {
                        "type": "tool_use",
                        "id": tid,
                        "name": "weather",
                        "input": {},
                    },
                },
            )
        )
        for piece in ("", args[:7], args[7:15], args[15:]):
            events.append(
                (
                    "content_block_delta",
                    {
                        "type": "content_block_delta",
                        "index": block,
                        "delta": {"type": "input_json_delta", "partial_json": piece},
                    },
                )
            )
        events.append(("content_block_stop", {"type": "content_block_stop", "index": block}))
    events += [
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop, "stop_sequence": None},
                "usage": {"output_tokens": 42},
            },
        ),
        ("message_stop", {"type": "message_stop"}),
    ]
    for name, data in events:
        if name != "ping":  # ping is real on the wire but not in the SDK's event union
            _EVENT.validate_python(data)
    return events


def test_anthropic_stream_to_openai_chunks() -> None:
    stream = AnthropicToOpenAIStream("alias", include_usage=True, created=5)
    chunks = [c for name, data in _anthropic_events() for c in stream.feed(name, data)]
    for chunk in chunks:
        assert_valid("CreateChatCompletionStreamResponse", chunk)
    assert len({c["id"] for c in chunks}) == 1 and chunks[0]["id"] == "chatcmpl-msg_1"
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == "Let me check."
    calls: dict[int, dict[str, str]] = {}
    for c in chunks:
        for tc in (c["choices"][0]["delta"].get("tool_calls") or []) if c["choices"] else []:
            entry = calls.setdefault(tc["index"], {"id": "", "name": "", "arguments": ""})
            entry["id"] += tc.get("id", "")
            entry["name"] += tc.get("function", {}).get("name", "")
            entry["arguments"] += tc.get("function", {}).get("arguments", "")
    assert calls == {
        0: {"id": "toolu_a", "name": "weather", "arguments": '{"city": "Paris", "unit": "c"}'},
        1: {"id": "toolu_b", "name": "weather", "arguments": '{"city": "Rome", "unit": "c"}'},
    }
    finishes = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]]
    assert [f for f in finishes if f] == ["tool_calls"] and finishes[-1] == "tool_calls"
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"]["prompt_tokens"] == 42 and chunks[-1]["usage"]["total_tokens"] == 84
    assert stream.usage == {
        "input_tokens": 12,
        "output_tokens": 42,
        "cache_read_input_tokens": 30,
        "cache_creation_input_tokens": 0,
    }


def test_anthropic_stream_without_usage_and_max_tokens() -> None:
    stream = AnthropicToOpenAIStream("m", include_usage=False)
    chunks = [c for name, data in _anthropic_events("max_tokens") for c in stream.feed(name, data)]
    for chunk in chunks:
        assert_valid("CreateChatCompletionStreamResponse", chunk)
        assert "usage" not in chunk
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    assert stream.feed("message_stop", {"type": "message_stop"}) == []


def _openai_chunks(finish: str = "tool_calls") -> list[dict[str, Any]]:
    def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
        return {
            "id": "chatcmpl-9",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": "gpt-x",
            "usage": None,
            "choices": [
                {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
            ],
        }

    chunks = [
        chunk({"role": "assistant", "content": "", "refusal": None}),
        chunk({"content": "Sure, "}),
        chunk({"content": "checking."}),
    ]
    for index, (cid, city) in enumerate([("call_a", "Oslo"), ("call_b", "Lima")]):
        args = json.dumps({"city": city})
        chunks.append(
            chunk(
                {
                    "tool_calls": [
                        {
                            "index": index,
                            "id": cid,
                            "type": "function",
                            "function": {"name": "weather", "arguments": ""},
                        }
                    ]
                }
            )
        )
        for piece in (args[:5], args[5:]):
            chunks.append(
                chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})
            )
    chunks.append(chunk({}, finish))
    usage = {
        "id": "chatcmpl-9",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "gpt-x",
        "choices": [],
        "usage": {
            "prompt_tokens": 50,
            "completion_tokens": 9,
            "total_tokens": 59,
            "prompt_tokens_details": {"cached_tokens": 10},
        },
    }
    chunks.append(usage)
    for c in chunks:
        assert_valid("CreateChatCompletionStreamResponse", c)
    return chunks


def _reassemble(events: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    for name, data in events:
        assert data["type"] == name
        _EVENT.validate_python(data)
    names = [n for n, _ in events]
    assert names[0] == "message_start" and names[-2:] == ["message_delta", "message_stop"]
    blocks: dict[int, dict[str, Any]] = {}
    open_blocks: set[int] = set()
    for name, data in events:
        if name == "content_block_start":
            blocks[data["index"]] = {**data["content_block"], "json": ""}
            open_blocks.add(data["index"])
        elif name == "content_block_delta":
            delta, block = data["delta"], blocks[data["index"]]
            if delta["type"] == "text_delta":
                block["text"] += delta["text"]
            else:
                block["json"] += delta["partial_json"]
        elif name == "content_block_stop":
            open_blocks.remove(data["index"])
    assert not open_blocks
    return {"blocks": [blocks[i] for i in sorted(blocks)], "delta": events[-2][1]}


def test_openai_stream_to_anthropic_events() -> None:
    stream = OpenAIToAnthropicStream("alias")
    events = [e for c in _openai_chunks() for e in stream.feed(c)]
    assert stream.finish() == []
    out = _reassemble(events)
    assert out["blocks"] == [
        {"type": "text", "text": "Sure, checking.", "json": ""},
        {
            "type": "tool_use",
            "id": "call_a",
            "name": "weather",
            "input": {},
            "json": '{"city": "Oslo"}',
        },
        {
            "type": "tool_use",
            "id": "call_b",
            "name": "weather",
            "input": {},
            "json": '{"city": "Lima"}',
        },
    ]
    assert out["delta"]["delta"]["stop_reason"] == "tool_use"
    assert out["delta"]["usage"] == {
        "output_tokens": 9,
        "input_tokens": 40,
        "cache_read_input_tokens": 10,
    }
    assert events[0][1]["message"]["model"] == "alias"
    assert stream.usage is not None and stream.usage["total_tokens"] == 59


def test_openai_stream_without_usage_closes_on_finish() -> None:
    stream = OpenAIToAnthropicStream("m")
    chunks = _openai_chunks("length")[:4]  # text, then a tool call start; no finish, no usage
    events = [e for c in chunks for e in stream.feed(c)]
    assert "message_delta" not in [n for n, _ in events]
    events += stream.finish()
    out = _reassemble(events)
    assert out["delta"]["delta"]["stop_reason"] == "end_turn"
    assert out["delta"]["usage"]["output_tokens"] == 0
    assert stream.finish() == [] and stream.feed(chunks[0]) == []


def test_openai_stream_max_tokens_then_done() -> None:
    stream = OpenAIToAnthropicStream("m")
    chunks = [c for c in _openai_chunks("length") if not c.get("usage")]
    events = [e for c in chunks for e in stream.feed(c)] + stream.finish()
    assert _reassemble(events)["delta"]["delta"]["stop_reason"] == "max_tokens"


def test_empty_openai_stream_is_well_formed() -> None:
    events = OpenAIToAnthropicStream("m").finish()
    assert [n for n, _ in events] == ["message_start", "message_delta", "message_stop"]


def test_real_sdks_accumulate_our_streams() -> None:
    """The official SDKs' own stream accumulators must rebuild the same final message."""
    from anthropic.lib.streaming._messages import accumulate_event
    from openai.lib.streaming.chat._completions import ChatCompletionStreamState
    from openai.types.chat import ChatCompletionChunk

    state: Any = ChatCompletionStreamState()
    stream = AnthropicToOpenAIStream("m", include_usage=True, created=1)
    for name, data in _anthropic_events():
        for chunk in stream.feed(name, data):
            state.handle_chunk(ChatCompletionChunk.model_validate(chunk))
    final = state.get_final_completion()
    assert final.choices[0].message.content == "Let me check."
    assert [
        json.loads(c.function.arguments)["city"] for c in final.choices[0].message.tool_calls
    ] == ["Paris", "Rome"]
    assert final.usage.prompt_tokens == 42

    snapshot: Any = None
    bufs: dict[int, bytes] = {}
    back = OpenAIToAnthropicStream("m")
    for chunk in _openai_chunks():
        for _, data in back.feed(chunk):
            snapshot = accumulate_event(
                event=_EVENT.validate_python(data), current_snapshot=snapshot, json_bufs=bufs
            )
    assert snapshot.content[0].text == "Sure, checking."
    assert [b.input for b in snapshot.content[1:]] == [{"city": "Oslo"}, {"city": "Lima"}]
    assert snapshot.stop_reason == "tool_use" and snapshot.usage.output_tokens == 9
