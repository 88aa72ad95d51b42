"""Budgets settle to the ledger's actual cost (issue 12): a cache hit costs $0 in the ledger
and must release its whole reservation; a served call settles to its priced usage; a failed
call the provider did not bill releases its reservation. Mixed cached/uncached traffic,
plain and streamed, through a real gateway; then the budget counter must equal the sum of
the ledger's costs, with the memory store and with the Redis store."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx2
import pytest

from conftest import Harness, unique
from spendgate.budgets import BudgetManager

REDIS_URL = "redis://127.0.0.1:6379/0"


def _redis_up() -> bool:
    try:
        import redis

        return bool(redis.Redis.from_url(REDIS_URL, socket_connect_timeout=0.5).ping())
    except Exception:
        return False


@pytest.fixture(params=["memory", "redis"])
def store(request: pytest.FixtureRequest) -> Iterator[dict[str, Any]]:
    if request.param == "memory":
        yield {"store": "memory"}
        return
    if not _redis_up():
        pytest.skip("Redis is not running on 127.0.0.1:6379")
    prefix = f"sgsettle-{uuid.uuid4().hex[:10]}:"
    yield {"store": REDIS_URL, "key_prefix": prefix}
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(match=prefix + "*"))
    if keys:
        client.delete(*keys)
    client.close()


def _post(h: Harness, body: dict[str, Any], feature: str) -> httpx2.Response:
    headers = {"x-spendgate-feature": feature, "x-spendgate-tenant": "acme"}
    url = h.v1 + "/chat/completions"
    if not body.get("stream"):
        return httpx2.post(url, json=body, headers=headers, timeout=30)
    with httpx2.stream("POST", url, json=body, headers=headers, timeout=30) as r:
        r.read()
        return r


def test_counters_equal_ledger_after_mixed_cached_traffic(
    make_gateway: Callable[..., Harness],
    faults: Callable[..., None],
    store: dict[str, Any],
) -> None:
    feature = unique("settle")
    h = make_gateway(
        cache={"enabled": True},
        budgets={
            **store,
            "budgets": [
                {"name": "mix", "scope": {"feature": feature}, "period": "day",
                 "limit_usd": "100", "mode": "hard"},
            ],
        },
    )  # fmt: skip
    statuses: dict[str, int] = {}
    for round_ in range(2):  # the second round repeats every prompt: cache hits
        for i in range(6):
            body: dict[str, Any] = {
                "model": "gpt-4o-mini",
                "max_tokens": 400,
                "messages": [{"role": "user", "content": f"Prompt {i} of {feature}"}],
            }
            if i % 3 == 2:
                body["stream"] = True
            r = _post(h, body, feature)
            assert r.status_code == 200, r.text
            statuses[r.headers["x-spendgate-request-id"]] = round_
    # one failed call: not billed, its reservation released
    faults({"kind": "status", "status": 500, "model": "gpt-4o-mini"})
    bad = _post(
        h,
        {"model": "gpt-4o-mini", "max_tokens": 400,
         "messages": [{"role": "user", "content": f"fails {feature}"}]},
        feature,
    )  # fmt: skip
    assert bad.status_code >= 500

    events = h.events(feature=feature)
    assert len(events) == 13
    hits = [e for e in events if e.cache == "hit"]
    assert len(hits) == 6
    for e in events:
        decision = e.extra["decisions"]["budget"] if e.extra else {}
        assert decision["settled_nanos"] == (e.cost_nanos or 0), e
        if e.cache == "hit":
            assert e.cost_nanos == 0 and decision["reserved_nanos"] > 0
    served = [e for e in events if e.cache == "miss" and e.status == 200]
    assert len(served) == 6 and all((e.cost_nanos or 0) > 0 for e in served)

    manager = h.gateway.stage_context.budgets
    assert isinstance(manager, BudgetManager)

    async def read() -> tuple[int, int]:
        # settlements of streamed calls may still be in flight on the gateway's loop
        states = await manager.counters.scan("b:mix:")
        return sum(s.spent for s in states.values()), sum(s.reserved for s in states.values())

    spent, reserved = asyncio.run(read())
    assert reserved == 0
    assert spent == sum(e.cost_nanos or 0 for e in events)
