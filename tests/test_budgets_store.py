"""Counter stores, the same contract on both: the in-process `MemoryStore` and `RedisStore`
(real Redis on 127.0.0.1:6379, a unique key prefix per test, deleted afterwards)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal

import pytest

from spendgate.budgets.config import BudgetRule, BudgetsConfig, RateLimitRule
from spendgate.budgets.definitions import SQLiteDefinitions, rule_from_json, rule_to_json
from spendgate.budgets.periods import human_delay, period_at
from spendgate.budgets.store import Counter, CounterStore, MemoryStore, StoreUnavailable

REDIS_URL = "redis://127.0.0.1:6379/0"


def _redis_up() -> bool:
    try:
        import redis

        return bool(redis.Redis.from_url(REDIS_URL, socket_connect_timeout=0.5).ping())
    except Exception:
        return False


@pytest.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[CounterStore]:
    if request.param == "memory":
        yield MemoryStore()
        return
    if not _redis_up():
        pytest.skip("Redis is not running on 127.0.0.1:6379")
    import redis.asyncio as aioredis

    from spendgate.budgets.redis_store import RedisStore

    prefix = f"sgtest-{uuid.uuid4().hex[:10]}:"
    s = RedisStore(REDIS_URL, prefix, timeout_s=5.0)  # a loaded CI machine is slow, not down
    yield s
    await s.aclose()
    client = aioredis.Redis.from_url(REDIS_URL)
    keys = [k async for k in client.scan_iter(match=prefix + "*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


def _c(key: str, limit: int, amount: int, hard: bool = True) -> Counter:
    return Counter(key, key, "usd", limit, hard, amount, time.time() + 3600, time.time() + 60)


async def test_reserve_is_all_or_nothing(store: CounterStore) -> None:
    now = time.time()
    a, b = _c("a", 100, 60), _c("b", 50, 60)
    result = await store.reserve("l1", [a, b], now, 60)
    assert not result.ok and result.refused == [1]
    assert await store.read(["a", "b"]) == [(0, 0), (0, 0)] or [
        (s.spent, s.reserved) for s in await store.read(["a", "b"])
    ] == [(0, 0), (0, 0)]
    result = await store.reserve("l2", [a, _c("b", 100, 60)], now, 60)
    assert result.ok
    states = await store.read(["a", "b"])
    assert [(s.spent, s.reserved) for s in states] == [(0, 60), (0, 60)]


async def test_settle_replaces_reservation_and_reports_crossing(store: CounterStore) -> None:
    now = time.time()
    c = _c("x", 100, 40)
    assert (await store.reserve("l1", [c], now, 60)).ok
    assert (await store.reserve("l2", [c], now, 60)).ok
    refused = await store.reserve("l3", [c], now, 60)
    assert not refused.ok
    assert (refused.states[0].spent, refused.states[0].reserved) == (0, 80)
    assert await store.settle("l1", [c], [25]) == [(0, 25)]
    assert await store.settle("l2", [c], [0]) == [(25, 25)]  # released
    [state] = await store.read(["x"])
    assert (state.spent, state.reserved) == (25, 0)
    assert (await store.reserve("l4", [c], now, 60)).ok  # room again: 25 + 40 <= 100


async def test_soft_counters_never_refuse(store: CounterStore) -> None:
    soft = _c("s", 10, 30, hard=False)
    for i in range(3):
        assert (await store.reserve(f"l{i}", [soft], time.time(), 60)).ok
    [state] = await store.read(["s"])
    assert state.reserved == 90


async def test_expired_leases_are_reclaimed(store: CounterStore) -> None:
    now = time.time()
    c = _c("e", 100, 70)
    assert (await store.reserve("dead", [c], now - 120, 60)).ok  # its lease ran out at now-60
    assert (await store.reserve("alive", [c], now, 60)).ok
    [state] = await store.read(["e"])
    assert state.reserved == 70
    # A settlement arriving after its lease was reclaimed still counts the spend, once.
    assert await store.settle("dead", [c], [5]) == [(0, 5)]
    [state] = await store.read(["e"])
    assert (state.spent, state.reserved) == (5, 70)


async def test_concurrent_reservations_never_overrun(store: CounterStore) -> None:
    c = _c("race", 1000, 7)

    async def one(i: int) -> bool:
        return (await store.reserve(f"l{i}", [c], time.time(), 60)).ok

    results = await asyncio.gather(*(one(i) for i in range(400)))
    assert sum(results) == 1000 // 7
    [state] = await store.read(["race"])
    assert state.reserved == 7 * (1000 // 7)


async def test_seed_only_when_absent_and_scan(store: CounterStore) -> None:
    await store.seed("b:r:all:d1", 500, time.time() + 3600)
    await store.seed("b:r:all:d1", 900, time.time() + 3600)
    assert (await store.reserve("l", [_c("b:r:all:d2", 10, 1)], time.time(), 60)).ok
    found = await store.scan("b:r:")
    assert {k: (s.spent, s.reserved) for k, s in found.items()} == {
        "b:r:all:d1": (500, 0),
        "b:r:all:d2": (0, 1),
    }


async def test_redis_keys_expire_with_their_period() -> None:
    if not _redis_up():
        pytest.skip("Redis is not running")
    import redis.asyncio as aioredis

    from spendgate.budgets.redis_store import RedisStore

    prefix = f"sgtest-{uuid.uuid4().hex[:10]}:"
    store = RedisStore(REDIS_URL, prefix)
    keep = time.time() + 1000
    c = Counter("k", "k", "usd", 10, True, 1, keep, keep)
    assert (await store.reserve("l", [c], time.time(), 60)).ok
    client = aioredis.Redis.from_url(REDIS_URL)
    ttl = await client.pttl(prefix + "c:k")
    assert 990_000 < ttl <= 1_000_000
    assert await client.pttl(prefix + "c:k:leases") > 0
    await client.delete(prefix + "c:k", prefix + "c:k:leases")
    await client.aclose()
    await store.aclose()


async def test_unreachable_redis_raises_store_unavailable() -> None:
    from spendgate.budgets.redis_store import RedisStore

    store = RedisStore("redis://127.0.0.1:1/0", "x:", timeout_s=0.2)
    with pytest.raises(StoreUnavailable):
        await store.reserve("l", [_c("a", 1, 1)], time.time(), 60)


def test_periods_reset_at_utc_boundaries() -> None:
    t = 1_764_244_800.0 + 3600 * 5 + 7  # 2025-11-27T05:00:07Z, a Thursday
    day = period_at("day", t)
    assert day.id == "d2025-11-27" and day.reset_iso() == "2025-11-28T00:00:00Z"
    week = period_at("week", t)
    assert week.id == "w2025-11-24" and week.reset_iso() == "2025-12-01T00:00:00Z"
    month = period_at("month", t)
    assert month.id == "m2025-11" and month.reset_iso() == "2025-12-01T00:00:00Z"
    dec = period_at("month", 1_765_000_000.0)  # December rolls into January
    assert dec.reset_iso() == "2026-01-01T00:00:00Z"
    minute = period_at("minute", t)
    assert minute.end - minute.start == 60 and minute.start <= t < minute.end
    assert human_delay(3 * 3600 + 12 * 60) == "3h12m"
    assert human_delay(41.2) == "42s"


def test_config_validation_names_the_problem() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="unknown scope tag"):
        BudgetsConfig.model_validate(
            {"budgets": [{"name": "a", "scope": {"org": "x"}, "limit_usd": 1}]}
        )
    with pytest.raises(ValidationError, match="requests_per_minute and/or tokens_per_minute"):
        BudgetsConfig.model_validate({"limits": [{"name": "a"}]})
    with pytest.raises(ValidationError, match="used twice"):
        BudgetsConfig.model_validate(
            {
                "budgets": [{"name": "a", "limit_usd": 1}],
                "limits": [{"name": "a", "requests_per_minute": 1}],
            }
        )
    with pytest.raises(ValidationError, match="redis"):
        BudgetsConfig.model_validate({"store": "postgres://x"})


def test_definitions_roundtrip_in_sqlite(tmp_path: object) -> None:
    from pathlib import Path

    assert isinstance(tmp_path, Path)
    defs = SQLiteDefinitions(str(tmp_path / "d.db"))
    b = BudgetRule(name="b", scope={"tenant": "*"}, limit_usd=Decimal("12.5"), period="week")
    r = RateLimitRule(name="r", scope={"key": "*"}, requests_per_minute=10)
    defs.put(b)
    defs.put(r)
    assert defs.all() == [b, r]
    assert rule_from_json(rule_to_json(b)) == b
    again = SQLiteDefinitions(str(tmp_path / "d.db"))
    assert again.all() == [b, r]
    assert again.delete("b") and not again.delete("b")
    assert defs.all() == [r]
