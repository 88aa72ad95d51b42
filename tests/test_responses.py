"""OpenAI's Responses API end to end: the real openai SDK → the gateway (a real socket) → the
simulated upstream, natively for OpenAI models and translated for Claude, every answer and
streamed event checked against OpenAI's published spec and every call against the ledger."""

from __future__ import annotations

import json
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import httpx2
import openai
import pytest

from conftest import Harness, assert_priced, expected_cost_nanos, sse_events, unique
from openai_schema import assert_valid
from spendgate.cache.stage import CacheStage
from spendgate.pricing import usage_from_openai

TOOLS = [
    {
        "type": "function",
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    }
]
SCHEMA = {
    "type": "json_schema",
    "name": "city",
    "schema": {
        "type": "object",
        "properties": {"name": {"type": "string"}, "population": {"type": "integer"}},
        "required": ["name", "population"],
        "additionalProperties": False,
    },
    "strict": True,
}
MODELS = ["gpt-4o", "claude-sonnet-4"]


def _cache_stage(h: Harness) -> CacheStage:
    stage = h.gateway.pipeline.find(CacheStage)
    assert stage is not None
    return stage


@pytest.fixture(scope="module")
def oai(gw: Harness) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=gw.v1, api_key="sk-unused", max_retries=0) as client:
        yield client


def _nanos(header: str) -> int:
    return int(Decimal(header) * 1_000_000_000)


def _stream(http: httpx2.Client, url: str, body: dict[str, Any], **headers: str) -> list[Any]:
    with http.stream("POST", url, json={**body, "stream": True}, headers=headers) as r:
        assert r.status_code == 200, r.read()
        lines = list(r.iter_lines())
    return [(name, json.loads(data)) for name, data in sse_events(lines)]


# ------------------------------------------------------------------ create


@pytest.mark.parametrize("model", MODELS)
def test_create_is_a_spec_valid_response_priced_in_the_ledger(
    gw: Harness, oai: openai.OpenAI, model: str
) -> None:
    feature = unique("resp")
    raw = oai.responses.with_raw_response.create(
        model=model,
        instructions="You are terse.",
        input="Name three uses of a ledger.",
        max_output_tokens=200,
        extra_headers={"x-spendgate-feature": feature, "x-spendgate-team": "growth"},
    )
    body = raw.http_response.json()
    assert_valid("Response", body)
    response = raw.parse()
    request_id = raw.headers["x-spendgate-request-id"]
    assert response.id == "resp_" + request_id.removeprefix("sg-")
    assert response.status == "completed" and response.output_text
    event = gw.one(request_id)
    assert (event.endpoint, event.api, event.feature, event.team) == (
        "responses", "responses", feature, "growth",
    )  # fmt: skip
    assert_priced(event)
    assert event.input_tokens == body["usage"]["input_tokens"]
    assert event.output_tokens == body["usage"]["output_tokens"]
    assert _nanos(raw.headers["x-spendgate-cost-usd"]) == event.cost_nanos


@pytest.mark.parametrize("model", MODELS)
def test_sdk_stream_events_are_spec_valid_and_priced(
    gw: Harness, oai: openai.OpenAI, http: httpx2.Client, model: str
) -> None:
    feature = unique("resp-stream")
    with oai.responses.stream(
        model=model,
        input="Write two sentences about caching.",
        extra_headers={"x-spendgate-feature": feature},
    ) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_response()
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[-1] == "response.completed"
    assert "response.output_text.delta" in kinds
    assert final.output_text and final.usage is not None and final.usage.output_tokens > 0
    event = gw.one_for(feature)
    assert event.stream and event.endpoint == "responses"
    assert_priced(event)
    assert (event.input_tokens, event.output_tokens) == (
        final.usage.input_tokens, final.usage.output_tokens,
    )  # fmt: skip
    # Every raw event, as a client without the SDK sees it, is in OpenAI's spec.
    events = _stream(http, gw.v1 + "/responses", {"model": model, "input": "Hi there."})
    numbers = [data["sequence_number"] for _, data in events]
    assert numbers == sorted(numbers)
    ids = {data["response"]["id"] for _, data in events if "response" in data}
    assert len(ids) == 1
    for name, data in events:
        assert name == data["type"]
        assert_valid("ResponseStreamEvent", data)


def test_cost_header_ends_a_stream(gw: Harness, http: httpx2.Client) -> None:
    feature = unique("resp-trailer")
    body = {"model": "gpt-4o-mini", "input": "Hello", "stream": True}
    with http.stream(
        "POST", gw.v1 + "/responses", json=body, headers={"x-spendgate-feature": feature}
    ) as r:
        text = r.read().decode()
    trailer = [line for line in text.splitlines() if line.startswith(": x-spendgate-cost-usd=")]
    assert len(trailer) == 1
    assert _nanos(trailer[0].split("=", 1)[1]) == gw.one_for(feature).cost_nanos


# ------------------------------------------------------------------ conversation state


def test_previous_response_id_carries_the_conversation_across_providers(
    gw: Harness, oai: openai.OpenAI
) -> None:
    feature = unique("resp-chain")
    headers = {"x-spendgate-feature": feature}
    first = oai.responses.create(
        model="gpt-4o-mini", input="Remember the word teal.", extra_headers=headers
    )
    second = oai.responses.create(
        model="claude-sonnet-4",
        previous_response_id=first.id,
        input="Which word did I ask you to remember?",
        extra_headers=headers,
    )
    third = oai.responses.create(
        model="gpt-4o-mini",
        previous_response_id=second.id,
        input="Thanks.",
        extra_headers=headers,
    )
    assert second.previous_response_id == first.id
    assert first.usage and second.usage and third.usage
    # Each turn is sent the whole conversation so far.
    assert second.usage.input_tokens > first.usage.input_tokens
    assert third.usage.input_tokens > second.usage.input_tokens + second.usage.output_tokens
    rows = gw.events(feature=feature)
    assert len(rows) == 3 and all(r.status == 200 for r in rows)
    got = oai.responses.retrieve(second.id)
    assert got.id == second.id and got.output_text == second.output_text
    items = oai.responses.input_items.list(second.id)
    texts = json.dumps([i.model_dump() for i in items.data])
    assert "Remember the word teal." in texts and "Which word" in texts


def test_delete_then_get_is_404(gw: Harness, oai: openai.OpenAI) -> None:
    made = oai.responses.create(model="gpt-4o-mini", input="Short answer please.")
    oai.responses.delete(made.id)
    with pytest.raises(openai.NotFoundError):
        oai.responses.retrieve(made.id)
    with pytest.raises(openai.NotFoundError):
        oai.responses.create(model="gpt-4o-mini", input="again", previous_response_id=made.id)


def test_store_false_is_not_kept(gw: Harness, oai: openai.OpenAI) -> None:
    made = oai.responses.create(model="gpt-4o-mini", input="Do not keep this.", store=False)
    with pytest.raises(openai.NotFoundError):
        oai.responses.retrieve(made.id)


def test_another_tenants_response_is_404(make_gateway: Any) -> None:
    h = make_gateway(server={"auth": "required"})
    key_a, _ = h.gateway.keys.create(name="a", tenant="tenant-a")
    key_b, _ = h.gateway.keys.create(name="b", tenant="tenant-b")
    with (
        openai.OpenAI(base_url=h.v1, api_key=key_a, max_retries=0) as a,
        openai.OpenAI(base_url=h.v1, api_key=key_b, max_retries=0) as b,
    ):
        mine = a.responses.create(model="gpt-4o-mini", input="A secret of tenant A.")
        assert a.responses.retrieve(mine.id).id == mine.id
        with pytest.raises(openai.NotFoundError):
            b.responses.retrieve(mine.id)
        with pytest.raises(openai.NotFoundError):
            b.responses.delete(mine.id)
        with pytest.raises(openai.NotFoundError) as refused:
            b.responses.create(model="gpt-4o-mini", input="go on", previous_response_id=mine.id)
        assert a.responses.retrieve(mine.id).id == mine.id  # B's delete did nothing
    refusals = [r for r in h.events() if r.status == 404]
    # retrieve, delete and previous_response_id: each refusal has its row, B's, free
    assert len(refusals) == 3
    assert {(r.endpoint, r.tenant, r.cost_nanos) for r in refusals} == {
        ("responses", "tenant-b", 0)
    }
    assert refused.value.response.headers["x-spendgate-request-id"] in {
        r.request_id for r in refusals
    }


def test_responses_survive_a_restart(make_gateway: Any, tmp_path: Any) -> None:
    state = f"sqlite:///{tmp_path / 'state.db'}"
    first = make_gateway(storage={"state": state})
    with openai.OpenAI(base_url=first.v1, api_key="x", max_retries=0) as c:
        made = c.responses.create(model="gpt-4o-mini", input="Keep me.")
    first.close()  # graceful: pending writes land
    second = make_gateway(storage={"state": state})
    with openai.OpenAI(base_url=second.v1, api_key="x", max_retries=0) as c:
        assert c.responses.retrieve(made.id).output_text == made.output_text


# ------------------------------------------------------------------ tools and formats


@pytest.mark.parametrize("model", MODELS)
def test_function_call_round_trip(gw: Harness, oai: openai.OpenAI, model: str) -> None:
    raw = oai.responses.with_raw_response.create(
        model=model,
        input="Use get_weather for Paris.",
        tools=TOOLS,  # type: ignore[arg-type]
    )
    assert_valid("Response", raw.http_response.json())
    asked = raw.parse()
    calls = [item for item in asked.output if item.type == "function_call"]
    assert len(calls) == 1 and calls[0].name == "get_weather"
    assert json.loads(calls[0].arguments)["city"]
    answered = oai.responses.create(
        model=model,
        previous_response_id=asked.id,
        input=[{"type": "function_call_output", "call_id": calls[0].call_id, "output": "sunny"}],
        tools=TOOLS,  # type: ignore[arg-type]
    )
    assert answered.output_text
    assert not [i for i in answered.output if i.type == "function_call"]


@pytest.mark.parametrize("model", MODELS)
def test_json_schema_format(gw: Harness, oai: openai.OpenAI, model: str) -> None:
    made = oai.responses.create(
        model=model,
        input="Give me a city as JSON.",
        text={"format": SCHEMA},  # type: ignore[typeddict-item]
    )
    value = json.loads(made.output_text)
    if model.startswith("gpt"):  # Claude is asked for JSON by instruction, not by schema
        assert set(value) == {"name", "population"}
    assert isinstance(value, dict)


def test_stream_of_a_tool_call_via_claude(gw: Harness, http: httpx2.Client) -> None:
    body = {"model": "claude-sonnet-4", "input": "Call get_weather for Rome.", "tools": TOOLS}
    events = _stream(http, gw.v1 + "/responses", body)
    kinds = [name for name, _ in events]
    assert "response.function_call_arguments.delta" in kinds
    done = [d for n, d in events if n == "response.function_call_arguments.done"]
    assert json.loads(done[0]["arguments"])["city"]
    for _, data in events:
        assert_valid("ResponseStreamEvent", data)


def test_reasoning_and_cached_tokens_are_priced_exactly(
    gw: Harness, http: httpx2.Client, faults: Any
) -> None:
    """A usage block with cached input and reasoning output, set on the upstream: the
    ledger splits it into buckets and prices each at its list price."""
    usage = {
        "input_tokens": 4000,
        "input_tokens_details": {"cached_tokens": 3072, "cache_write_tokens": 0},
        "output_tokens": 900,
        "output_tokens_details": {"reasoning_tokens": 700},
        "total_tokens": 4900,
    }
    faults({"kind": "usage", "usage": usage, "path": "/v1/responses"})
    feature = unique("resp-usage")
    r = http.post(
        gw.v1 + "/responses",
        json={"model": "gpt-4o-mini", "input": "Think.", "reasoning": {"effort": "low"}},
        headers={"x-spendgate-feature": feature},
    )
    assert r.status_code == 200, r.text
    event = gw.one_for(feature)
    assert (event.input_tokens, event.cache_read_tokens, event.output_tokens) == (4000, 3072, 900)
    assert event.reasoning_tokens == 700
    assert event.cost_nanos == expected_cost_nanos(event)
    # cached input at half price: cheaper than the same tokens uncached
    assert usage_from_openai(usage).cache_read_tokens == 3072


def test_service_tier_flex_is_billed_at_flex(gw: Harness, http: httpx2.Client) -> None:
    costs = {}
    for tier in ("default", "flex"):
        feature = unique("resp-tier")
        r = http.post(
            gw.v1 + "/responses",
            json={"model": "o3", "input": "Same question.", "service_tier": tier},
            headers={"x-spendgate-feature": feature},
        )
        assert r.status_code == 200, r.text
        assert r.json()["service_tier"] == tier
        event = gw.one_for(feature)
        assert (event.extra or {}).get("service_tier") == (None if tier == "default" else "flex")
        costs[tier] = event
    standard, flex = costs["default"], costs["flex"]
    assert (standard.input_tokens, standard.output_tokens) == (flex.input_tokens,
                                                               flex.output_tokens)  # fmt: skip
    assert flex.cost_nanos is not None and standard.cost_nanos is not None
    assert flex.cost_nanos * 2 == standard.cost_nanos  # o3 flex is half price


# ------------------------------------------------------------------ deployments


def test_a_deployment_without_the_api_gets_chat(make_gateway: Any, sim: Any) -> None:
    h = make_gateway(deployment_overrides={"responses_api": False})
    before = sim.stats()["by_path"]
    with openai.OpenAI(base_url=h.v1, api_key="x", max_retries=0) as c:
        raw = c.responses.with_raw_response.create(model="gpt-4o-mini", input="Translated.")
        assert_valid("Response", raw.http_response.json())
        made = raw.parse()
        with c.responses.stream(model="gpt-4o-mini", input="And streamed.") as s:
            for _ in s:
                pass
            streamed = s.get_final_response()
    after = sim.stats()["by_path"]
    assert after.get("/v1/responses", 0) == before.get("/v1/responses", 0)
    assert after["/v1/chat/completions"] == before.get("/v1/chat/completions", 0) + 2
    assert made.output_text and streamed.output_text
    for event in h.events():
        assert_priced(event)


# ------------------------------------------------------------------ refusals


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        ({"model": "gpt-4o-mini"}, 400, "input"),
        ({"model": "gpt-4o-mini", "input": "x", "bogus": 1}, 400, "bogus"),
        ({"model": "gpt-4o-mini", "input": 3}, 400, "input"),
        ({"model": "gpt-4o-mini", "input": [{"type": "item_reference", "id": "m"}]}, 400,
         "input[0]"),
        ({"model": "gpt-4o-mini", "input": "x", "background": True}, 400, "background"),
        ({"model": "gpt-4o-mini", "input": "x", "previous_response_id": "resp_nope"}, 404,
         "previous_response_id"),
        ({"model": "claude-sonnet-4", "input": "x", "tools": [{"type": "web_search"}]}, 400,
         "tools[0]"),
        ({"model": "no-such-model", "input": "x"}, 404, "model"),
    ],
)  # fmt: skip
def test_bad_requests_are_refused_with_a_ledger_row(
    gw: Harness, http: httpx2.Client, body: dict[str, Any], status: int, param: str
) -> None:
    r = http.post(gw.v1 + "/responses", json=body)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert error["param"] == param and error["message"]
    event = gw.one(r.headers["x-spendgate-request-id"])
    assert event.status == status and event.cost_nanos == 0


def test_a_cut_stream_fails_in_band_and_is_estimated(
    gw: Harness, http: httpx2.Client, faults: Any
) -> None:
    faults({"kind": "cut", "after_chunks": 4, "path": "/v1/responses"})
    feature = unique("resp-cut")
    events = _stream(
        http, gw.v1 + "/responses", {"model": "gpt-4o-mini", "input": "A long story."},
        **{"x-spendgate-feature": feature},
    )  # fmt: skip
    assert events[-1][0] == "error"
    assert_valid("ResponseStreamEvent", events[-1][1])
    event = gw.one_for(feature)
    assert event.error_type == "upstream_stream_cut" and event.usage_estimated
    assert event.cost_nanos is not None and event.cost_nanos > 0


# ------------------------------------------------------------------ cache


def test_exact_cache_replays_a_response_with_a_fresh_id(make_gateway: Any) -> None:
    h = make_gateway(cache={"enabled": True})
    feature = unique("resp-cache")
    headers = {"x-spendgate-feature": feature}
    body = {"model": "gpt-4o-mini", "input": "What is a ledger?", "temperature": 0}
    with httpx2.Client(timeout=30) as http:
        first = http.post(h.v1 + "/responses", json=body, headers=headers)
        _cache_stage(h).drain_threadsafe()
        second = http.post(h.v1 + "/responses", json=body, headers=headers)
        streamed = _stream(http, h.v1 + "/responses", body, **headers)
    assert second.headers["x-spendgate-cache"] == "hit"
    a, b = first.json(), second.json()
    assert a["id"] != b["id"] and a["output"] == b["output"]
    assert b["usage"]["input_tokens"] == 0
    assert_valid("Response", b)
    final = streamed[-1][1]["response"]
    assert final["output"] == a["output"]
    for _, data in streamed:
        assert_valid("ResponseStreamEvent", data)
    rows = {r.request_id: r for r in h.events(feature=feature)}
    hit = rows[second.headers["x-spendgate-request-id"]]
    assert hit.cache == "hit" and hit.cost_nanos == 0
    assert hit.savings["cache"] == rows[first.headers["x-spendgate-request-id"]].cost_nanos
