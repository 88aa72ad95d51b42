"""Budgets and rate limits through a real gateway (uvicorn on a socket → simulated upstream),
checked against the SQLite ledger: hard budgets refuse with a 429 naming the budget and its
reset, soft budgets only record, and settled counters equal the ledger's sums."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import anthropic
import httpx2
import openai
import pytest

from conftest import Harness, unique
from spendgate.budgets import BudgetManager, BudgetRule, ScopedBudget
from spendgate.call import to_nanos
from spendgate.ledger import UsageEvent


def _chat(
    h: Harness,
    headers: dict[str, str],
    *,
    max_tokens: int = 16,
    stream: bool = False,
    model: str = "gpt-4o-mini",
    text: str = "Say something about budgets.",
) -> httpx2.Response:
    body: dict[str, Any] = {
        "model": model,
        "messages": [{"role": "user", "content": text}],
        "max_tokens": max_tokens,
    }
    if stream:
        body["stream"] = True
    return httpx2.post(h.v1 + "/chat/completions", json=body, headers=headers, timeout=30)


def _manager(h: Harness) -> BudgetManager:
    manager = h.gateway.stage_context.budgets
    assert isinstance(manager, BudgetManager)
    return manager


def _budget_decision(event: UsageEvent) -> dict[str, Any]:
    assert event.extra is not None, event
    return event.extra["decisions"]["budget"]


def _counter(h: Harness, prefix: str) -> tuple[int, int]:
    """(spent, reserved) summed over the live counters whose key starts with `prefix`."""
    states = asyncio.run(_manager(h).counters.scan(prefix))
    return sum(s.spent for s in states.values()), sum(s.reserved for s in states.values())


def test_hard_budget_refuses_with_429_naming_budget_and_reset(
    make_gateway: Callable[..., Harness],
) -> None:
    team = unique("team")
    h = make_gateway(
        budgets={
            "budgets": [
                {
                    "name": "tiny-daily",
                    "scope": {"team": team},
                    "period": "day",
                    "limit_usd": "0.0001",
                    "mode": "hard",
                }
            ]
        }
    )
    headers = {"x-spendgate-team": team, "x-spendgate-feature": unique("f")}
    statuses, refusal = [], None
    for _ in range(60):
        r = _chat(h, headers, max_tokens=20)
        statuses.append(r.status_code)
        if r.status_code == 429:
            refusal = r
            break
        assert r.status_code == 200, r.text
    assert refusal is not None, "the budget never refused"
    assert statuses.count(200) >= 1
    err = refusal.json()["error"]
    assert "tiny-daily" in err["message"]
    assert err["code"] == "budget_exceeded"
    assert err["type"] == "insufficient_quota"
    tomorrow = time.strftime("%Y-%m-%dT00:00:00Z", time.gmtime(time.time() + 86400))
    assert f"resets at {tomorrow}" in err["message"]
    retry_after = int(refusal.headers["retry-after"])
    assert 0 < retry_after <= 86400
    assert refusal.headers["x-spendgate-budget"] == "tiny-daily"

    # Another team is not covered by this budget.
    assert _chat(h, {"x-spendgate-team": unique("other")}).status_code == 200

    rows = h.events(team=team)
    assert len(rows) == len(statuses)
    ok = [e for e in rows if e.status == 200]
    refused = [e for e in rows if e.status == 429]
    assert len(refused) == 1
    rid = refusal.headers["x-spendgate-request-id"]
    assert refused[0].request_id == rid
    assert refused[0].cost_nanos == 0
    assert _budget_decision(refused[0])["rejected_by"] == ["tiny-daily"]
    limit = to_nanos(Decimal("0.0001"))
    spent = sum(e.cost_nanos or 0 for e in ok)
    assert spent <= limit
    # The refused call's worst case did not fit next to what was spent.
    assert spent + _budget_decision(refused[0])["reserved_nanos"] > limit
    for e in ok:
        d = _budget_decision(e)
        assert d["settled_nanos"] == e.cost_nanos
        assert 0 < e.cost_nanos <= d["reserved_nanos"]
    assert _counter(h, "b:tiny-daily:") == (spent, 0)
    metrics = httpx2.get(h.url + "/metrics", timeout=10).text
    assert 'spendgate_budget_refusals_total{kind="usd",rule="tiny-daily"} 1.0' in metrics


def test_soft_budget_only_records_and_fires_thresholds(
    make_gateway: Callable[..., Harness],
) -> None:
    feature = unique("feat")
    h = make_gateway(
        budgets={
            "budgets": [
                {
                    "name": "soft-feature",
                    "scope": {"feature": "*"},
                    "period": "month",
                    "limit_usd": "0.00005",
                    "mode": "soft",
                }
            ]
        }
    )
    seen: list[tuple[ScopedBudget, Decimal, Decimal, float]] = []
    _manager(h).on_threshold.append(lambda b, s, lim, f: seen.append((b, s, lim, f)))
    for _ in range(12):
        assert _chat(h, {"x-spendgate-feature": feature}, max_tokens=20).status_code == 200
    rows = sorted(h.events(feature=feature), key=lambda e: e.ts)
    assert len(rows) == 12
    total = sum(e.cost_nanos or 0 for e in rows)
    limit = to_nanos(Decimal("0.00005"))
    assert total > limit, "test needs the soft budget to be passed"
    crossed = [c for e in rows for c in _budget_decision(e).get("crossed", [])]
    assert [c["threshold"] for c in crossed] == [0.5, 0.8, 1.0]
    assert all(c["scope"] == {"feature": feature} for c in crossed)
    assert [f for _, _, _, f in seen] == [0.5, 0.8, 1.0]
    assert all(b.name == "soft-feature" and b.scope == {"feature": feature} for b, *_ in seen)
    for _, spent, lim, fraction in seen:
        assert lim == Decimal("0.00005") and spent >= lim * Decimal(str(fraction))
    assert any("soft_exceeded" in _budget_decision(e) for e in rows)
    # Each crossing is recorded on the call whose settlement crossed it.
    running = 0
    for e in rows:
        before, running = running, running + (e.cost_nanos or 0)
        for c in _budget_decision(e).get("crossed", []):
            assert before < limit * c["threshold"] <= running
    assert _counter(h, f"b:soft-feature:feature={feature}:") == (total, 0)
    metrics = httpx2.get(h.url + "/metrics", timeout=10).text
    for t in ("0.5", "0.8", "1"):
        assert f'spendgate_budget_crossings_total{{rule="soft-feature",threshold="{t}"}} 1.0' in (
            metrics
        )


def test_counters_equal_ledger_after_streams_errors_and_sdks(
    make_gateway: Callable[..., Harness], faults: Callable[..., None]
) -> None:
    tenant = unique("tenant")
    h = make_gateway(
        budgets={
            "budgets": [
                {
                    "name": "per-tenant",
                    "scope": {"tenant": "*"},
                    "period": "week",
                    "limit_usd": "5",
                    "mode": "hard",
                }
            ],
            "limits": [
                {"name": "tenant-tpm", "scope": {"tenant": "*"}, "tokens_per_minute": 1_000_000}
            ],
        }
    )
    headers = {"x-spendgate-tenant": tenant}
    assert _chat(h, headers).status_code == 200
    assert any("[DONE]" in line for line in _stream_lines(h, headers))
    faults({"kind": "status", "status": 400, "model": "gpt-4o-mini"})
    assert _chat(h, headers).status_code == 400
    with openai.OpenAI(base_url=h.v1, api_key="x", max_retries=0, default_headers=headers) as c:
        c.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "hi"}], max_tokens=30
        )
        stream = c.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "tell a story"}],
            max_tokens=40,
            stream=True,
        )
        assert sum(1 for _ in stream) > 1
    with anthropic.Anthropic(
        base_url=h.url, api_key="x", max_retries=0, default_headers=headers
    ) as a:
        a.messages.create(
            model="claude-sonnet-4", max_tokens=25, messages=[{"role": "user", "content": "hello"}]
        )
    events = _wait_rows(h, tenant, 6)
    statuses = sorted(e.status for e in events)
    assert statuses == [200, 200, 200, 200, 200, 400]
    ledger_sum = sum(e.cost_nanos or 0 for e in events)
    assert _counter(h, f"b:per-tenant:tenant={tenant}:") == (ledger_sum, 0)
    tokens = sum(e.input_tokens + e.output_tokens for e in events)
    assert _counter(h, f"r:tenant-tpm:tenant={tenant}:tok:")[0] == tokens
    failed = next(e for e in events if e.status == 400)
    assert _budget_decision(failed)["settled_nanos"] == 0


def _stream_lines(h: Harness, headers: dict[str, str]) -> list[str]:
    body = {
        "model": "gpt-4o-mini",
        "stream": True,
        "max_tokens": 30,
        "messages": [{"role": "user", "content": "stream please"}],
    }
    url = h.v1 + "/chat/completions"
    with httpx2.stream("POST", url, json=body, headers=headers, timeout=30) as r:
        assert r.status_code == 200
        return list(r.iter_lines())


def _wait_rows(h: Harness, tenant: str, n: int) -> list[UsageEvent]:
    deadline = time.monotonic() + 15
    rows: list[UsageEvent] = []
    while time.monotonic() < deadline:
        rows = h.events(tenant=tenant)
        if len(rows) >= n:
            return rows
        httpx2.get(h.url + "/healthz", timeout=5)
    raise AssertionError(f"expected {n} rows, got {len(rows)}")


def test_requests_per_minute_per_key(make_gateway: Callable[..., Harness]) -> None:
    for _attempt in range(3):  # a run that straddles a minute boundary is retried
        team = unique("team")
        h = make_gateway(
            budgets={
                "limits": [{"name": "team-rpm", "scope": {"team": "*"}, "requests_per_minute": 3}]
            }
        )
        minute = int(time.time() // 60)
        codes = [_chat(h, {"x-spendgate-team": team}).status_code for _ in range(5)]
        other = _chat(h, {"x-spendgate-team": unique("team")}).status_code
        if int(time.time() // 60) != minute:
            continue
        assert codes == [200, 200, 200, 429, 429]
        assert other == 200
        r = _chat(h, {"x-spendgate-team": team})
        err = r.json()["error"]
        assert err["code"] == "rate_limit_exceeded" and err["type"] == "requests"
        assert "team-rpm" in err["message"] and f"team={team}" in err["message"]
        assert 1 <= int(r.headers["retry-after"]) <= 60
        assert sum(1 for e in h.events(team=team) if e.status == 429) == 3
        return
    pytest.fail("could not run within one minute window")


def test_tokens_per_minute_refuses_a_request_larger_than_the_limit(
    make_gateway: Callable[..., Harness],
) -> None:
    h = make_gateway(budgets={"limits": [{"name": "tpm", "tokens_per_minute": 100}]})
    r = _chat(h, {}, max_tokens=500)
    assert r.status_code == 429
    assert r.json()["error"]["type"] == "tokens"
    assert _chat(h, {}, max_tokens=20).status_code == 200


def test_anthropic_client_gets_its_error_shape(make_gateway: Callable[..., Harness]) -> None:
    h = make_gateway(
        budgets={"budgets": [{"name": "none-left", "limit_usd": "0.000000001", "period": "day"}]}
    )
    with (
        anthropic.Anthropic(base_url=h.url, api_key="x", max_retries=0) as a,
        pytest.raises(anthropic.RateLimitError) as info,
    ):
        a.messages.create(
            model="claude-sonnet-4", max_tokens=10, messages=[{"role": "user", "content": "hi"}]
        )
    assert "none-left" in str(info.value)
    assert "more than the whole budget" in str(info.value)


def test_unknown_price_is_refused_under_a_hard_budget(
    make_gateway: Callable[..., Harness], sim: Any
) -> None:
    h = make_gateway(
        budgets={"budgets": [{"name": "b", "limit_usd": "10", "period": "day"}]},
        deployments=[
            {
                "name": "odd",
                "provider": "simulated",
                "base_url": sim.url + "/v1",
                "models": ["house-model-x"],
            }
        ],
    )
    r = _chat(h, {}, model="house-model-x")
    assert r.status_code == 403, r.text
    assert r.json()["error"]["code"] == "budget_price_unknown"


def test_fail_open_and_fail_closed_when_redis_is_down(
    make_gateway: Callable[..., Harness],
) -> None:
    rule = [{"name": "b", "limit_usd": "10", "period": "day"}]
    dead = "redis://127.0.0.1:1/0"
    # fail-open is bounded: a counter this replica never saw in Redis gets only the local
    # allowance (refused without one)
    h_open = make_gateway(
        budgets={"store": dead, "budgets": rule, "fail_open": True, "redis_timeout_s": 0.2,
                 "fail_open_allowance_usd": "0.001"}
    )  # fmt: skip
    r = _chat(h_open, {})
    assert r.status_code == 200
    row = h_open.one(r.headers["x-spendgate-request-id"])
    assert _budget_decision(row)["fail_open"] is True
    # 2,000 output tokens of gpt-4o-mini may cost $0.0012: more than the allowance
    assert _chat(h_open, {}, max_tokens=2000).status_code == 503
    h_none = make_gateway(
        budgets={"store": dead, "budgets": rule, "fail_open": True, "redis_timeout_s": 0.2}
    )
    assert _chat(h_none, {}).status_code == 503
    h_closed = make_gateway(
        budgets={"store": dead, "budgets": rule, "fail_open": False, "redis_timeout_s": 0.2}
    )
    r = _chat(h_closed, {})
    assert r.status_code == 503
    assert r.json()["error"]["code"] == "budget_store_unavailable"
    assert h_closed.one(r.headers["x-spendgate-request-id"]).status == 503


def test_memory_counters_start_from_the_ledger_after_a_restart(
    make_gateway: Callable[..., Harness], tmp_path: Any
) -> None:
    from conftest import sqlite_url

    team = unique("team")
    cfg = {
        "budgets": [
            {
                "name": "restart",
                "scope": {"team": team},
                "period": "day",
                "limit_usd": "1",
                "mode": "hard",
            }
        ]
    }
    storage = {"ledger": sqlite_url(tmp_path / "l.db"), "keys": sqlite_url(tmp_path / "k.db")}
    first = make_gateway(budgets=cfg, storage=storage)
    for _ in range(3):
        assert _chat(first, {"x-spendgate-team": team}).status_code == 200
    spent = sum(e.cost_nanos or 0 for e in first.events(team=team))
    first.stop()
    second = make_gateway(budgets=cfg, storage=storage)
    assert _counter(second, f"b:restart:team={team}:") == (spent, 0)


def test_dynamic_rules_persist_in_sqlite(make_gateway: Callable[..., Harness]) -> None:
    team = unique("team")
    h = make_gateway(budgets={})
    manager = _manager(h)
    assert _chat(h, {"x-spendgate-team": team}).status_code == 200
    manager.set_rule(
        BudgetRule(name="dyn", scope={"team": team}, limit_usd=Decimal("1e-9"), period="day")
    )
    r = _chat(h, {"x-spendgate-team": team})
    assert r.status_code == 429 and "dyn" in r.json()["error"]["message"]
    assert [r.name for r in manager.definitions.all()] == ["dyn"]  # type: ignore[union-attr]
    assert manager.remove_rule("dyn")
    assert _chat(h, {"x-spendgate-team": team}).status_code == 200


def test_rules_made_elsewhere_are_picked_up_while_serving(
    make_gateway: Callable[..., Harness],
) -> None:
    """A rule written to the definition store by another process (the CLI) reaches a running
    gateway through its periodic reload, with no call to the manager."""
    from spendgate.budgets.definitions import open_definitions

    team = unique("team")
    h = make_gateway(budgets={"reload_interval_s": 0.01})
    assert _chat(h, {"x-spendgate-team": team}).status_code == 200
    store = open_definitions(h.keys_url)
    store.put(BudgetRule(name="elsewhere", scope={"team": team}, limit_usd=Decimal("1e-9")))
    store.close()
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:  # each request is also what triggers the reload
        r = _chat(h, {"x-spendgate-team": team})
        if r.status_code == 429:
            assert "elsewhere" in r.json()["error"]["message"]
            return
        assert r.status_code == 200
    pytest.fail("the running gateway never picked the rule up")


def test_unknown_price_admitted_with_a_default_reservation(
    make_gateway: Callable[..., Harness], sim: Any
) -> None:
    h = make_gateway(
        budgets={
            "unknown_price": "admit",
            "unknown_price_reserve_usd": "0.01",
            "budgets": [{"name": "b", "limit_usd": "0.025", "period": "day"}],
        },
        deployments=[{"name": "odd", "provider": "simulated", "base_url": sim.url + "/v1",
                      "models": ["house-model-x"]}],
    )  # fmt: skip
    codes = [_chat(h, {}, model="house-model-x").status_code for _ in range(3)]
    # Each call holds (then keeps, its cost being unknown) the default $0.01: two fit in $0.025.
    assert codes == [200, 200, 429]
    rows = sorted(h.events(), key=lambda e: e.ts)
    assert [e.cost_nanos for e in rows] == [None, None, 0]
    for e in rows[:2]:
        d = _budget_decision(e)
        assert d["price_unknown"] is True
        assert d["reserved_nanos"] == d["settled_nanos"] == to_nanos(Decimal("0.01"))
    assert _counter(h, "b:b:") == (2 * to_nanos(Decimal("0.01")), 0)
