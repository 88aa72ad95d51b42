"""The golden cost cases end to end: the real SDKs through the gateway to the simulated
upstream, which reports a queued usage block; the header, the stream trailer and the ledger
row must each carry the cost worked by hand from the published prices.

The tier comes from the request (OpenAI's `service_tier`, echoed by the upstream) or from the
response (Anthropic's `usage.service_tier`).
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal as D
from typing import Any

import anthropic
import openai

from conftest import Harness, sse_events

M = D(1_000_000)


def _cost_of(h: Harness, request_id: str) -> D:
    event = h.one(request_id)
    assert event.cost_nanos is not None
    return D(event.cost_nanos) / 10**9


def _trailer(lines: list[str]) -> str:
    comments = [line for line in lines if line.startswith(": x-spendgate-cost-usd=")]
    assert len(comments) == 1, lines[-5:]
    return comments[0].split("=", 1)[1]


def _stream_lines(h: Harness, path: str, body: dict[str, Any], **headers: str) -> list[str]:
    import httpx2

    with httpx2.stream("POST", h.url + path, json=body, headers=headers, timeout=30) as r:
        assert r.status_code == 200
        return list(r.iter_lines())


def test_flex_o3(gw: Harness, faults: Callable[..., None]) -> None:
    usage = {"prompt_tokens": 10_000, "completion_tokens": 2_000,
             "prompt_tokens_details": {"cached_tokens": 4_000},
             "completion_tokens_details": {"reasoning_tokens": 1_500}}  # fmt: skip
    want = (6_000 * D(1) + 4_000 * D("0.25") + 2_000 * D(4)) / M  # $0.015
    faults({"kind": "usage", "usage": usage, "model": "o3"})
    with openai.OpenAI(base_url=gw.v1, api_key="x", max_retries=0) as client:
        raw = client.chat.completions.with_raw_response.create(
            model="o3", messages=[{"role": "user", "content": "think"}], service_tier="flex"
        )
    assert raw.parse().service_tier == "flex"
    assert D(raw.headers["x-spendgate-cost-usd"]) == want
    request_id = raw.headers["x-spendgate-request-id"]
    assert _cost_of(gw, request_id) == want
    assert gw.one(request_id).extra["service_tier"] == "flex"
    # Streamed: the trailer says the same.
    faults({"kind": "usage", "usage": usage, "model": "o3"})
    stream = {"model": "o3", "stream": True, "service_tier": "flex",
              "messages": [{"role": "user", "content": "x"}]}  # fmt: skip
    lines = _stream_lines(gw, "/v1/chat/completions", stream)
    assert D(_trailer(lines)) == want


def test_priority_gpt5(gw: Harness, faults: Callable[..., None]) -> None:
    usage = {"prompt_tokens": 3_000, "completion_tokens": 700}
    want = (3_000 * D("2.5") + 700 * D(20)) / M  # $0.0215
    faults({"kind": "usage", "usage": usage, "model": "gpt-5"})
    with openai.OpenAI(base_url=gw.v1, api_key="x", max_retries=0) as client:
        raw = client.chat.completions.with_raw_response.create(
            model="gpt-5", messages=[{"role": "user", "content": "hi"}], service_tier="priority"
        )
    assert D(raw.headers["x-spendgate-cost-usd"]) == want
    assert _cost_of(gw, raw.headers["x-spendgate-request-id"]) == want


def test_audio_preview(gw: Harness, faults: Callable[..., None]) -> None:
    usage = {"prompt_tokens": 1_200, "completion_tokens": 900,
             "prompt_tokens_details": {"audio_tokens": 1_000},
             "completion_tokens_details": {"audio_tokens": 800}}  # fmt: skip
    want = (200 * D("2.5") + 1_000 * D(40) + 100 * D(10) + 800 * D(80)) / M  # $0.1055
    faults({"kind": "usage", "usage": usage, "model": "gpt-4o-audio-preview"})
    with openai.OpenAI(base_url=gw.v1, api_key="x", max_retries=0) as client:
        raw = client.chat.completions.with_raw_response.create(
            model="gpt-4o-audio-preview", messages=[{"role": "user", "content": "say hi"}]
        )
    assert D(raw.headers["x-spendgate-cost-usd"]) == want
    event = gw.one(raw.headers["x-spendgate-request-id"])
    assert D(event.cost_nanos or 0) / 10**9 == want
    assert event.extra["audio_tokens"] == {"input": 1_000, "cache_read": 0, "output": 800}


def test_claude_sonnet_4_long_context_and_batch(gw: Harness, faults: Callable[..., None]) -> None:
    long = {"input_tokens": 250_000, "output_tokens": 2_000, "service_tier": "standard"}
    want = (250_000 * D(6) + 2_000 * D("22.5")) / M  # $1.545
    faults({"kind": "usage", "usage": long, "model": "claude-sonnet-4-20250514"})
    with anthropic.Anthropic(base_url=gw.url, api_key="x", max_retries=0) as client:
        raw = client.messages.with_raw_response.create(
            model="claude-sonnet-4", max_tokens=50, messages=[{"role": "user", "content": "x"}]
        )
    assert D(raw.headers["x-spendgate-cost-usd"]) == want
    assert _cost_of(gw, raw.headers["x-spendgate-request-id"]) == want

    batch = {"input_tokens": 1_000, "cache_read_input_tokens": 8_000,
             "cache_creation_input_tokens": 2_000, "output_tokens": 500,
             "service_tier": "batch"}  # fmt: skip
    want = (1_000 * D("1.5") + 8_000 * D("0.15") + 2_000 * D("1.875") + 500 * D("7.5")) / M
    faults({"kind": "usage", "usage": batch, "model": "claude-sonnet-4-20250514"})
    stream = {"model": "claude-sonnet-4", "max_tokens": 50, "stream": True,
              "messages": [{"role": "user", "content": "x"}]}  # fmt: skip
    lines = _stream_lines(gw, "/v1/messages", stream)
    assert D(_trailer(lines)) == want == D("0.0102")


def test_one_hour_write_split_reaches_openai_clients(
    gw: Harness, faults: Callable[..., None]
) -> None:
    """A Claude call through /v1/chat/completions: the usage the client gets says how many
    cache writes were 1-hour ones, so it can reproduce the billed cost."""
    usage = {"input_tokens": 100, "cache_read_input_tokens": 0,
             "cache_creation_input_tokens": 3_000, "output_tokens": 10,
             "cache_creation": {"ephemeral_5m_input_tokens": 1_000,
                                "ephemeral_1h_input_tokens": 2_000}}  # fmt: skip
    faults({"kind": "usage", "usage": usage, "model": "claude-sonnet-4-20250514"})
    with openai.OpenAI(base_url=gw.v1, api_key="x", max_retries=0) as client:
        raw = client.chat.completions.with_raw_response.create(
            model="claude-sonnet-4", messages=[{"role": "user", "content": "x"}]
        )
    body = raw.parse()
    assert body.usage is not None
    split = body.usage.model_extra["cache_creation"]  # type: ignore[index]
    assert split == {"ephemeral_5m_input_tokens": 1_000, "ephemeral_1h_input_tokens": 2_000}
    billed = (100 * D(3) + 1_000 * D("3.75") + 2_000 * D(6) + 10 * D(15)) / M
    from_client = (
        (body.usage.prompt_tokens - 3_000) * D(3)
        + split["ephemeral_5m_input_tokens"] * D("3.75")
        + split["ephemeral_1h_input_tokens"] * D(6)
        + body.usage.completion_tokens * D(15)
    ) / M
    assert D(raw.headers["x-spendgate-cost-usd"]) == billed == from_client


def test_unknown_cost_says_so_in_the_stream_trailer(
    gw: Harness, faults: Callable[..., None]
) -> None:
    """gpt-4o has no flex price: the header and the trailer both say `unknown`."""
    body = {
        "model": "gpt-4o",
        "service_tier": "flex",
        "messages": [{"role": "user", "content": "x"}],
    }
    import httpx2

    whole = httpx2.post(gw.v1 + "/chat/completions", json=body, timeout=30)
    assert whole.headers["x-spendgate-cost-usd"] == "unknown"
    assert gw.one(whole.headers["x-spendgate-request-id"]).cost_nanos is None
    lines = _stream_lines(gw, "/v1/chat/completions", {**body, "stream": True})
    assert _trailer(lines) == "unknown"
    assert sse_events(lines)  # the answer itself streamed normally
