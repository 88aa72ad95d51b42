"""Each wire format's dialect on real request, response and stream bodies.

Why: the stages, the cache, budgets and batches no longer branch on `call.api`; they trust
the call's dialect. These tests pin what each dialect answers for the bodies clients and
providers actually send, so a new dialect can be checked against the same expectations.
"""

from __future__ import annotations

import typing
from typing import Any

import orjson
import pytest

from spendgate.call import API, Usage
from spendgate.errors import GatewayError
from spendgate.providers.dialects import (
    ANTHROPIC,
    DIALECTS,
    OPENAI,
    RESPONSES,
    Dialect,
    dialect_for,
)
from spendgate.providers.dialects.base import events, plain_text, text_parts
from spendgate.tokens import count_anthropic_request, count_openai_request

CHAT_REQUEST: dict[str, Any] = {
    "model": "gpt-4o-mini",
    "messages": [
        {"role": "system", "content": "You are terse."},
        {"role": "developer", "content": [{"type": "text", "text": "Answer in English."}]},
        {"role": "user", "content": "What is the capital of France?"},
    ],
    "temperature": 0,
    "stream": True,
    "stream_options": {"include_usage": True},
    "user": "u-1",
}

CHAT_RESPONSE: dict[str, Any] = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "created": 1_700_000_000,
    "model": "gpt-4o-mini-2024-07-18",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Paris.", "refusal": None},
            "logprobs": None,
            "finish_reason": "stop",
        }
    ],
    "usage": {
        "prompt_tokens": 30,
        "completion_tokens": 2,
        "total_tokens": 32,
        "prompt_tokens_details": {"cached_tokens": 10},
        "completion_tokens_details": {"reasoning_tokens": 0},
    },
}

MESSAGES_REQUEST: dict[str, Any] = {
    "model": "claude-3-5-haiku-latest",
    "max_tokens": 256,
    "system": [
        {"type": "text", "text": "You are terse."},
        {"type": "text", "text": "Cite nothing.", "cache_control": {"type": "ephemeral"}},
    ],
    "messages": [
        {"role": "user", "content": [{"type": "text", "text": "What is 2+2?"}]},
        {
            "role": "assistant",
            "content": [{"type": "tool_use", "id": "t1", "name": "calc", "input": {"e": "2+2"}}],
        },
        {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": "t1",
                    "content": [{"type": "text", "text": "4"}],
                }
            ],
        },
    ],
}

MESSAGES_RESPONSE: dict[str, Any] = {
    "id": "msg_01",
    "type": "message",
    "role": "assistant",
    "model": "claude-3-5-haiku-20241022",
    "content": [{"type": "text", "text": "4."}],
    "stop_reason": "end_turn",
    "stop_sequence": None,
    "usage": {
        "input_tokens": 20,
        "output_tokens": 3,
        "cache_read_input_tokens": 100,
        "cache_creation_input_tokens": 50,
    },
}

RESPONSES_REQUEST: dict[str, Any] = {
    "model": "gpt-4o-mini",
    "instructions": "You are terse.",
    "input": [{"role": "user", "content": [{"type": "input_text", "text": "Capital of Peru?"}]}],
    "max_output_tokens": 64,
}


def _responses_body() -> dict[str, Any]:
    chat = {**CHAT_RESPONSE, "choices": [{**CHAT_RESPONSE["choices"][0]}]}
    return RESPONSES.response_from(
        "openai", chat, request=RESPONSES_REQUEST, model="gpt-4o-mini", response_id="resp_1"
    )


# --------------------------------------------------------------------------- the registry


def test_every_api_literal_has_its_dialect() -> None:
    assert set(typing.get_args(API)) == set(DIALECTS)
    for api, dialect in DIALECTS.items():
        assert dialect_for(api) is dialect
        assert dialect.api == api
        assert dialect.path.startswith("/v1/")
    with pytest.raises(KeyError):
        dialect_for("gemini")


def test_dialects_satisfy_the_protocol() -> None:
    members = [name for name in vars(Dialect) if not name.startswith("_") and name not in ("mro",)]
    members += list(typing.get_type_hints(Dialect))
    for dialect in DIALECTS.values():
        missing = [m for m in members if not hasattr(dialect, m)]
        assert not missing, (dialect.api, missing)


# --------------------------------------------------------------------------- usage


def test_usage_parsing_per_format() -> None:
    chat = OPENAI.parse_usage(CHAT_RESPONSE["usage"])
    assert (chat.input_tokens, chat.output_tokens, chat.cache_read_tokens) == (30, 2, 10)
    # Anthropic reports input excluding cache reads and writes; Usage counts them in.
    claude = ANTHROPIC.parse_usage(MESSAGES_RESPONSE["usage"])
    assert claude.input_tokens == 20 + 100 + 50
    assert (claude.cache_read_tokens, claude.cache_write_tokens) == (100, 50)
    resp = RESPONSES.parse_usage(_responses_body()["usage"])
    assert isinstance(resp, Usage)
    assert (resp.input_tokens, resp.output_tokens, resp.cache_read_tokens) == (30, 2, 10)


# --------------------------------------------------------------------------- reading requests


def test_token_counts_match_the_format_counters() -> None:
    assert OPENAI.count_request("gpt-4o-mini", CHAT_REQUEST) == count_openai_request(
        "gpt-4o-mini", CHAT_REQUEST
    )
    model = "claude-3-5-haiku-latest"
    assert ANTHROPIC.count_request(model, MESSAGES_REQUEST) == count_anthropic_request(
        model, MESSAGES_REQUEST
    )
    assert RESPONSES.count_request("gpt-4o-mini", RESPONSES_REQUEST) > 0


def test_system_text_per_format() -> None:
    assert OPENAI.system_text(CHAT_REQUEST) == "You are terse.\nAnswer in English."
    assert ANTHROPIC.system_text(MESSAGES_REQUEST) == "You are terse.\nCite nothing."
    assert ANTHROPIC.system_text({**MESSAGES_REQUEST, "system": "plain"}) == "plain"
    assert ANTHROPIC.system_text({"messages": []}) == ""
    # Only the *leading* system messages are the system prompt.
    late = {"messages": [{"role": "user", "content": "hi"}, {"role": "system", "content": "x"}]}
    assert OPENAI.system_text(late) == ""
    assert OPENAI.system_material(CHAT_REQUEST) == [
        "You are terse.",
        [{"type": "text", "text": "Answer in English."}],
    ]
    assert ANTHROPIC.system_material(MESSAGES_REQUEST) == MESSAGES_REQUEST["system"]


def test_content_text_reads_through_tool_results() -> None:
    tool_turn = MESSAGES_REQUEST["messages"][2]["content"]
    for dialect in DIALECTS.values():
        assert dialect.content_text("hi") == "hi"
        assert dialect.content_text(tool_turn) == "4"
        assert dialect.content_text(None) == ""


def test_cache_key_body_ignores_fields_that_cannot_change_the_answer() -> None:
    key = OPENAI.cache_key_body(CHAT_REQUEST)
    assert "stream" not in key and "stream_options" not in key and "user" not in key
    plain = {k: v for k, v in CHAT_REQUEST.items() if k not in ("stream", "stream_options")}
    assert OPENAI.cache_key_body(plain) == key
    assert key["temperature"] == 0
    assert ANTHROPIC.cache_key_body({**MESSAGES_REQUEST, "metadata": {"user_id": "u"}}) == (
        ANTHROPIC.cache_key_body(MESSAGES_REQUEST)
    )


def test_output_limits_and_answers_per_call() -> None:
    assert OPENAI.output_limit({"max_tokens": 5}, reasoning=False) == ("max_tokens", 5)
    assert OPENAI.output_limit({}, reasoning=True) == ("max_completion_tokens", None)
    assert ANTHROPIC.output_limit(MESSAGES_REQUEST, reasoning=False) == ("max_tokens", 256)
    assert OPENAI.answers_per_call({"n": 3}) == 3
    assert ANTHROPIC.answers_per_call({"n": 3}) == 1
    assert RESPONSES.answers_per_call({"n": 3}) == 1


# --------------------------------------------------------------------------- changing requests


def test_hints_keep_the_prompt_prefix() -> None:
    chat = OPENAI.with_hint(CHAT_REQUEST, "Reply in JSON.", reasoning=True, json_mode=True)
    assert chat["messages"][:3] == CHAT_REQUEST["messages"]
    assert chat["messages"][-1] == {"role": "developer", "content": "Reply in JSON."}
    assert chat["response_format"] == {"type": "json_object"}
    claude = ANTHROPIC.with_hint(MESSAGES_REQUEST, "Be brief.", reasoning=False, json_mode=True)
    assert claude["system"][:2] == MESSAGES_REQUEST["system"]
    assert claude["system"][-1] == {"type": "text", "text": "Be brief."}
    assert claude["messages"] == MESSAGES_REQUEST["messages"]
    assert ANTHROPIC.with_hint({"system": "S"}, "T", reasoning=False, json_mode=False) == {
        "system": "S\n\nT"
    }


def test_history_summary_goes_where_the_format_keeps_system_text() -> None:
    head = [{"role": "system", "content": "S"}]
    kept = [{"role": "user", "content": "latest"}]
    assert OPENAI.with_history(head, kept, "note") == [
        *head,
        {"role": "system", "content": "note"},
        *kept,
    ]
    assert OPENAI.with_summary({"messages": kept}, "note") == {"messages": kept}
    assert ANTHROPIC.with_history([], kept, "note") == kept
    assert ANTHROPIC.with_summary({"messages": kept}, "note") == {
        "messages": kept,
        "system": "note",
    }


def test_gateway_made_requests() -> None:
    msgs = [{"role": "user", "content": "hi"}]
    claude = ANTHROPIC.client_request(ANTHROPIC.conversation("claude-x", "S", msgs))
    assert claude == {"model": "claude-x", "system": "S", "messages": msgs, "max_tokens": 1024}
    assert ANTHROPIC.client_headers["anthropic-version"]
    chat = OPENAI.client_request(OPENAI.conversation("gpt-x", "S", msgs))
    assert chat["messages"][0] == {"role": "system", "content": "S"}
    assert "max_tokens" not in chat and not OPENAI.client_headers


# --------------------------------------------------------------------------- answers


def test_answer_text() -> None:
    assert OPENAI.answer_text(CHAT_RESPONSE) == "Paris."
    assert ANTHROPIC.answer_text(MESSAGES_RESPONSE) == "4."
    assert RESPONSES.answer_text(_responses_body()) == "Paris."
    tool = {"choices": [{"message": {"content": None, "tool_calls": [{"id": "c"}]}}]}
    assert OPENAI.answer_text(tool) == '[{"id": "c"}]'


def test_error_bodies_and_frames() -> None:
    err = GatewayError(429, "slow down", type="rate_limit_error", code="rate_limited")
    assert OPENAI.error_body(err)["error"]["code"] == "rate_limited"
    assert RESPONSES.error_body(err) == OPENAI.error_body(err)
    assert ANTHROPIC.error_body(err) == {
        "type": "error",
        "error": {"type": "rate_limit_error", "message": "slow down"},
    }
    assert OPENAI.passes_upstream_errors and not ANTHROPIC.passes_upstream_errors
    for dialect in DIALECTS.values():
        frame = dialect.error_frame("cut", "upstream_stream_cut")
        (name, data), *_ = events(frame)
        payload = orjson.loads(data)
        assert "cut" in orjson.dumps(payload).decode()
        assert (name == "error") is (dialect is not OPENAI)


@pytest.mark.parametrize(
    ("dialect", "body"),
    [(OPENAI, CHAT_RESPONSE), (ANTHROPIC, MESSAGES_RESPONSE), (RESPONSES, None)],
    ids=["openai", "anthropic", "responses"],
)
def test_stream_replay_round_trips(dialect: Dialect, body: dict[str, Any] | None) -> None:
    body = body if body is not None else _responses_body()
    raw = b"".join(dialect.sse_from_body(body, include_usage=True))
    back = dialect.body_from_sse(raw)
    assert back is not None
    assert dialect.answer_text(back) == dialect.answer_text(body)


def test_a_cut_stream_is_not_replayed() -> None:
    raw = b"".join(OPENAI.sse_from_body(CHAT_RESPONSE, include_usage=False))
    assert OPENAI.body_from_sse(raw.removesuffix(b"data: [DONE]\n\n")) is None
    raw = b"".join(ANTHROPIC.sse_from_body(MESSAGES_RESPONSE, include_usage=False))
    assert ANTHROPIC.body_from_sse(raw.split(b"event: message_stop")[0]) is None


# --------------------------------------------------------------------------- between formats


def test_chat_and_messages_translate_both_ways() -> None:
    chat = {k: v for k, v in CHAT_REQUEST.items() if k not in ("stream", "stream_options")}
    assert OPENAI.request_as("openai", chat) is chat
    claude = OPENAI.request_as("anthropic", chat)
    assert claude["system"][0]["text"] == "You are terse."
    assert ANTHROPIC.request_as("anthropic", MESSAGES_REQUEST) is MESSAGES_REQUEST
    back = ANTHROPIC.request_as("openai", MESSAGES_REQUEST)
    assert back["messages"][0]["role"] == "system"
    as_chat = OPENAI.response_from(
        "anthropic", MESSAGES_RESPONSE, request=chat, model="claude", response_id=""
    )
    assert as_chat["choices"][0]["message"]["content"] == "4."
    as_claude = ANTHROPIC.response_from(
        "openai", CHAT_RESPONSE, request=MESSAGES_REQUEST, model="gpt", response_id=""
    )
    assert as_claude["content"][0]["text"] == "Paris."


def test_responses_goes_native_or_through_chat() -> None:
    assert RESPONSES.upstream_api(True, "openai") == "responses"
    assert RESPONSES.upstream_api(False, "anthropic") == "anthropic"
    assert OPENAI.upstream_api(True, "anthropic") == "anthropic"
    assert RESPONSES.request_as("responses", RESPONSES_REQUEST) is RESPONSES_REQUEST
    chat = RESPONSES.request_as("openai", RESPONSES_REQUEST)
    assert chat["messages"][0] == {"role": "system", "content": "You are terse."}
    claude = RESPONSES.request_as("anthropic", RESPONSES_REQUEST)
    assert "system" in claude and claude["max_tokens"] == 64
    native = RESPONSES.response_from(
        "responses", {"id": "x", "object": "response"}, request={}, model="m", response_id="r"
    )
    assert native == {"id": "r", "object": "response"}
    bridged = RESPONSES.response_from(
        "anthropic", MESSAGES_RESPONSE, request=RESPONSES_REQUEST, model="c", response_id="r2"
    )
    assert bridged["id"] == "r2" and RESPONSES.answer_text(bridged) == "4."
    assert not RESPONSES.chat_family and OPENAI.chat_family and ANTHROPIC.chat_family


def test_answers_are_told_apart_by_shape_and_judged_for_caching() -> None:
    bodies = {OPENAI: CHAT_RESPONSE, ANTHROPIC: MESSAGES_RESPONSE, RESPONSES: _responses_body()}
    for dialect, body in bodies.items():
        assert [d for d in DIALECTS.values() if d.is_answer(body)] == [dialect]
        assert dialect.skip_reason(body, cache_tool_calls=False) is None
        zero = dialect.zero_usage(body)
        assert not any(v for v in zero["usage"].values() if isinstance(v, int))
        assert body["usage"] != zero["usage"]  # a copy: the stored body keeps its usage
    cut = {**CHAT_RESPONSE, "choices": [{**CHAT_RESPONSE["choices"][0], "finish_reason": "length"}]}
    assert OPENAI.skip_reason(cut, cache_tool_calls=True) == "finish_reason=length"
    tool = {**MESSAGES_RESPONSE, "stop_reason": "tool_use"}
    assert ANTHROPIC.skip_reason(tool, cache_tool_calls=False) == "tool_calls"
    assert ANTHROPIC.skip_reason(tool, cache_tool_calls=True) is None
    refused = {**MESSAGES_RESPONSE, "stop_reason": "refusal"}
    assert ANTHROPIC.skip_reason(refused, cache_tool_calls=True) == "refusal"


def test_shared_content_readers() -> None:
    blocks = [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]
    assert plain_text(blocks) == "a\nb"
    assert plain_text("q") == "q"
    image = {"type": "image_url", "image_url": {"url": "https://x/y.png"}}
    assert plain_text([*blocks, image]) is None  # not a question the cache can compare
    assert plain_text(None) is None
    assert text_parts(["s", *blocks, image]) == ["s", "a", "b"]
