"""Token counting: Anthropic's `messages.count_tokens` through the real anthropic SDK
(answered locally, or forwarded to an Anthropic deployment with a key) and OpenAI's
`responses.input_tokens.count`; a count must equal what the provider then bills as input."""

from __future__ import annotations

from typing import Any

import anthropic
import httpx2
import openai
import pytest

from conftest import Harness

MESSAGES = [
    {"role": "user", "content": "What does a gateway count?"},
    {"role": "assistant", "content": "Tokens, mostly."},
    {"role": "user", "content": "And what does it cost?"},
]
TOOLS = [
    {
        "name": "get_weather",
        "description": "Weather for a city",
        "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
    }
]


@pytest.mark.parametrize("tools", [None, TOOLS])
def test_anthropic_sdk_count_matches_billed_input(gw: Harness, tools: Any) -> None:
    extra = {"tools": tools} if tools else {}
    with anthropic.Anthropic(base_url=gw.url, api_key="x", max_retries=0) as client:
        raw = client.messages.with_raw_response.count_tokens(
            model="claude-sonnet-4", system="Be brief.", messages=MESSAGES, **extra
        )
        counted = raw.parse().input_tokens
        made = client.messages.create(
            model="claude-sonnet-4", system="Be brief.", messages=MESSAGES, max_tokens=50,
            **extra,
        )  # fmt: skip
    assert raw.headers["x-spendgate-token-count"] == "estimate"
    assert raw.headers["x-spendgate-tokenizer"]
    billed = made.usage.input_tokens + (made.usage.cache_read_input_tokens or 0)
    assert counted == billed > 0
    assert "x-spendgate-request-id" not in raw.headers  # free: no ledger row


def test_count_is_forwarded_to_an_anthropic_deployment_with_a_key(
    make_gateway: Any, sim: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SG_TEST_ANTHROPIC_KEY", "sk-ant-test")
    deployment = {
        "name": "real-anthropic",
        "provider": "anthropic",
        "base_url": sim.url + "/v1",
        "api_key_env": "SG_TEST_ANTHROPIC_KEY",
        "models": [{"name": "claude-direct", "upstream": "claude-sonnet-4-5"}],
    }
    h = make_gateway(deployments=[deployment])
    before = sim.stats()["by_path"].get("/v1/messages/count_tokens", 0)
    with anthropic.Anthropic(base_url=h.url, api_key="x", max_retries=0) as client:
        raw = client.messages.with_raw_response.count_tokens(
            model="claude-direct", messages=MESSAGES
        )
    assert raw.headers["x-spendgate-token-count"] == "provider"
    assert raw.parse().input_tokens > 0
    assert sim.stats()["by_path"]["/v1/messages/count_tokens"] == before + 1


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"model": "claude-sonnet-4"}, 400),
        ({"model": "nope", "messages": MESSAGES}, 404),
        ({"model": "claude-sonnet-4", "messages": MESSAGES, "stream": True}, 400),
    ],
)
def test_bad_count_requests_are_anthropic_errors_with_a_row(
    gw: Harness, http: httpx2.Client, body: dict[str, Any], status: int
) -> None:
    r = http.post(gw.url + "/v1/messages/count_tokens", json=body)
    assert r.status_code == status, r.text
    assert r.json()["type"] == "error"
    event = gw.one(r.headers["x-spendgate-request-id"])
    assert (event.endpoint, event.status, event.cost_nanos) == ("count_tokens", status, 0)


@pytest.mark.parametrize("model", ["gpt-4o-mini", "claude-sonnet-4"])
def test_openai_sdk_input_tokens_count_matches_billed_input(gw: Harness, model: str) -> None:
    request: dict[str, Any] = {"model": model, "instructions": "Be brief.",
                               "input": "How many tokens is this?"}  # fmt: skip
    with openai.OpenAI(base_url=gw.v1, api_key="x", max_retries=0) as client:
        counted = client.responses.input_tokens.count(**request)
        made = client.responses.create(**request)
    assert counted.object == "response.input_tokens"
    assert made.usage is not None
    assert counted.input_tokens == made.usage.input_tokens > 0
