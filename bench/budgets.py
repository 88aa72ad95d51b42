"""What does budget enforcement cost per call? reserve + settle through `BudgetManager`.

    .venv/bin/python bench/budgets.py            # 2,000 calls per case
    .venv/bin/python bench/budgets.py --quick    # 500
    .venv/bin/python bench/budgets.py --json     # JSON on stdout

Each case admits a realistic chat call (a 60-token prompt, max_tokens 256) against three
rules (a team budget per day, a per-tenant budget per month, a per-key rate limit with
requests and tokens per minute: 4 counters) and settles it to a known cost, either one at a
time (latency: µs per admit+settle) or 64 at a time (throughput). Stores: `memory` and
`redis` (127.0.0.1:6379, a throw-away key prefix, deleted afterwards). The admit includes
counting the prompt's tokens and pricing the worst case from the catalog.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
import uuid
from decimal import Decimal
from typing import Any

from spendgate.budgets.config import BudgetsConfig
from spendgate.budgets.manager import BudgetManager
from spendgate.budgets.store import CounterStore, MemoryStore
from spendgate.call import Call, Cost, Tags, Usage
from spendgate.config import simulated_settings
from spendgate.dispatch.table import ModelTable
from spendgate.pricing import PriceCatalog
from spendgate.reply import Reply

REDIS_URL = "redis://127.0.0.1:6379/0"
PROMPT = " ".join(["Summarize the quarterly spend of the search feature by tenant."] * 6)


def _config(store: str, prefix: str) -> BudgetsConfig:
    return BudgetsConfig.model_validate(
        {
            "store": store,
            "key_prefix": prefix,
            "budgets": [
                {
                    "name": "team-day",
                    "scope": {"team": "search"},
                    "period": "day",
                    "limit_usd": "1000000",
                },
                {
                    "name": "tenant-month",
                    "scope": {"tenant": "*"},
                    "period": "month",
                    "limit_usd": "1000000",
                },
            ],
            "limits": [
                {
                    "name": "key-rate",
                    "scope": {"key": "*"},
                    "requests_per_minute": 10_000_000,
                    "tokens_per_minute": 10_000_000_000,
                },
            ],
        }
    )


def _call(i: int) -> Call:
    body = {
        "model": "gpt-4o-mini",
        "max_tokens": 256,
        "messages": [{"role": "user", "content": PROMPT}],
    }
    return Call(
        endpoint="chat",
        api="openai",
        body=body,
        requested_model="gpt-4o-mini",
        tags=Tags(team="search", tenant=f"t{i % 50}", key_id=f"k{i % 10}"),
    )


def _reply() -> Reply:
    r = Reply(status=200, body={}, usage=Usage(input_tokens=70, output_tokens=120))
    r.cost = Cost(input=Decimal("0.0000105"), output=Decimal("0.000072"))
    r.priced = True
    return r


async def _run(store: CounterStore, config: BudgetsConfig, n: int, conc: int) -> dict[str, Any]:
    sim = simulated_settings("http://127.0.0.1:9/")
    manager = BudgetManager(
        config,
        catalog=PriceCatalog.default(),
        table=ModelTable(sim.build_deployments()),
        counters=store,
    )
    calls = [_call(i) for i in range(n)]
    lat: list[float] = []

    async def one(call: Call) -> None:
        t = time.perf_counter()
        adm = await manager.admit(call)
        assert adm is not None
        await manager.settle(adm, _reply())
        lat.append(time.perf_counter() - t)

    for call in calls[:50]:  # warm-up: tokenizer, catalog, connections
        await one(call)
    lat.clear()
    calls = [_call(i) for i in range(n)]
    start = time.perf_counter()
    if conc == 1:
        for call in calls:
            await one(call)
    else:
        sem = asyncio.Semaphore(conc)

        async def bounded(call: Call) -> None:
            async with sem:
                await one(call)

        await asyncio.gather(*(bounded(c) for c in calls))
    wall = time.perf_counter() - start
    await store.aclose()
    lat.sort()
    return {
        "calls": n,
        "concurrency": conc,
        "calls_per_s": round(n / wall),
        "p50_us": round(statistics.median(lat) * 1e6),
        "p99_us": round(lat[int(len(lat) * 0.99) - 1] * 1e6),
    }


async def _cases(n: int) -> list[dict[str, Any]]:
    out = []
    for conc in (1, 64):
        cfg = _config("memory", "x:")
        out.append({"store": "memory", **await _run(MemoryStore(), cfg, n, conc)})
    try:
        import redis

        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=0.5).ping()
    except Exception as exc:
        print(f"redis unavailable, skipped: {exc}")
        return out
    from spendgate.budgets.redis_store import RedisStore

    for conc in (1, 64):
        prefix = f"sgbench-{uuid.uuid4().hex[:8]}:"
        cfg = _config(REDIS_URL, prefix)
        try:
            out.append(
                {"store": "redis", **await _run(RedisStore(REDIS_URL, prefix, 5.0), cfg, n, conc)}
            )
        finally:
            client = redis.Redis.from_url(REDIS_URL)
            keys = list(client.scan_iter(match=prefix + "*"))
            if keys:
                client.delete(*keys)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rows = asyncio.run(_cases(500 if args.quick else 2000))
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print(f"{'store':<8} {'conc':>4} {'calls/s':>9} {'p50 µs':>8} {'p99 µs':>8}")
    for r in rows:
        print(
            f"{r['store']:<8} {r['concurrency']:>4} {r['calls_per_s']:>9} "
            f"{r['p50_us']:>8} {r['p99_us']:>8}"
        )


if __name__ == "__main__":
    main()
