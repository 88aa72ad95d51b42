"""Batch APIs through the gateway, and the deferral lane, end to end with the real openai and
anthropic SDKs: a batch of 100 requests through each Batch API ends as 100 ledger events at
half the list price, attributed to whoever created the batch."""

from __future__ import annotations

import json
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import anthropic
import httpx2
import openai
import orjson
import pytest

from conftest import Harness, expected_cost_nanos, unique
from openai_schema import assert_valid
from spendgate.batches.service import KIND_BATCH
from spendgate.ledger import UsageEvent

FAST = {"batches": {"poll_interval_s": 0.05, "defer": {"flush_interval_s": 0}}}


@pytest.fixture(scope="module")
def batch_gw(make_gateway_module: Any) -> Harness:
    return make_gateway_module(**FAST)


@pytest.fixture(scope="module")
def make_gateway_module(sim: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from conftest import gateway_settings, start_harness

    made: list[Harness] = []

    def build(**overrides: Any) -> Harness:
        harness = start_harness(
            gateway_settings(sim, tmp_path_factory.mktemp("batches"), **overrides)
        )
        made.append(harness)
        return harness

    yield build
    for harness in made:
        harness.close()


def _half_price(event: UsageEvent) -> None:
    """A batch line: its usage at exactly half the published list price."""
    assert event.status == 200, event
    assert event.input_tokens > 0 and event.output_tokens > 0
    assert event.cost_nanos is not None
    assert event.cost_nanos * 2 == expected_cost_nanos(event)
    assert (event.extra or {}).get("service_tier") == "batch"


def _lines(n: int, model: str, url: str = "/v1/chat/completions") -> bytes:
    rows = []
    for i in range(n):
        if url == "/v1/responses":
            body: dict[str, Any] = {"model": model, "input": f"Question number {i}?"}
        else:
            body = {"model": model, "max_tokens": 60,
                    "messages": [{"role": "user", "content": f"Question number {i}?"}]}  # fmt: skip
        rows.append({"custom_id": f"req-{i}", "method": "POST", "url": url, "body": body})
    return b"\n".join(orjson.dumps(r) for r in rows) + b"\n"


def _openai_batch(client: openai.OpenAI, data: bytes, url: str, **extra: Any) -> Any:
    file = client.files.create(file=("requests.jsonl", data), purpose="batch")
    batch = client.batches.create(
        input_file_id=file.id, endpoint=url, completion_window="24h", **extra
    )  # type: ignore[arg-type]
    for _ in range(200):  # each status fetch is a real round trip to gateway and upstream
        batch = client.batches.retrieve(batch.id)
        if batch.status in ("completed", "failed", "expired", "cancelled"):
            return batch
    raise AssertionError(f"batch never ended: {batch}")


# ------------------------------------------------------------------ OpenAI


def test_openai_batch_of_100_is_100_events_at_half_price(batch_gw: Harness) -> None:
    feature = unique("batch-openai")
    with openai.OpenAI(base_url=batch_gw.v1, api_key="x", max_retries=0) as client:
        batch = _openai_batch(
            client,
            _lines(100, "gpt-4o-mini"),
            "/v1/chat/completions",
            metadata={"feature": feature},
            extra_headers={"x-spendgate-team": "data"},
        )
        assert batch.status == "completed" and batch.request_counts.completed == 100
        output = client.files.content(batch.output_file_id).text.splitlines()
    assert len(output) == 100
    rows = batch_gw.events(feature=feature)
    assert len(rows) == 100
    assert len({r.request_id for r in rows}) == 100
    for row in rows:
        _half_price(row)
        assert (row.endpoint, row.api, row.team) == ("chat", "openai", "data")
        assert row.extra and row.extra["batch"]["id"] == batch.id
    assert {r.extra["batch"]["custom_id"] for r in rows if r.extra} == {
        f"req-{i}" for i in range(100)
    }
    # Recording the batch again (a replica that crashed mid-way) adds nothing.
    state = batch_gw.gateway.state
    assert state.advance(KIND_BATCH, batch.id, ["recorded"], "pending")
    with openai.OpenAI(base_url=batch_gw.v1, api_key="x", max_retries=0) as client:
        client.batches.retrieve(batch.id)
    assert len(batch_gw.events(feature=feature)) == 100


def test_responses_lines_in_a_batch(batch_gw: Harness) -> None:
    feature = unique("batch-responses")
    with openai.OpenAI(base_url=batch_gw.v1, api_key="x", max_retries=0) as client:
        batch = _openai_batch(
            client, _lines(5, "gpt-4o-mini", "/v1/responses"), "/v1/responses",
            metadata={"feature": feature},
        )  # fmt: skip
    assert batch.status == "completed"
    rows = batch_gw.events(feature=feature)
    assert len(rows) == 5
    for row in rows:
        _half_price(row)
        assert row.endpoint == "responses"


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        (_lines(2, "no-such-model"), "not served"),
        (_lines(2, "claude-sonnet-4"), "OpenAI's Batch API"),
        (b'{"custom_id": "a", "method": "POST", "url": "/v1/moderations", "body": {}}\n', "url"),
        (b"not json\n", "not JSON"),
    ],
)
def test_bad_batch_files_are_400_with_a_row(batch_gw: Harness, data: bytes, needle: str) -> None:
    with (
        openai.OpenAI(base_url=batch_gw.v1, api_key="x", max_retries=0) as client,
        pytest.raises(openai.BadRequestError) as refused,
    ):
        client.files.create(file=("bad.jsonl", data), purpose="batch")
    assert needle in refused.value.message
    request_id = refused.value.response.headers["x-spendgate-request-id"]
    row = batch_gw.one(request_id)
    assert (row.endpoint, row.status, row.cost_nanos) == ("files", 400, 0)


def test_batches_belong_to_their_tenant(make_gateway: Any) -> None:
    h = make_gateway(server={"auth": "required"}, **FAST)
    key_a, _ = h.gateway.keys.create(name="a", tenant="tenant-a")
    key_b, _ = h.gateway.keys.create(name="b", tenant="tenant-b")
    with (
        openai.OpenAI(base_url=h.v1, api_key=key_a, max_retries=0) as a,
        openai.OpenAI(base_url=h.v1, api_key=key_b, max_retries=0) as b,
    ):
        batch = _openai_batch(a, _lines(3, "gpt-4o-mini"), "/v1/chat/completions")
        with pytest.raises(openai.NotFoundError):
            b.batches.retrieve(batch.id)
        with pytest.raises(openai.NotFoundError):
            b.files.content(batch.output_file_id)
        assert [x.id for x in b.batches.list().data] == []
        assert [x.id for x in a.batches.list().data] == [batch.id]
    rows = [r for r in h.events() if r.status == 200]
    assert len(rows) == 3 and {r.tenant for r in rows} == {"tenant-a"}


# ------------------------------------------------------------------ Anthropic


def test_anthropic_batch_of_100_is_100_events_at_half_price(batch_gw: Harness) -> None:
    feature = unique("batch-anthropic")
    requests = [
        {
            "custom_id": f"m-{i}",
            "params": {
                "model": "claude-sonnet-4",
                "max_tokens": 60,
                "messages": [{"role": "user", "content": f"Tell me fact {i}."}],
            },
        }
        for i in range(100)
    ]
    with anthropic.Anthropic(base_url=batch_gw.url, api_key="x", max_retries=0) as client:
        batch = client.messages.batches.create(
            requests=requests,  # type: ignore[arg-type]
            extra_headers={"x-spendgate-feature": feature},
        )
        for _ in range(200):
            batch = client.messages.batches.retrieve(batch.id)
            if batch.processing_status == "ended":
                break
        assert batch.processing_status == "ended"
        assert batch.results_url and batch.results_url.startswith(batch_gw.url)
        results = list(client.messages.batches.results(batch.id))
    assert len(results) == 100 and all(r.result.type == "succeeded" for r in results)
    rows = batch_gw.events(feature=feature)
    assert len(rows) == 100
    for row in rows:
        _half_price(row)
        assert (row.endpoint, row.api, row.served_model) == (
            "messages", "anthropic", "claude-sonnet-4-20250514",
        )  # fmt: skip


# ------------------------------------------------------------------ the deferral lane


def _deferred(h: Harness, http: httpx2.Client, r: httpx2.Response) -> httpx2.Response:
    assert r.status_code == 202, r.text
    assert r.headers["x-spendgate-cost-usd"] == "pending"
    location = r.headers["location"]
    assert location == r.json()["result_url"]
    done = http.get(h.url + location, params={"wait": 30})
    assert done.status_code == 200, done.text
    return done


def test_deferred_chat_call_is_answered_later_at_half_price(
    batch_gw: Harness, http: httpx2.Client
) -> None:
    feature = unique("defer-chat")
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Summarise logs."}]}
    r = http.post(batch_gw.v1 + "/chat/completions", json=body,
                  headers={"x-spendgate-defer": "24h", "x-spendgate-feature": feature})  # fmt: skip
    done = _deferred(batch_gw, http, r)
    assert_valid("CreateChatCompletionResponse", done.json())
    request_id = r.headers["x-spendgate-request-id"]
    assert done.headers["x-spendgate-request-id"] == request_id
    row = batch_gw.one(request_id)
    _half_price(row)
    assert row.feature == feature
    assert (row.extra or {})["decisions"]["defer"]["reason"] == "header"
    assert row.savings == {"batch": row.cost_nanos}  # half price: the saving equals the cost
    assert row.baseline_nanos == expected_cost_nanos(row)
    cost = Decimal(done.headers["x-spendgate-cost-usd"])
    assert int(cost * 1_000_000_000) == row.cost_nanos


@pytest.mark.parametrize("model", ["gpt-4o-mini", "claude-sonnet-4"])
def test_deferred_responses_call(batch_gw: Harness, http: httpx2.Client, model: str) -> None:
    feature = unique("defer-resp")
    r = http.post(batch_gw.v1 + "/responses", json={"model": model, "input": "Later, please."},
                  headers={"x-spendgate-defer": "48h", "x-spendgate-feature": feature})  # fmt: skip
    done = _deferred(batch_gw, http, r)
    body = done.json()
    assert_valid("Response", body)
    assert body["id"] == "resp_" + r.headers["x-spendgate-request-id"].removeprefix("sg-")
    with openai.OpenAI(base_url=batch_gw.v1, api_key="x", max_retries=0) as client:
        assert (
            client.responses.retrieve(body["id"]).output_text
            == body["output"][0]["content"][0]["text"]
        )
    _half_price(batch_gw.one_for(feature))


def test_deferred_anthropic_client_call(batch_gw: Harness, http: httpx2.Client) -> None:
    feature = unique("defer-msg")
    body = {"model": "claude-sonnet-4", "max_tokens": 50,
            "messages": [{"role": "user", "content": "Later."}]}  # fmt: skip
    r = http.post(batch_gw.url + "/v1/messages", json=body,
                  headers={"x-spendgate-defer": "24h", "x-spendgate-feature": feature})  # fmt: skip
    done = _deferred(batch_gw, http, r)
    assert done.json()["type"] == "message"
    _half_price(batch_gw.one_for(feature))


def test_a_batchable_feature_is_deferred_unless_it_streams(make_gateway: Any) -> None:
    feature = unique("nightly")
    h = make_gateway(features={feature: {"batchable": True}}, **FAST)
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Digest."}]}
    headers = {"x-spendgate-feature": feature}
    with httpx2.Client(timeout=30) as http:
        deferred = http.post(h.v1 + "/chat/completions", json=body, headers=headers)
        _deferred(h, http, deferred)
        live = http.post(h.v1 + "/chat/completions", json={**body, "stream": True},
                         headers=headers)  # fmt: skip
        assert live.status_code == 200 and "data: [DONE]" in live.text
    rows = {r.request_id: r for r in h.events(feature=feature)}
    assert len(rows) == 2
    assert (rows[deferred.headers["x-spendgate-request-id"]].extra or {})["service_tier"] == (
        "batch"
    )
    assert rows[live.headers["x-spendgate-request-id"]].stream


@pytest.mark.parametrize(("header", "extra"), [("1h", {}), ("soon", {}), ("24h", {"stream": True})])
def test_bad_defer_requests_are_400(
    batch_gw: Harness, http: httpx2.Client, header: str, extra: dict[str, Any]
) -> None:
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}], **extra}
    r = http.post(batch_gw.v1 + "/chat/completions", json=body,
                  headers={"x-spendgate-defer": header})  # fmt: skip
    assert r.status_code == 400 and r.json()["error"]["param"] == "x-spendgate-defer"
    assert batch_gw.one(r.headers["x-spendgate-request-id"]).status == 400


def test_another_owner_cannot_fetch_a_deferred_call(make_gateway: Any) -> None:
    h = make_gateway(server={"auth": "required"}, **FAST)
    key_a, _ = h.gateway.keys.create(name="a", tenant="tenant-a")
    key_b, _ = h.gateway.keys.create(name="b", tenant="tenant-b")
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "mine"}]}
    with httpx2.Client(timeout=30) as http:
        r = http.post(
            h.v1 + "/chat/completions",
            json=body,
            headers={"authorization": f"Bearer {key_a}", "x-spendgate-defer": "24h"},
        )
        url = h.url + r.json()["result_url"]
        other = http.get(url, headers={"authorization": f"Bearer {key_b}"})
        mine = http.get(url, params={"wait": 30}, headers={"authorization": f"Bearer {key_a}"})
    assert other.status_code == 404
    assert mine.status_code == 200


def test_a_queued_call_survives_a_restart(make_gateway: Any, tmp_path: Any) -> None:
    """The replica that accepted a call is gone before its batch went out: another one
    adopts it, sends it, and records it from the stored call (one row, half price)."""
    storage = {
        "ledger": f"sqlite:///{tmp_path / 'ledger.db'}",
        "state": f"sqlite:///{tmp_path / 'state.db'}",
        "keys": f"sqlite:///{tmp_path / 'keys.db'}",
    }
    feature = unique("defer-restart")
    first = make_gateway(storage=storage, batches={"defer": {"flush_interval_s": 3600}})
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Survive."}]}
    with httpx2.Client(timeout=30) as http:
        r = http.post(
            first.v1 + "/chat/completions",
            json=body,
            headers={"x-spendgate-defer": "24h", "x-spendgate-feature": feature},
        )
        assert r.status_code == 202
        first.close()
        second = make_gateway(
            storage=storage,
            batches={"poll_interval_s": 0.05,
                     "defer": {"flush_interval_s": 0, "adopt_after_s": 0.01}},
        )  # fmt: skip
        done = http.get(second.url + r.json()["result_url"], params={"wait": 30})
    assert done.status_code == 200, done.text
    assert json.loads(done.text)["object"] == "chat.completion"
    row = second.one(r.headers["x-spendgate-request-id"])
    _half_price(row)
    assert row.savings == {"batch": row.cost_nanos}
