"""Exact response cache, end to end through a real gateway and the simulated upstream.

Costs are checked against the list prices in conftest (never against figures the gateway
computed): a hit costs 0 and credits `savings["cache"]` with what the original answer's
usage costs at list price.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import httpx2
import pytest

from conftest import Harness, expected_cost_nanos, openai_chunks, sse_events, unique
from spendgate.cache.backends import MemoryLRU, SQLiteBackend
from spendgate.cache.stage import CacheStage

CACHE_ON = {"cache": {"enabled": True}}


def stage_of(h: Harness) -> CacheStage:
    stage = h.gateway.pipeline.find(CacheStage)
    assert stage is not None
    return stage


def chat(
    h: Harness,
    content: str,
    *,
    tenant: str = "acme",
    feature: str | None = None,
    headers: dict[str, str] | None = None,
    model: str = "gpt-4o-mini",
    **body: Any,
) -> httpx2.Response:
    hdrs = {"x-spendgate-tenant": tenant, **(headers or {})}
    if feature:
        hdrs["x-spendgate-feature"] = feature
    payload = {"model": model, "messages": [{"role": "user", "content": content}], **body}
    return httpx2.post(h.v1 + "/chat/completions", json=payload, headers=hdrs, timeout=30)


def rid(r: httpx2.Response) -> str:
    return r.headers["x-spendgate-request-id"]


def test_exact_hit_costs_nothing_and_credits_savings(make_gateway: Any) -> None:
    h = make_gateway(**CACHE_ON)
    q = f"What is the capital of France? {uuid.uuid4().hex}"
    first = chat(h, q)
    assert first.status_code == 200, first.text
    assert first.headers["x-spendgate-cache"] == "miss"
    second = chat(h, q)
    assert second.status_code == 200
    assert second.headers["x-spendgate-cache"] == "hit"
    assert second.headers["x-spendgate-cost-usd"] == "0"
    a, b = first.json(), second.json()
    assert b["choices"][0]["message"]["content"] == a["choices"][0]["message"]["content"]
    assert b["usage"]["total_tokens"] == 0

    e1, e2 = h.one(rid(first)), h.one(rid(second))
    assert e1.cache == "miss" and e2.cache == "hit"
    assert e1.cost_nanos == expected_cost_nanos(e1) > 0
    assert e2.cost_nanos == 0
    assert e2.input_tokens == e2.output_tokens == 0
    # The hit saved exactly what the original call cost (same model, same usage).
    assert e2.savings == {"cache": expected_cost_nanos(e1)}
    assert e2.baseline_nanos == expected_cost_nanos(e1)


def test_stream_replay_in_both_formats(make_gateway: Any) -> None:
    h = make_gateway(**CACHE_ON)
    q = f"Tell me about caching {uuid.uuid4().hex}"
    plain = chat(h, q)
    assert plain.headers["x-spendgate-cache"] == "miss"
    with httpx2.stream(
        "POST",
        h.v1 + "/chat/completions",
        json={"model": "gpt-4o-mini", "stream": True, "stream_options": {"include_usage": True},
              "messages": [{"role": "user", "content": q}]},
        headers={"x-spendgate-tenant": "acme"},
        timeout=30,
    ) as r:  # fmt: skip
        assert r.headers["x-spendgate-cache"] == "hit"
        chunks, done = openai_chunks(list(r.iter_lines()))
    assert done
    text = "".join((c["choices"][0]["delta"].get("content") or "") for c in chunks if c["choices"])
    assert text == plain.json()["choices"][0]["message"]["content"]
    assert chunks[-1]["usage"]["total_tokens"] == 0

    # Anthropic client: a streamed answer is stored, then replayed plain and streamed.
    body = {"model": "claude-sonnet-4", "max_tokens": 200, "stream": True,
            "messages": [{"role": "user", "content": q}]}  # fmt: skip
    hdrs = {"x-spendgate-tenant": "acme", "anthropic-version": "2023-06-01"}
    with httpx2.stream("POST", h.v1 + "/messages", json=body, headers=hdrs, timeout=30) as r:
        assert r.headers["x-spendgate-cache"] == "miss"
        first_events = sse_events(list(r.iter_lines()))
    streamed = "".join(
        json.loads(d)["delta"].get("text", "")
        for e, d in first_events
        if e == "content_block_delta"
    )
    replay = httpx2.post(h.v1 + "/messages", json={**body, "stream": False}, headers=hdrs)
    assert replay.headers["x-spendgate-cache"] == "hit", replay.text
    assert replay.json()["content"][0]["text"] == streamed
    assert replay.json()["stop_reason"] == "end_turn"
    with httpx2.stream("POST", h.v1 + "/messages", json=body, headers=hdrs, timeout=30) as r:
        assert r.headers["x-spendgate-cache"] == "hit"
        events = sse_events(list(r.iter_lines()))
    names = [e for e, _ in events]
    assert names[0] == "message_start" and names[-1] == "message_stop"
    replayed = "".join(
        json.loads(d)["delta"].get("text", "") for e, d in events if e == "content_block_delta"
    )
    assert replayed == streamed


def test_tenants_never_share_entries(make_gateway: Any) -> None:
    h = make_gateway(**CACHE_ON)
    q = f"Summarise our Q3 numbers {uuid.uuid4().hex}"
    assert chat(h, q, tenant="alpha").headers["x-spendgate-cache"] == "miss"
    assert chat(h, q, tenant="alpha").headers["x-spendgate-cache"] == "hit"
    assert chat(h, q, tenant="beta").headers["x-spendgate-cache"] == "miss"
    # No tenant at all is its own scope too.
    r = httpx2.post(h.v1 + "/chat/completions", json={"model": "gpt-4o-mini",
                    "messages": [{"role": "user", "content": q}]})  # fmt: skip
    assert r.headers["x-spendgate-cache"] == "miss"


def test_answer_changing_params_and_models_are_separate(make_gateway: Any) -> None:
    h = make_gateway(**CACHE_ON)
    q = f"List three colours {uuid.uuid4().hex}"
    assert chat(h, q).headers["x-spendgate-cache"] == "miss"
    assert chat(h, q, model="gpt-4o").headers["x-spendgate-cache"] == "miss"
    assert chat(h, q, seed=3).headers["x-spendgate-cache"] == "miss"
    fmt = {"type": "json_object"}
    assert chat(h, q, response_format=fmt).headers["x-spendgate-cache"] == "miss"
    # user / metadata / stream do not change the answer.
    assert chat(h, q, user="u-1").headers["x-spendgate-cache"] == "hit"


def test_headers_bypass_refresh_and_bad_value(make_gateway: Any) -> None:
    h = make_gateway(**CACHE_ON)
    q = f"Define latency {uuid.uuid4().hex}"
    assert chat(h, q).headers["x-spendgate-cache"] == "miss"
    r = chat(h, q, headers={"x-spendgate-cache": "bypass"})
    assert r.headers["x-spendgate-cache"] == "bypass"
    assert h.one(rid(r)).cost_nanos > 0
    r = chat(h, q, headers={"x-spendgate-cache": "refresh"})
    assert r.headers["x-spendgate-cache"] == "refresh"
    assert chat(h, q).headers["x-spendgate-cache"] == "hit"
    bad = chat(h, q, headers={"x-spendgate-cache": "please"})
    assert bad.status_code == 400
    assert bad.json()["error"]["param"] == "x-spendgate-cache"


def test_sampled_and_tool_answers_not_cached_unless_enabled(make_gateway: Any) -> None:
    h = make_gateway(**CACHE_ON)
    q = f"Write a haiku {uuid.uuid4().hex}"
    assert "x-spendgate-cache" not in chat(h, q, temperature=0.7).headers
    assert "x-spendgate-cache" not in chat(h, q, temperature=0.7).headers
    assert chat(h, q, temperature=0).headers["x-spendgate-cache"] == "miss"
    assert chat(h, q, temperature=0).headers["x-spendgate-cache"] == "hit"

    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}}}}]  # fmt: skip
    tq = f"What is the weather in Paris? {uuid.uuid4().hex}"
    first = chat(h, tq, tools=tools, tool_choice="required")
    assert first.json()["choices"][0]["finish_reason"] == "tool_calls"
    assert chat(h, tq, tools=tools, tool_choice="required").headers["x-spendgate-cache"] == "miss"

    h2 = make_gateway(cache={"enabled": True, "cache_tool_calls": True, "cache_sampled": True})
    assert chat(h2, tq, tools=tools, tool_choice="required").headers["x-spendgate-cache"] == "miss"
    again = chat(h2, tq, tools=tools, tool_choice="required")
    assert again.headers["x-spendgate-cache"] == "hit"
    assert again.json()["choices"][0]["message"]["tool_calls"]
    assert chat(h2, q, temperature=0.7).headers["x-spendgate-cache"] == "miss"
    assert chat(h2, q, temperature=0.7).headers["x-spendgate-cache"] == "hit"


def test_poisoned_answers_are_never_stored(make_gateway: Any, faults: Any) -> None:
    h = make_gateway(**CACHE_ON)
    q = f"Explain TCP {uuid.uuid4().hex}"
    faults({"kind": "status", "status": 500, "model": "gpt-4o-mini"})
    assert chat(h, q).status_code == 502
    ok = chat(h, q)
    assert ok.status_code == 200 and ok.headers["x-spendgate-cache"] == "miss"
    # Truncated (finish_reason=length) is never stored.
    tq = f"Explain UDP at length {uuid.uuid4().hex}"
    cut = chat(h, tq, max_tokens=2)
    assert cut.json()["choices"][0]["finish_reason"] == "length"
    assert chat(h, tq, max_tokens=2).headers["x-spendgate-cache"] == "miss"
    # A stream cut short is never stored.
    sq = f"Explain QUIC {uuid.uuid4().hex}"
    faults({"kind": "cut", "after_chunks": 2, "model": "gpt-4o-mini"})
    body = {"model": "gpt-4o-mini", "stream": True, "messages": [{"role": "user", "content": sq}]}
    with httpx2.stream("POST", h.v1 + "/chat/completions", json=body,
                       headers={"x-spendgate-tenant": "acme"}) as r:  # fmt: skip
        list(r.iter_lines())
    assert chat(h, sq).headers["x-spendgate-cache"] == "miss"


def test_ttl_expiry_and_per_feature_settings(make_gateway: Any) -> None:
    h = make_gateway(
        cache={
            "enabled": True,
            "ttl_s": 60,
            "scope": "tenant+feature",
            "features": {"faq": {"ttl_s": 3600}, "chat": {"enabled": False}},
        }
    )
    stage = stage_of(h)
    lru = stage.backend
    assert isinstance(lru, MemoryLRU)
    q = f"Opening hours? {uuid.uuid4().hex}"
    chat(h, q, feature="faq")
    chat(h, q, feature="other")
    assert chat(h, q, feature="faq").headers["x-spendgate-cache"] == "hit"
    now = time.time()
    lru.clock = lambda: now + 120  # past the default TTL, within faq's
    assert chat(h, q, feature="other").headers["x-spendgate-cache"] == "miss"
    assert chat(h, q, feature="faq").headers["x-spendgate-cache"] == "hit"
    lru.clock = lambda: now + 7200
    assert chat(h, q, feature="faq").headers["x-spendgate-cache"] == "miss"
    assert "x-spendgate-cache" not in chat(h, q, feature="chat").headers


def test_sqlite_backend_survives_restart(make_gateway: Any, tmp_path: Any) -> None:
    url = f"sqlite:///{tmp_path / 'cache.db'}"
    q = f"Persist me {uuid.uuid4().hex}"
    h = make_gateway(cache={"enabled": True, "backend": url})
    assert chat(h, q).headers["x-spendgate-cache"] == "miss"
    stage_of(h).drain_threadsafe()
    h.close()
    h2 = make_gateway(cache={"enabled": True, "backend": url})
    assert isinstance(stage_of(h2).backend, SQLiteBackend)
    assert chat(h2, q).headers["x-spendgate-cache"] == "hit"


def test_lru_is_bounded_in_bytes() -> None:
    lru = MemoryLRU(max_bytes=1000)
    for i in range(50):
        lru.set_now(f"k{i}", b"x" * 100, time.time() + 60)
    assert lru.size_bytes <= 1000
    assert lru.get_now("k0") is None and lru.get_now("k49") is not None
    assert lru.evictions > 0
    lru.set_now("huge", b"x" * 5000, time.time() + 60)
    assert lru.get_now("huge") is None


@pytest.fixture
def redis_prefix() -> Any:
    redis = pytest.importorskip("redis")
    client = redis.Redis.from_url("redis://127.0.0.1:6379/0")
    try:
        client.ping()
    except redis.exceptions.ConnectionError:
        pytest.skip("Redis is not running on 127.0.0.1:6379")
    prefix = f"sgtest:{uuid.uuid4().hex[:8]}:"
    yield prefix
    keys = list(client.scan_iter(prefix + "*"))
    if keys:
        client.delete(*keys)
    client.close()


def test_redis_shared_by_two_replicas(make_gateway: Any, redis_prefix: str) -> None:
    cfg = {"cache": {"enabled": True, "backend": "redis://127.0.0.1:6379/0",
                     "key_prefix": redis_prefix}}  # fmt: skip
    a, b = make_gateway(**cfg), make_gateway(**cfg)
    q = f"Shared answer {uuid.uuid4().hex}"
    feature = unique("redis")
    first = chat(a, q, feature=feature)
    assert first.headers["x-spendgate-cache"] == "miss"
    stage_of(a).drain_threadsafe()
    hit = chat(b, q, feature=feature)
    assert hit.headers["x-spendgate-cache"] == "hit"
    assert (
        hit.json()["choices"][0]["message"]["content"]
        == (first.json()["choices"][0]["message"]["content"])
    )
    assert b.one(rid(hit)).savings == {"cache": expected_cost_nanos(a.one(rid(first)))}
    # Another tenant on the other replica: still a miss.
    assert chat(b, q, tenant="other-co").headers["x-spendgate-cache"] == "miss"


def test_shadow_mode_records_but_never_answers(make_gateway: Any) -> None:
    h = make_gateway(cache={"enabled": True, "shadow": True})
    q = f"Shadow question {uuid.uuid4().hex}"
    first = chat(h, q)
    second = chat(h, q)
    assert second.headers["x-spendgate-cache"] == "miss"
    e1, e2 = h.one(rid(first)), h.one(rid(second))
    assert e2.cost_nanos == expected_cost_nanos(e2) > 0
    assert e2.savings == {}
    decision = (e2.extra or {})["decisions"]["cache"]
    assert decision["outcome"] == "shadow-hit"
    # What a hit would have saved: the first answer's usage at list price.
    assert decision["would_save_usd"] is not None
    assert round(float(decision["would_save_usd"]) * 1e9) == expected_cost_nanos(e1)


def test_bad_cache_config_names_the_key() -> None:
    from spendgate.config import ConfigError, parse_settings

    with pytest.raises(ConfigError, match=r"cache\.backend"):
        parse_settings({"cache": {"enabled": True, "backend": "mongodb://x"}})
    with pytest.raises(ConfigError, match=r"cache\.ttl_sec"):
        parse_settings({"cache": {"ttl_sec": 5}})
    with pytest.raises(ConfigError, match=r"cache\.semantic\.store"):
        parse_settings({"cache": {"semantic": {"store": "ftp://x"}}})


def test_real_sdks_get_cached_answers(make_gateway: Any) -> None:
    openai = pytest.importorskip("openai")
    anthropic = pytest.importorskip("anthropic")
    h = make_gateway(**CACHE_ON)
    q = f"Name a prime number {uuid.uuid4().hex}"
    headers = {"x-spendgate-tenant": "sdk-co"}
    with openai.OpenAI(base_url=h.v1, api_key="x", max_retries=0, default_headers=headers) as c:
        first = c.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": q}]
        )
        raw = c.chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": q}]
        )
        assert raw.headers["x-spendgate-cache"] == "hit"
        assert raw.parse().choices[0].message.content == first.choices[0].message.content
        stream = c.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": q}], stream=True
        )
        text = "".join(ch.choices[0].delta.content or "" for ch in stream if ch.choices)
        assert text == first.choices[0].message.content
    with anthropic.Anthropic(base_url=h.url, api_key="x", max_retries=0,
                             default_headers=headers) as a:  # fmt: skip
        msg = {"role": "user", "content": q}
        one = a.messages.create(model="claude-sonnet-4", max_tokens=100, messages=[msg])
        with a.messages.stream(model="claude-sonnet-4", max_tokens=100, messages=[msg]) as s:
            streamed = s.get_final_text()
        assert streamed == one.content[0].text
