"""Ledger fillers shared by the dashboard tests: a real demo replay through the gateway, and
past days of history written straight into the ledger (a gateway can't receive calls in the
past)."""

from __future__ import annotations

import asyncio
import random
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp

from spendgate.demo import FEATURES, TENANTS, load_prompts, requests_for
from spendgate.ledger import LedgerStore, UsageEvent

SERVED = {"claude-sonnet-4": "claude-sonnet-4-20250514",
          "claude-3-5-haiku": "claude-3-5-haiku-20241022"}  # fmt: skip
# Rough per-call cost of each demo feature, nanos (shapes the synthetic history only).
_COST = {"gpt-4o": 4_000_000, "gpt-4o-mini": 150_000, "claude-sonnet-4": 6_000_000,
         "claude-3-5-haiku": 1_200_000, "o3-mini": 2_500_000}  # fmt: skip


def replay_demo(url: str, n: int = 200, concurrency: int = 8) -> dict[str, int]:
    """Send the first `n` demo prompts through the gateway at `url`; status → count."""
    work = list(requests_for(load_prompts(n)[0]))
    statuses: dict[str, int] = {}

    async def run() -> None:
        queue: asyncio.Queue[tuple[str, dict[str, str], dict[str, Any]]] = asyncio.Queue()
        for item in work:
            queue.put_nowait(item)

        async def worker(session: aiohttp.ClientSession) -> None:
            while not queue.empty():
                path, headers, body = queue.get_nowait()
                async with session.post(url + path, json=body, headers=headers) as resp:
                    await resp.read()
                    statuses[str(resp.status)] = statuses.get(str(resp.status), 0) + 1

        async with aiohttp.ClientSession() as session:
            await asyncio.gather(*(worker(session) for _ in range(concurrency)))

    asyncio.run(run())
    return statuses


def history_events(days: int = 14, per_day: int = 40, seed: int = 7,
                   now: datetime | None = None) -> list[UsageEvent]:  # fmt: skip
    """Synthetic calls spread over the `days` days before today (UTC), demo-shaped."""
    rng = random.Random(seed)
    now = now or datetime.now(UTC)
    today = now.replace(hour=0, minute=0, second=0, microsecond=0)
    weights = [f.weight for f in FEATURES]
    events = []
    for d in range(1, days + 1):
        day = today - timedelta(days=d)
        growth = 1 + (days - d) / days  # spend grows towards today
        for _ in range(int(per_day * growth)):
            f = rng.choices(FEATURES, weights)[0]
            tenant = TENANTS[min(int(rng.paretovariate(1.2)) - 1, len(TENANTS) - 1)]
            cost = int(_COST[f.model] * rng.uniform(0.5, 1.5))
            ts = (day + timedelta(seconds=rng.uniform(0, 86_399))).timestamp()
            events.append(
                UsageEvent(
                    request_id="hist-" + uuid.uuid4().hex,
                    ts=ts,
                    endpoint="messages" if f.api == "anthropic" else "chat",
                    api=f.api,
                    requested_model=f.model,
                    served_model=SERVED.get(f.model, f.model),
                    provider="simulated",
                    status=200,
                    latency_ms=rng.uniform(200, 3000),
                    feature=f.name,
                    team=f.team,
                    use_case=f.use_case,
                    tenant=tenant,
                    user=f"{tenant}-u{rng.randrange(40)}",
                    input_tokens=rng.randrange(200, 4000),
                    output_tokens=rng.randrange(50, 800),
                    cost_nanos=cost,
                    baseline_nanos=cost,
                )
            )
    return events


def write_history(store: LedgerStore, **kwargs: Any) -> list[UsageEvent]:
    events = history_events(**kwargs)
    store.write_batch(events)
    return events
