"""Token counting against figures OpenAI's API reported (the cookbook's published runs) and
against the structure of the rules, never against numbers the code itself produced."""

from __future__ import annotations

import pytest

from spendgate import tokens
from spendgate.tokens.encoders import CLAUDE_RATIO_V3, _bpe

JARGON = [
    {
        "role": "system",
        "content": (
            "You are a helpful, pattern-following assistant that translates corporate jargon"
            " into plain English."
        ),
    },
    {
        "role": "system",
        "name": "example_user",
        "content": "New synergies will help drive top-line growth.",
    },
    {
        "role": "system",
        "name": "example_assistant",
        "content": "Things working well together will increase revenue.",
    },
    {
        "role": "system",
        "name": "example_user",
        "content": (
            "Let's circle back when we have more bandwidth to touch base on opportunities"
            " for increased leverage."
        ),
    },
    {
        "role": "system",
        "name": "example_assistant",
        "content": "Let's talk later when we're less busy about how to do better.",
    },
    {
        "role": "user",
        "content": (
            "This late pivot means we don't have time to boil the ocean for the client deliverable."
        ),
    },
]
WEATHER_TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_current_weather",
            "description": "Get the current weather in a given location",
            "parameters": {
                "type": "object",
                "properties": {
                    "location": {
                        "type": "string",
                        "description": "The city and state, e.g. San Francisco, CA",
                    },
                    "unit": {
                        "type": "string",
                        "description": "The unit of temperature to return",
                        "enum": ["celsius", "fahrenheit"],
                    },
                },
                "required": ["location"],
            },
        },
    }
]
WEATHER_MESSAGES = [
    {
        "role": "system",
        "content": "You are a helpful assistant that can answer to questions about the weather.",
    },
    {"role": "user", "content": "What's the weather like in San Francisco?"},
]


@pytest.mark.parametrize(
    ("model", "api_prompt_tokens"),
    [("gpt-4o", 124), ("gpt-4o-mini", 124), ("gpt-4", 129), ("gpt-3.5-turbo", 129)],
)
def test_messages_match_openai_api(model: str, api_prompt_tokens: int) -> None:
    # prompt_tokens the OpenAI API returned for this body (OpenAI cookbook, "How to count tokens")
    assert tokens.count_openai_request(model, {"messages": JARGON}) == api_prompt_tokens


@pytest.mark.parametrize(("model", "api_prompt_tokens"), [("gpt-4o", 101), ("gpt-4", 105)])
def test_tools_match_openai_api(model: str, api_prompt_tokens: int) -> None:
    body = {"messages": WEATHER_MESSAGES, "tools": WEATHER_TOOLS}
    assert tokens.count_openai_request(model, body) == api_prompt_tokens


def test_families_and_prefixes() -> None:
    assert tokens.family("openai/gpt-4o-mini") == "o200k"
    assert tokens.family("gpt-4.1-nano") == "o200k"
    assert tokens.family("o3-mini") == tokens.family("gpt-5") == "o200k"
    assert tokens.family("gpt-4-turbo") == tokens.family("gpt-3.5-turbo") == "cl100k"
    assert tokens.family("text-embedding-3-small") == "cl100k"
    assert tokens.family("anthropic/claude-3-5-sonnet-20241022") == "claude"
    assert tokens.family("some-new-model") == "o200k"
    assert tokens.claude_version("claude-opus-4-7") == "4.7"
    assert tokens.claude_version("claude-3-5-haiku-20241022") == "3.0"
    assert tokens.claude_version("claude-sonnet-4-20250514") == "3.0"


def test_content_parts_count_like_strings() -> None:
    text = "Summarise the quarterly report in three bullet points."
    as_string = {"messages": [{"role": "user", "content": text}]}
    as_parts = {"messages": [{"role": "user", "content": [{"type": "text", "text": text}]}]}
    assert tokens.count_openai_request("gpt-4o", as_string) == tokens.count_openai_request(
        "gpt-4o", as_parts
    )
    low = {"type": "image_url", "image_url": {"url": "data:,", "detail": "low"}}
    with_image = {"messages": [{"role": "user", "content": [{"type": "text", "text": text}, low]}]}
    added = tokens.count_openai_request("gpt-4o", with_image) - tokens.count_openai_request(
        "gpt-4o", as_string
    )
    assert added == 85  # OpenAI's documented low-detail image cost


def test_tool_calls_in_history_are_counted() -> None:
    args = '{"location": "Paris, France"}'
    call = {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": args}}
    plain = {"messages": [{"role": "assistant", "content": None}]}
    with_call = {"messages": [{"role": "assistant", "content": None, "tool_calls": [call]}]}
    extra = tokens.count_openai_request("gpt-4o", with_call) - tokens.count_openai_request(
        "gpt-4o", plain
    )
    assert extra >= tokens.count_text("gpt-4o", args) + tokens.count_text("gpt-4o", "get_weather")


def test_anthropic_request_structure() -> None:
    model = "claude-sonnet-4-5"
    text = "Explain prompt caching in two sentences."
    one = {"messages": [{"role": "user", "content": text}]}
    base = tokens.count_anthropic_request(model, one)
    assert base > tokens.count_text(model, text)  # the frame is counted
    system = "You are terse."
    with_sys = {**one, "system": [{"type": "text", "text": system}]}
    assert tokens.count_anthropic_request(model, with_sys) == base + tokens.count_text(
        model, system
    )
    tool = {"name": "lookup", "description": "Look a term up.", "input_schema": {"type": "object"}}
    with_tool = {**one, "tools": [tool]}
    # Anthropic documents a 346-token tool-use system prompt for tool_choice auto on Sonnet 4.x
    assert tokens.count_anthropic_request(model, with_tool) - base >= 346
    marked = {
        "system": [{"type": "text", "text": system * 10, "cache_control": {"type": "ephemeral"}}],
        "messages": one["messages"],
    }
    (point,) = tokens.anthropic_cache_breakpoints(model, marked)
    assert point[1] == "5m"
    assert point[0] == tokens.count_anthropic_request(model, marked) - tokens.count_text(
        model, text
    )


def test_claude_counts_track_o200k_by_the_documented_ratio() -> None:
    text = "The quick brown fox jumps over the lazy dog. " * 40
    o200k = _bpe("o200k")(text)
    claude = tokens.count_text("claude-3-5-sonnet", text)
    assert 0.8 * CLAUDE_RATIO_V3 * o200k < claude < 1.25 * CLAUDE_RATIO_V3 * o200k


def test_embedding_inputs() -> None:
    m = "text-embedding-3-small"
    assert tokens.count_embedding_input(m, [1, 2, 3]) == 3
    assert tokens.count_embedding_input(m, [[1, 2], [3]]) == 3
    a, b = "first input", "second input text"
    assert tokens.count_embedding_input(m, [a, b]) == tokens.count_text(m, a) + tokens.count_text(
        m, b
    )


def test_lone_surrogate_does_not_crash() -> None:
    assert tokens.count_text("gpt-4o", "a\udc80b") > 0


def test_claude_frames_are_ctoks_measured_overheads() -> None:
    """The frame table spares loading ctok for a constant; it must say what ctok says."""
    pytest.importorskip("ctok")
    from ctok.main import _family, _model

    from spendgate.tokens.encoders import CLAUDE_FRAMES

    for version, frame in CLAUDE_FRAMES.items():
        assert frame == int(_model(_family(version)).message_overhead), version
