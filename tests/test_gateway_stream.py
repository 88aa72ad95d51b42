"""Streams that do not end normally, streams without client-visible usage, and the ledger
flush on graceful shutdown."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from typing import Any

import anthropic
import httpx2
import openai
import pytest

from conftest import (
    Harness,
    assert_priced,
    expected_cost_nanos,
    gateway_settings,
    openai_chunks,
    sse_events,
    start_harness,
    unique,
)
from openai_schema import assert_valid
from spendgate.simulated import SimulatedUpstream

CHAT = "/v1/chat/completions"
MESSAGES = "/v1/messages"
LONG_ANSWER = "Write a detailed essay on why every LLM call should be accounted for."


def _body(path: str, model: str, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": model,
        "messages": [{"role": "user", "content": LONG_ANSWER}],
        "max_tokens": 400,
        "stream": True,
    }
    body.update(extra)
    return body


# ------------------------------------------------------------------ client disconnect


@pytest.fixture(scope="module")
def slow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    """A gateway over an upstream with realistic pacing (tokens arrive over seconds), so a
    client can leave while the stream is still being generated. Latency "none" would hand
    the whole stream to the socket buffers before the client could hang up."""
    with SimulatedUpstream(latency="realistic") as upstream:
        harness = start_harness(gateway_settings(upstream, tmp_path_factory.mktemp("slow")))
        yield harness
        harness.close()


@pytest.mark.parametrize(
    ("path", "model"),
    [(CHAT, "gpt-4o"), (CHAT, "claude-sonnet-4"), (MESSAGES, "claude-sonnet-4"),
     (MESSAGES, "gpt-4o")],
)  # fmt: skip
def test_client_disconnect_mid_stream(slow: Harness, path: str, model: str) -> None:
    feature = unique("disconnect")
    received = 0
    with (
        httpx2.Client(timeout=30) as client,
        client.stream(
            "POST",
            slow.url + path,
            json=_body(path, model),
            headers={"x-spendgate-feature": feature},
        ) as r,
    ):
        assert r.status_code == 200
        for line in r.iter_lines():
            if line.startswith("data:"):
                received += 1
                if received == 3:
                    break
        # leaving both blocks closes the response unread, then the connection
    assert received == 3

    rows = slow.wait_for(lambda rows: len(rows) >= 1, feature)
    assert len(rows) == 1
    event = rows[0]
    assert event.client_disconnected
    assert event.stream
    assert event.usage_estimated
    assert event.input_tokens > 0
    assert event.cost_nanos is not None and event.cost_nanos > 0
    assert event.cost_nanos == expected_cost_nanos(event)
    assert event.baseline_nanos == event.cost_nanos
    # No second row turns up for the same call once everything is flushed.
    assert len(slow.events(feature=feature)) == 1


# ------------------------------------------------------------------ upstream cut


@pytest.mark.parametrize("model", ["gpt-4o", "claude-sonnet-4"])
def test_upstream_cut_openai_client(
    gw: Harness, http: httpx2.Client, faults: Callable[..., None], model: str
) -> None:
    served = {"gpt-4o": "gpt-4o", "claude-sonnet-4": "claude-sonnet-4-20250514"}[model]
    faults({"kind": "cut", "after_chunks": 3, "model": served})
    feature = unique("cut")
    with http.stream(
        "POST", gw.v1 + "/chat/completions", json=_body(CHAT, model),
        headers={"x-spendgate-feature": feature},
    ) as r:  # fmt: skip
        assert r.status_code == 200
        lines = list(r.iter_lines())
    chunks, done = openai_chunks(lines)
    assert not done, "a cut stream must not claim to be complete"
    assert chunks, "the chunks before the cut still reach the client"
    last = chunks[-1]
    assert set(last) == {"error"}, last
    assert last["error"]["code"] == "upstream_stream_cut"
    assert last["error"]["message"]
    for chunk in chunks[:-1]:
        assert_valid("CreateChatCompletionStreamResponse", chunk)

    event = gw.one_for(feature)
    assert event.error_type == "upstream_stream_cut"
    assert event.usage_estimated
    assert event.input_tokens > 0
    assert event.cost_nanos == expected_cost_nanos(event)
    assert not event.client_disconnected
    assert event.extra and "stream_error" in event.extra


@pytest.mark.parametrize("model", ["claude-sonnet-4", "gpt-4o"])
def test_upstream_cut_anthropic_client(
    gw: Harness, http: httpx2.Client, faults: Callable[..., None], model: str
) -> None:
    served = {"gpt-4o": "gpt-4o", "claude-sonnet-4": "claude-sonnet-4-20250514"}[model]
    faults({"kind": "cut", "after_chunks": 3, "model": served})
    feature = unique("cut-msg")
    with http.stream(
        "POST", gw.url + MESSAGES, json=_body(MESSAGES, model),
        headers={"x-spendgate-feature": feature},
    ) as r:  # fmt: skip
        assert r.status_code == 200
        events = sse_events(list(r.iter_lines()))
    names = [name for name, _ in events]
    assert names[-1] == "error", names
    assert "message_stop" not in names
    error = json.loads(events[-1][1])
    assert error["type"] == "error" and error["error"]["message"]

    event = gw.one_for(feature)
    assert event.error_type == "upstream_stream_cut"
    assert event.usage_estimated and event.input_tokens > 0
    assert event.cost_nanos == expected_cost_nanos(event)


# ------------------------------------------------------------------ usage nobody asked for


@pytest.mark.parametrize("model", ["gpt-4o", "claude-sonnet-4"])
def test_stream_without_include_usage_still_exact(
    gw: Harness, http: httpx2.Client, model: str
) -> None:
    prompt = f"Tell me about ledgers ({unique('q')})."
    base = {"model": model, "messages": [{"role": "user", "content": prompt}], "max_tokens": 200}

    quiet = unique("no-usage")
    with http.stream(
        "POST", gw.v1 + "/chat/completions", json={**base, "stream": True},
        headers={"x-spendgate-feature": quiet},
    ) as r:  # fmt: skip
        chunks, done = openai_chunks(list(r.iter_lines()))
    assert done
    assert all(c.get("usage") is None for c in chunks), "client did not ask for usage"

    # The simulated upstream is deterministic per prompt: the same request with usage shown
    # tells us what the quiet stream really used.
    shown = unique("with-usage")
    with http.stream(
        "POST", gw.v1 + "/chat/completions",
        json={**base, "stream": True, "stream_options": {"include_usage": True}},
        headers={"x-spendgate-feature": shown},
    ) as r:  # fmt: skip
        chunks, done = openai_chunks(list(r.iter_lines()))
    usage = chunks[-1]["usage"]

    event = gw.one_for(quiet)
    assert not event.usage_estimated, "the gateway asks upstream for usage regardless"
    assert event.input_tokens == usage["prompt_tokens"]
    assert event.output_tokens == usage["completion_tokens"]
    assert_priced(event)
    assert event.cost_nanos == gw.one_for(shown).cost_nanos


# ------------------------------------------------------------------ graceful shutdown flush


def test_shutdown_flushes_every_event(
    make_gateway: Callable[..., Harness],
) -> None:
    """N concurrent calls, then a graceful stop: exactly N rows, no duplicates — with a
    writer tuned so nothing is written before shutdown unless shutdown flushes it."""
    n = 300
    harness = make_gateway(ledger={"flush_interval_s": 600, "max_batch": 100_000})
    feature = unique("shutdown")

    async def fire() -> list[str]:
        limits = httpx2.Limits(max_connections=64)
        async with httpx2.AsyncClient(timeout=60, limits=limits) as client:

            async def one(i: int) -> str:
                kind = i % 3
                headers = {"x-spendgate-feature": feature}
                if kind == 2:
                    body = {
                        "model": "claude-sonnet-4",
                        "max_tokens": 30,
                        "messages": [{"role": "user", "content": f"briefly: item {i}"}],
                    }
                    r = await client.post(harness.url + MESSAGES, json=body, headers=headers)
                else:
                    body = {
                        "model": "gpt-4o-mini",
                        "messages": [{"role": "user", "content": f"briefly: item {i}"}],
                        "stream": kind == 1,
                    }
                    r = await client.post(harness.v1 + "/chat/completions", json=body,
                                          headers=headers)  # fmt: skip
                assert r.status_code == 200, r.text
                return r.headers["x-spendgate-request-id"]

            return await asyncio.gather(*(one(i) for i in range(n)))

    request_ids = asyncio.run(fire())
    assert len(set(request_ids)) == n
    harness.stop()  # graceful: lifespan shutdown closes (and drains) the batching writer

    rows = list(harness.reader().events())
    assert len(rows) == n
    assert {e.request_id for e in rows} == set(request_ids)
    assert all(e.status == 200 and e.feature == feature for e in rows)
    assert all(e.cost_nanos and e.cost_nanos > 0 for e in rows)


@pytest.mark.parametrize("model", ["claude-sonnet-4", "gpt-4o"])
def test_upstream_cut_raises_in_anthropic_sdk(
    gw: Harness, faults: Callable[..., None], model: str
) -> None:
    """The in-band error frame is what makes the real SDK raise instead of returning a
    silently truncated message."""
    served = {"gpt-4o": "gpt-4o", "claude-sonnet-4": "claude-sonnet-4-20250514"}[model]
    faults({"kind": "cut", "after_chunks": 3, "model": served})
    feature = unique("cut-sdk")
    client = anthropic.Anthropic(base_url=gw.url, api_key="x", max_retries=0)
    with (
        client,
        pytest.raises(anthropic.APIError),
        client.messages.stream(
            model=model,
            max_tokens=300,
            messages=[{"role": "user", "content": LONG_ANSWER}],
            extra_headers={"x-spendgate-feature": feature},
        ) as stream,
    ):
        stream.get_final_message()
    # The SDK raises on the error frame, possibly before the gateway has finished the
    # stream (and written its row): wait for the row rather than read once.
    [row] = gw.wait_for(lambda rows: len(rows) == 1, feature)
    assert row.error_type == "upstream_stream_cut"


@pytest.mark.parametrize("model", ["gpt-4o", "claude-sonnet-4"])
def test_upstream_cut_raises_in_openai_sdk(
    gw: Harness, faults: Callable[..., None], model: str
) -> None:
    served = {"gpt-4o": "gpt-4o", "claude-sonnet-4": "claude-sonnet-4-20250514"}[model]
    faults({"kind": "cut", "after_chunks": 3, "model": served})
    feature = unique("cut-oai-sdk")
    client = openai.OpenAI(base_url=gw.v1, api_key="x", max_retries=0)
    with client, pytest.raises(openai.APIError):
        for _ in client.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": LONG_ANSWER}],
            stream=True,
            extra_headers={"x-spendgate-feature": feature},
        ):
            pass
    # The SDK raises on the error frame, before the gateway has finished the stream and
    # written its row: wait for the row rather than read once.
    [row] = gw.wait_for(lambda rows: len(rows) == 1, feature)
    assert row.error_type == "upstream_stream_cut"
