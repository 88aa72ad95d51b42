"""PostgreSQL ledger: ingest through the production path, idempotent re-sends, spend queries.

    .venv/bin/python bench/ledger_postgres.py                  # 100k events
    .venv/bin/python bench/ledger_postgres.py --events 500000
    .venv/bin/python bench/ledger_postgres.py --json out.json  # also write the figures

Needs PostgreSQL (default postgresql://postgres@127.0.0.1:5432/test, `--url` to change).
Works in a schema of its own (`spendgate_bench_<random>`), dropped at the end.

1. **Ingest**: realistic events (30 days, 20 features, 500 tenants, 3% errors) generated
   up front, then `BatchingWriter` → `PostgresLedger.write_batch` (COPY into a temp table +
   `INSERT … ON CONFLICT DO NOTHING`, partitions made on demand), timed from the first
   submit to `close()`.
2. **Re-send**: the same events written again with `write_batch` (every row a conflict):
   what a retry after an ambiguous failure costs.
3. **Spend queries**: `spend()` over the whole ledger and over one day (partition pruning),
   best and median of 3.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from spendgate.ledger import BatchingWriter, UsageEvent
from spendgate.ledger.postgres import PostgresLedger

T0 = datetime(2026, 10, 1, tzinfo=UTC)
DAYS = 30
MODELS = [("gpt-4o", 2500, 10000), ("gpt-4o-mini", 150, 600), ("claude-sonnet-4", 3000, 15000)]


def make_events(n: int, seed: int = 1) -> list[UsageEvent]:
    rng = random.Random(seed)
    start = T0.timestamp()
    out = []
    for i in range(n):
        model, pin, pout = rng.choice(MODELS)
        tin, tout = rng.randrange(50, 4000), rng.randrange(10, 800)
        cost = tin * pin + tout * pout
        failed = rng.random() < 0.03
        out.append(
            UsageEvent(
                request_id=f"sg-{uuid.UUID(int=rng.getrandbits(128)).hex}",
                ts=start + (i / n) * DAYS * 86400,
                endpoint="chat",
                api="openai",
                requested_model=model,
                served_model=None if failed else model,
                provider="openai",
                status=502 if failed else 200,
                latency_ms=rng.uniform(100, 3000),
                feature=f"feature-{rng.randrange(20)}",
                team=f"team-{rng.randrange(8)}",
                tenant=f"tenant-{rng.randrange(500)}",
                user=f"user-{rng.randrange(20000)}",
                input_tokens=0 if failed else tin,
                output_tokens=0 if failed else tout,
                cost_nanos=0 if failed else cost,
                baseline_nanos=0 if failed else cost,
                attempts=[{"deployment": "openai", "status": 502 if failed else 200}],
            )
        )
    return out


def timed(fn: Callable[[], Any], repeat: int = 3) -> dict[str, float]:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return {
        "best_ms": round(min(times) * 1000, 1),
        "median_ms": round(statistics.median(times) * 1000, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--json", dest="json_path", default=None)
    args = parser.parse_args()

    schema = f"spendgate_bench_{uuid.uuid4().hex[:8]}"
    url = f"{args.url}{'&' if '?' in args.url else '?'}schema={schema}"
    figures: dict[str, Any] = {
        "events": args.events,
        "batch": args.batch,
        "python": platform.python_version(),
        "machine": platform.machine(),
    }
    t = time.perf_counter()
    events = make_events(args.events)
    print(f"generated {len(events):,} events in {time.perf_counter() - t:.1f}s", file=sys.stderr)
    store = PostgresLedger(url)
    try:
        with psycopg.connect(args.url, autocommit=True) as conn:
            figures["postgres"] = conn.info.server_version

        writer = BatchingWriter(store, max_batch=args.batch)
        t = time.perf_counter()
        for e in events:
            writer.submit(e)
        writer.close()
        elapsed = time.perf_counter() - t
        stats = writer.stats()
        assert stats["written"] == len(events) and store.count() == len(events), stats
        figures["ingest_events_per_s"] = round(len(events) / elapsed)
        figures["ingest_batches"] = stats["batches"]
        figures["partitions"] = len(store.partitions())

        t = time.perf_counter()
        for i in range(0, len(events), args.batch):
            store.write_batch(events[i : i + args.batch])
        elapsed = time.perf_counter() - t
        assert store.count() == len(events)
        figures["resend_events_per_s"] = round(len(events) / elapsed)

        one_day = T0 + timedelta(days=12)
        figures["spend_by_feature_all"] = timed(lambda: store.spend(["feature"]))
        figures["spend_by_tenant_model_all"] = timed(lambda: store.spend(["tenant", "model"]))
        figures["spend_by_feature_one_day"] = timed(
            lambda: store.spend(["feature"], since=one_day, until=one_day + timedelta(days=1))
        )
        figures["spend_filtered_tenant"] = timed(
            lambda: store.spend(["model"], filters={"tenant": "tenant-7"})
        )
    finally:
        store.close()
        with psycopg.connect(args.url, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'.encode())

    for key, value in figures.items():
        print(f"{key:>28}: {value}")
    if args.json_path:
        with open(args.json_path, "w") as f:
            json.dump(figures, f, indent=2)


if __name__ == "__main__":
    main()
