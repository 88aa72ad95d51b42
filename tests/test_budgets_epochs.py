"""The Redis counter store's fault-handling steps, against a redis-server this test starts:
settlements are idempotent (a retry after a lost answer counts once), a call admitted
while Redis was away settles once, and a Redis that comes back empty is noticed (new epoch)
and handed to the `on_epoch` hook before any reservation in it."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from spendgate.budgets.redis_store import RedisStore
from spendgate.budgets.store import Counter, Settlement, StoreUnavailable

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import faultkit

pytestmark = pytest.mark.skipif(not faultkit.have_redis(), reason="no redis-server binary")


@pytest.fixture
def redis() -> Iterator[faultkit.RedisServer]:
    server = faultkit.RedisServer()
    yield server
    server.stop()


def _c(key: str, limit: int, amount: int) -> Counter:
    keep = time.time() + 3600
    return Counter(key, "r", "usd", limit, True, amount, keep, keep)


async def test_settlement_retries_count_once(redis: faultkit.RedisServer) -> None:
    store = RedisStore(redis.url, "t:", timeout_s=1)
    c = _c("k", 100, 40)
    assert (await store.reserve("a", [c], time.time(), 60)).ok
    assert await store.settle("a", [c], [25]) == [(0, 25)]
    assert await store.settle("a", [c], [25]) == [(25, 25)]  # the retry: nothing added
    # admitted while Redis was away: never reserved there, applied once
    assert await store.settle("b", [c], [10], Settlement(once=True)) == [(25, 35)]
    assert await store.settle("b", [c], [10], Settlement(once=True)) == [(35, 35)]
    [state] = await store.read(["k"])
    assert (state.spent, state.reserved) == (35, 0)
    await store.aclose()


async def test_restart_empty_is_noticed_before_reserving(redis: faultkit.RedisServer) -> None:
    store = RedisStore(redis.url, "t:", timeout_s=1)
    seen: list[tuple[str, float]] = []

    async def on_epoch(epoch: str, cutoff: float) -> None:
        seen.append((epoch, cutoff))
        await store.seed_delta("L", {"k": (70, time.time() + 3600)})

    store.on_epoch = on_epoch
    c = _c("k", 100, 20)
    assert (await store.reserve("a", [c], time.time(), 60)).ok
    assert len(seen) == 1  # first contact: a fresh Redis gets an epoch and a seed
    redis.restart_empty()
    before = time.time()
    for _ in range(2):  # a pooled connection to the old process may fail once
        try:
            await store.check_epoch()  # what the heartbeat does
            break
        except StoreUnavailable:
            pass
    assert len(seen) == 2 and seen[1][0] != seen[0][0]
    store._down_until = 0.0  # skip the fail-fast window (it is timed)
    result = await store.reserve("c", [c], time.time(), 60)
    assert seen[1][1] >= before - 1  # the new epoch's cutoff is when it was made
    # the seed (70 from "the ledger") is in place before the reservation: 70 + 20 <= 100
    assert result.ok and result.states[0].spent == 70
    assert not (await store.reserve("d", [c], time.time(), 60)).ok  # 70 + 20 + 20 > 100
    # seeding again is idempotent: only the change is added
    await store.seed_delta("L", {"k": (75, time.time() + 3600)})
    [state] = await store.read(["k"])
    assert state.spent == 75
    await store.aclose()


def test_fail_open_spend_counts_in_full_against_the_share_after_it_lands() -> None:
    """A fail-open settlement that reached the store stays ours until a snapshot holds it:
    moved into `seen` it would be split over the replicas and two thirds of it handed back
    as allowance (seen once under load: 1.2-1.7x the bound on a Redis restart)."""
    from spendgate.budgets.config import BudgetsConfig
    from spendgate.budgets.manager import BudgetManager
    from spendgate.budgets.outbox import Pending
    from spendgate.budgets.store import MemoryStore
    from spendgate.pricing import PriceCatalog

    manager = BudgetManager(
        BudgetsConfig(fail_open=True), catalog=PriceCatalog(), table=None, counters=MemoryStore()
    )
    limit = 10_000
    manager._seen["k"] = limit - 3_000  # headroom 3,000 over 3 replicas: a share of 1,000
    manager._replicas = 3
    assert manager._local_room([_c("k", limit, 600)]) is None
    manager._local["k"] = 600  # admitted on the store-down path
    manager._settled_in_store(Pending("l1", time.time(), True, [_c("k", limit, 600)], [600]), [])
    assert manager._local_room([_c("k", limit, 500)]) is not None  # 600 + 500 > 1,000
    assert manager._local_room([_c("k", limit, 400)]) is None
    # a reserve issued after it landed returns a snapshot holding it: it leaves `_local`
    manager._forget_landed({"k": 600})
    assert manager._local.get("k", 0) == 0 and manager._landed.get("k", 0) == 0
