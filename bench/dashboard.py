"""How long the dashboard's one JSON view takes on a big ledger.

Fills a SQLite ledger with N synthetic events spread over 30 days (demo-shaped: 5 features,
12 tenants, 480 users, 10% cache hits, 5% routed), starts a real gateway on it, and times
`GET /dashboard/api/summary` (what the page fetches on every load or filter change) for
several ranges and a tag filter: median and max of `--repeat` runs, wall clock through
HTTP.

    .venv/bin/python bench/dashboard.py [--events 200000] [--repeat 3] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx2

from spendgate.config import simulated_settings
from spendgate.ledger import UsageEvent, open_ledger
from spendgate.serve import GatewayServer
from spendgate.server.app import Gateway

FEATURES = [("support-chat", "support", "gpt-4o"), ("search-answers", "growth", "gpt-4o-mini"),
            ("code-assistant", "platform", "claude-sonnet-4-20250514"),
            ("doc-summarizer", "platform", "claude-3-5-haiku-20241022"),
            ("email-drafts", "growth", "o3-mini")]  # fmt: skip


def fill(url: str, n: int, seed: int = 3) -> float:
    rng = random.Random(seed)
    store = open_ledger(url)
    now = datetime.now(UTC).timestamp()
    started = time.perf_counter()
    batch: list[UsageEvent] = []
    for _ in range(n):
        feature, team, model = rng.choice(FEATURES)
        tenant = f"tenant-{rng.randrange(12)}"
        cost = rng.randrange(10_000, 8_000_000)
        hit = rng.random() < 0.10
        routed = not hit and model == "gpt-4o" and rng.random() < 0.25
        batch.append(UsageEvent(
            request_id=uuid.uuid4().hex, ts=now - rng.uniform(0, 30 * 86400), endpoint="chat",
            api="openai", requested_model=model.split("-2025")[0].split("-2024")[0],
            served_model="gpt-4o-mini" if routed else model, provider="simulated",
            status=200 if rng.random() > 0.01 else 502, latency_ms=300.0, feature=feature,
            team=team, tenant=tenant, user=f"{tenant}-u{rng.randrange(40)}",
            input_tokens=rng.randrange(100, 3000), output_tokens=rng.randrange(20, 800),
            cost_nanos=0 if hit else cost, baseline_nanos=cost,
            savings={"cache": cost} if hit else {}, cache="hit" if hit else "miss",
            route={"requested": "gpt-4o", "served": "gpt-4o-mini", "mode": "active"}
            if routed else None,
        ))  # fmt: skip
        if len(batch) == 5000:
            store.write_batch(batch)
            batch = []
    store.write_batch(batch)
    store.close()
    return time.perf_counter() - started


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", dest="json_path")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="spendgate-dash-bench-"))
    url = f"sqlite:///{tmp / 'ledger.db'}"
    fill_s = fill(url, args.events)
    print(f"filled {args.events:,} events in {fill_s:.1f}s", flush=True)
    os.environ["SPENDGATE_BENCH_ADMIN_KEY"] = key = uuid.uuid4().hex
    settings = simulated_settings("http://127.0.0.1:9", storage={
        "ledger": url, "keys": f"sqlite:///{tmp / 'keys.db'}"},
        server={"admin_key_env": "SPENDGATE_BENCH_ADMIN_KEY"})  # fmt: skip
    server = GatewayServer(Gateway(settings)).start()
    cases = [("24h", {}), ("7d", {}), ("30d", {}), ("30d", {"team": "growth"}),
             ("30d", {"tenant": "tenant-3"})]  # fmt: skip
    results: list[dict[str, Any]] = []
    try:
        with httpx2.Client(base_url=server.url, timeout=300,
                           headers={"authorization": f"Bearer {key}"}) as client:  # fmt: skip
            for since, filters in cases:
                times = []
                calls = 0
                for _ in range(args.repeat):
                    t = time.perf_counter()
                    r = client.get("/dashboard/api/summary", params={"since": since, **filters})
                    times.append((time.perf_counter() - t) * 1000)
                    assert r.status_code == 200, r.text
                    calls = r.json()["totals"]["calls"]
                row = {"since": since, "filters": filters, "events_in_view": calls,
                       "median_ms": round(statistics.median(times), 1),
                       "max_ms": round(max(times), 1)}  # fmt: skip
                results.append(row)
                label = since + "".join(f" {k}={v}" for k, v in filters.items())
                print(f"{label:<24} {calls:>9,} events  median {row['median_ms']:>8.1f} ms  "
                      f"max {row['max_ms']:>8.1f} ms", flush=True)  # fmt: skip
    finally:
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(
            {"events": args.events, "fill_seconds": round(fill_s, 2), "cases": results,
             "date": datetime.now(UTC).isoformat()}, indent=2))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
