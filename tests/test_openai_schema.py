"""The spec validator must both accept real OpenAI shapes and reject broken ones.

Why: a validator that never fails proves nothing, so each component is checked with a known
good instance (shaped like what api.openai.com returns) and with deliberate breakages.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from openai_schema import assert_valid, errors_for, validator_for

GOOD_RESPONSE: dict[str, Any] = {
    "id": "chatcmpl-123",
    "object": "chat.completion",
    "created": 1_700_000_000,
    "model": "gpt-4o-mini",
    "choices": [
        {
            "index": 0,
            "message": {
                "role": "assistant",
                "content": None,
                "refusal": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                    }
                ],
            },
            "logprobs": None,
            "finish_reason": "tool_calls",
        }
    ],
    "usage": {
        "prompt_tokens": 10,
        "completion_tokens": 5,
        "total_tokens": 15,
        "prompt_tokens_details": {"cached_tokens": 0},
    },
}

GOOD_CHUNK: dict[str, Any] = {
    "id": "chatcmpl-123",
    "object": "chat.completion.chunk",
    "created": 1_700_000_000,
    "model": "gpt-4o-mini",
    "choices": [
        {
            "index": 0,
            "delta": {"role": "assistant", "content": ""},
            "finish_reason": None,
            "logprobs": None,
        }
    ],
    "usage": None,
}

USAGE_CHUNK: dict[str, Any] = {
    "id": "chatcmpl-123",
    "object": "chat.completion.chunk",
    "created": 1_700_000_000,
    "model": "gpt-4o-mini",
    "choices": [],
    "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
}


def test_good_response_passes() -> None:
    assert_valid("CreateChatCompletionResponse", GOOD_RESPONSE)


def test_text_response_passes() -> None:
    body = copy.deepcopy(GOOD_RESPONSE)
    body["choices"][0]["message"] = {"role": "assistant", "content": "hi", "refusal": None}
    body["choices"][0]["finish_reason"] = "stop"
    assert_valid("CreateChatCompletionResponse", body)


@pytest.mark.parametrize("chunk", [GOOD_CHUNK, USAGE_CHUNK])
def test_good_chunks_pass(chunk: dict[str, Any]) -> None:
    assert_valid("CreateChatCompletionStreamResponse", chunk)


def test_nullable_fields_accept_null() -> None:
    """finish_reason/usage/logprobs are `nullable: true` in the spec; null must pass."""
    chunk = copy.deepcopy(GOOD_CHUNK)
    chunk["choices"][0]["finish_reason"] = None
    chunk["choices"][0]["logprobs"] = None
    assert_valid("CreateChatCompletionStreamResponse", chunk)


def _broken(path: list[Any], value: Any = ..., base: dict[str, Any] = GOOD_RESPONSE) -> Any:
    body = copy.deepcopy(base)
    node = body
    for key in path[:-1]:
        node = node[key]
    if value is ...:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return body


@pytest.mark.parametrize(
    ("path", "value", "needle"),
    [
        (["object"], "chat.completion.chunk", "object"),
        (["created"], "yesterday", "created"),
        (["id"], ..., "'id' is a required property"),
        (["choices", 0, "logprobs"], ..., "'logprobs' is a required property"),
        (["choices", 0, "message", "refusal"], ..., "'refusal' is a required property"),
        (["choices", 0, "finish_reason"], "end_turn", "finish_reason"),
        (
            ["choices", 0, "message", "tool_calls", 0, "function", "arguments"],
            {"city": "x"},
            "tool_calls",
        ),
        (["usage", "total_tokens"], ..., "'total_tokens' is a required property"),
    ],
)
def test_broken_response_fails(path: list[Any], value: Any, needle: str) -> None:
    problems = errors_for("CreateChatCompletionResponse", _broken(path, value))
    assert problems
    assert any(needle in p for p in problems), problems
    with pytest.raises(AssertionError, match="not a valid OpenAI"):
        assert_valid("CreateChatCompletionResponse", _broken(path, value))


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (["object"], "chat.completion"),
        (["choices", 0, "finish_reason"], ...),
        (["choices", 0, "finish_reason"], "max_tokens"),
        (["choices", 0, "delta", "role"], "model"),
    ],
)
def test_broken_chunk_fails(path: list[Any], value: Any) -> None:
    assert errors_for("CreateChatCompletionStreamResponse", _broken(path, value, GOOD_CHUNK))


def test_unknown_component_is_a_clear_error() -> None:
    with pytest.raises(KeyError, match="NoSuchThing"):
        validator_for("NoSuchThing")
