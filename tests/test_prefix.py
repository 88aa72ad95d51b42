"""Provider prompt caching through a real gateway and the simulated upstream.

The simulated upstream caches Anthropic prefixes at `cache_control` breakpoints (≥ 1,024
tokens) and OpenAI prefixes automatically; the savings the gateway credits are checked
against the published per-MTok prices in conftest, applied to the token counts the ledger
recorded — never against a figure the gateway computed.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import anthropic
import httpx2
import openai
import pytest

from conftest import PRICES_PER_MTOK, Harness, expected_cost_nanos, nanos_per_token, unique
from spendgate.cache.config import PrefixConfig
from spendgate.cache.prefix import plan_breakpoints
from spendgate.ledger import UsageEvent

SONNET = PRICES_PER_MTOK["claude-sonnet-4"]
GPT4O = PRICES_PER_MTOK["gpt-4o"]
SONNET_WRITE_1H = 6.00  # Anthropic: 1-hour cache writes cost 2x base input ($3/MTok)

_WORDS = [
    "ledger", "invoice", "tenant", "budget", "routing", "latency", "provider", "refund",
    "policy", "escalation", "contract", "renewal", "quota", "region", "archive", "schema",
    "migration", "replica", "failover", "audit",
]  # fmt: skip


def long_text(seed: str, words: int = 1800) -> str:
    """A deterministic, unique, cache-worthy document (~1.2 tokens a word)."""
    out = [f"Reference {seed}."]
    for i in range(words):
        out.append(_WORDS[(i * 7 + len(seed)) % len(_WORDS)] + ("." if i % 13 == 12 else ""))
    return " ".join(out)


def _settings(**prefix: Any) -> dict[str, Any]:
    return {"prefix": {"enabled": True, **prefix}}


@pytest.fixture
def pgw(make_gateway: Callable[..., Harness]) -> Harness:
    return make_gateway(**_settings(features={"hourly": {"ttl": "1h"}}))


def _prompt_cache_nanos(event: UsageEvent, prices: dict[str, float], write_1h: float = 0) -> int:
    """Reads × (input − read) − writes × (write − input), from the published prices."""
    inp = nanos_per_token(prices["input"])
    saved = event.cache_read_tokens * (inp - nanos_per_token(prices["cache_read"]))
    saved -= event.cache_write_tokens * (nanos_per_token(prices["cache_write"]) - inp)
    if event.cache_write_1h_tokens:
        saved -= event.cache_write_1h_tokens * (nanos_per_token(write_1h) - inp)
    return saved


def _decision(event: UsageEvent) -> dict[str, Any]:
    assert event.extra is not None
    return event.extra["decisions"]["prefix"]


def test_anthropic_client_second_call_reads_the_system_prompt(pgw: Harness) -> None:
    system = long_text(uuid.uuid4().hex)
    feature = unique("pc-anth")
    client = anthropic.Anthropic(base_url=pgw.url, api_key="unused", max_retries=0)
    usages = []
    for question in ("What is the refund policy?", "Which region holds the archive?"):
        msg = client.messages.create(
            model="claude-sonnet-4",
            max_tokens=64,
            system=system,
            messages=[{"role": "user", "content": question}],
            extra_headers={"x-spendgate-feature": feature},
        )
        usages.append(msg.usage)
    assert usages[0].cache_creation_input_tokens > 0 and not usages[0].cache_read_input_tokens
    assert usages[1].cache_read_input_tokens == usages[0].cache_creation_input_tokens
    first, second = sorted(pgw.events(feature=feature), key=lambda e: e.ts)
    for event in (first, second):
        assert event.cost_nanos == expected_cost_nanos(event)
        assert event.savings["prompt_cache"] == _prompt_cache_nanos(event, SONNET)
        assert event.baseline_nanos == event.cost_nanos + event.savings["prompt_cache"]
        assert _decision(event)["source"] == "injected"
        assert [p["at"] for p in _decision(event)["breakpoints"]] == ["system"]
    assert first.cache_write_tokens > 0 and first.savings["prompt_cache"] < 0  # the write premium
    assert second.cache_read_tokens == first.cache_write_tokens
    assert second.cache_write_tokens == 0
    assert second.savings["prompt_cache"] > 0
    # The read saved 90% of the cached input's price.
    assert second.savings["prompt_cache"] == second.cache_read_tokens * 2700


def test_openai_client_to_claude_gets_breakpoints_through_translation(pgw: Harness) -> None:
    system = long_text(uuid.uuid4().hex)
    feature = unique("pc-oa")
    client = openai.OpenAI(base_url=pgw.v1, api_key="unused", max_retries=0)
    cached = []
    for question in ("Summarise the escalation rules.", "List the quota limits."):
        resp = client.chat.completions.create(
            model="claude-sonnet-4",
            max_tokens=64,
            messages=[{"role": "system", "content": system}, {"role": "user", "content": question}],
            extra_headers={"x-spendgate-feature": feature},
        )
        assert resp.usage is not None and resp.usage.prompt_tokens_details is not None
        cached.append(resp.usage.prompt_tokens_details.cached_tokens)
    assert cached[0] == 0 and cached[1] > 1000
    first, second = sorted(pgw.events(feature=feature), key=lambda e: e.ts)
    assert second.cache_read_tokens == cached[1] == first.cache_write_tokens
    for event in (first, second):
        assert event.cost_nanos == expected_cost_nanos(event)
        assert event.savings["prompt_cache"] == _prompt_cache_nanos(event, SONNET)
    assert second.savings["prompt_cache"] > 0


def test_conversation_turns_read_the_history_the_previous_turn_wrote(pgw: Harness) -> None:
    system = long_text(uuid.uuid4().hex, words=1000)
    feature = unique("pc-conv")
    messages: list[dict[str, Any]] = []
    reads, writes = [], []
    for turn in range(3):
        question = f"Question {turn}: " + long_text(str(turn), 300)
        messages.append({"role": "user", "content": question})
        r = httpx2.post(
            pgw.url + "/v1/messages",
            json={"model": "claude-sonnet-4", "max_tokens": 32, "system": system,
                  "messages": messages},
            headers={"x-spendgate-feature": feature}, timeout=30,
        )  # fmt: skip
        assert r.status_code == 200, r.text
        usage = r.json()["usage"]
        reads.append(usage["cache_read_input_tokens"])
        writes.append(usage["cache_creation_input_tokens"])
        messages.append({"role": "assistant", "content": r.json()["content"][0]["text"]})
    assert reads[0] == 0
    # Turn 2 reads the system prompt turn 1 wrote; turn 3 reads everything through the
    # user turn that turn 2 wrote.
    assert reads[1] == writes[0] > 0
    assert reads[2] == reads[1] + writes[1] > reads[1]
    events = sorted(pgw.events(feature=feature), key=lambda e: e.ts)
    labels = [[p["at"] for p in _decision(e)["breakpoints"]] for e in events]
    both = ["system", "previous_turn", "last_turn"]
    assert labels == [["system"], both, both]
    for event in events:
        assert event.savings["prompt_cache"] == _prompt_cache_nanos(event, SONNET)


def test_one_hour_ttl_per_feature(pgw: Harness) -> None:
    system = long_text(uuid.uuid4().hex)
    r = httpx2.post(
        pgw.url + "/v1/messages",
        json={"model": "claude-sonnet-4", "max_tokens": 16, "system": system,
              "messages": [{"role": "user", "content": "hi"}]},
        headers={"x-spendgate-feature": "hourly"}, timeout=30,
    )  # fmt: skip
    assert r.status_code == 200
    event = pgw.one(r.headers["x-spendgate-request-id"])
    assert event.cache_write_1h_tokens > 0 and event.cache_write_tokens == 0
    assert _decision(event)["breakpoints"][0]["ttl"] == "1h"
    assert event.savings["prompt_cache"] == _prompt_cache_nanos(event, SONNET, SONNET_WRITE_1H)


def test_client_breakpoints_are_left_alone(pgw: Harness) -> None:
    system = long_text(uuid.uuid4().hex)
    body = {
        "model": "claude-sonnet-4", "max_tokens": 16,
        "system": [{"type": "text", "text": system, "cache_control": {"type": "ephemeral"}}],
        "messages": [{"role": "user", "content": long_text("q", 1200)}],
    }  # fmt: skip
    r = httpx2.post(pgw.url + "/v1/messages", json=body, timeout=30)
    assert r.status_code == 200
    event = pgw.one(r.headers["x-spendgate-request-id"])
    assert _decision(event)["source"] == "client"
    assert _decision(event)["breakpoints"] == []
    # Only the client's breakpoint was written: the system prompt, not the long question.
    assert 0 < event.cache_write_tokens < event.input_tokens - 1000


def test_short_prompts_get_no_breakpoint(pgw: Harness) -> None:
    r = httpx2.post(
        pgw.url + "/v1/messages",
        json={"model": "claude-sonnet-4", "max_tokens": 16, "system": "Be brief.",
              "messages": [{"role": "user", "content": "hi"}]}, timeout=30,
    )  # fmt: skip
    event = pgw.one(r.headers["x-spendgate-request-id"])
    assert _decision(event)["reason"] == "below_min_tokens"
    assert event.cache_write_tokens == 0 and event.savings == {}


def test_shadow_mode_changes_nothing_and_predicts_the_saving(
    make_gateway: Callable[..., Harness],
) -> None:
    h = make_gateway(**_settings(shadow=True))
    system = long_text(uuid.uuid4().hex)
    feature = unique("pc-shadow")
    for q in ("one?", "two?"):
        r = httpx2.post(
            h.url + "/v1/messages",
            json={"model": "claude-sonnet-4", "max_tokens": 16, "system": system,
                  "messages": [{"role": "user", "content": q}]},
            headers={"x-spendgate-feature": feature}, timeout=30,
        )  # fmt: skip
        assert r.status_code == 200
    first, second = sorted(h.events(feature=feature), key=lambda e: e.ts)
    for event in (first, second):
        assert event.cache_read_tokens == event.cache_write_tokens == 0  # body untouched
        assert event.savings == {} and event.baseline_nanos == event.cost_nanos
        assert _decision(event)["shadow"] is True
    assert float(_decision(first)["would_save_usd"]) < 0  # a write, never read yet
    assert float(_decision(second)["would_save_usd"]) > 0


def test_openai_automatic_caching_is_recorded_not_credited_and_prefix_changes_flagged(
    pgw: Harness,
) -> None:
    system = long_text(uuid.uuid4().hex)
    feature = unique("pc-auto")
    ids = []
    for content in (system, system, system + " Today is Tuesday."):
        r = httpx2.post(
            pgw.v1 + "/chat/completions",
            json={"model": "gpt-4o", "max_tokens": 16,
                  "messages": [{"role": "system", "content": content},
                               {"role": "user", "content": "Hello"}]},
            headers={"x-spendgate-feature": feature}, timeout=30,
        )  # fmt: skip
        assert r.status_code == 200
        ids.append(r.headers["x-spendgate-request-id"])
    first, second, third = (pgw.one(i) for i in ids)
    assert first.cache_read_tokens == 0 and "prompt_cache" not in first.savings
    assert second.cache_read_tokens > 1000
    # OpenAI caches on its own: the saving is the provider's, not spendgate's, so it is
    # recorded on the decision and left out of the savings (the baseline is the call as it
    # would have been billed without spendgate, cached reads included).
    assert "prompt_cache" not in second.savings
    provider_saved = Decimal(_decision(second)["provider_saved_usd"]) * 10**9
    assert provider_saved == _prompt_cache_nanos(second, GPT4O)
    assert second.cost_nanos == expected_cost_nanos(second)
    assert _decision(second)["source"] == "automatic"
    assert "prefix_changed" not in _decision(second)
    assert _decision(third)["prefix_changed"] is True
    assert _decision(third)["prefix_fp"] != _decision(second)["prefix_fp"]


# ------------------------------------------------------------------ the planner alone


def test_planner_caps_breakpoints_and_keeps_prompt_order() -> None:
    doc = long_text("doc", 1500)
    body = {
        "tools": [{"name": "lookup", "description": long_text("tool", 900),
                   "input_schema": {"type": "object", "properties": {}}}],
        "system": long_text("sys", 900),
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": doc},
                                         {"type": "text", "text": "first question"}]},
            {"role": "assistant", "content": "an answer"},
            {"role": "user", "content": "second question"},
        ],
    }  # fmt: skip
    before = repr(body)
    plan = plan_breakpoints(body, "anthropic", "claude-sonnet-4-20250514", PrefixConfig())
    assert repr(body) == before, "the client's body is never mutated"
    assert plan.body is not None
    labels = [p.at for p in plan.points]
    assert labels == ["tools", "system", "previous_turn", "last_turn"]  # 4: the document lost
    assert [p.tokens for p in plan.points] == sorted(p.tokens for p in plan.points)
    assert plan.body["tools"][0]["cache_control"] == {"type": "ephemeral"}
    assert plan.body["system"][0]["cache_control"] == {"type": "ephemeral"}
    assert plan.body["messages"][0]["content"][1]["cache_control"] == {"type": "ephemeral"}
    assert plan.body["messages"][2]["content"][0]["cache_control"] == {"type": "ephemeral"}
    assert plan.body["system"][0]["text"] == body["system"]  # same text, one block

    single = {**body, "messages": body["messages"][:1]}
    plan = plan_breakpoints(single, "anthropic", "claude-sonnet-4-20250514", PrefixConfig())
    assert [p.at for p in plan.points] == ["tools", "system", "document"]
