"""The issue's test: one budget shared through real Redis by three gateway *processes*.

Three subprocesses each run a gateway (this file in `worker` mode: `GatewayServer` on a free
port, its own SQLite ledger, the Redis counter store with a unique key prefix) in front of
the session's simulated upstream. 300 concurrent requests, a quarter of them streamed, go
round-robin to the three against one hard budget worth about 50 of them. Then, with the
workers stopped gracefully (ledgers flushed, settlements done):

- admitted spend ≤ budget + the largest single reservation;
- every request has exactly one ledger row, and every refused one has its 429 row;
- the Redis counter equals the sum of the three ledgers exactly, with nothing reserved.

The budget is computed here from the published gpt-4o-mini prices and our own token count,
not read back from the gateway.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

REDIS_URL = "redis://127.0.0.1:6379/0"
N_REQUESTS = 300
N_WORKERS = 3
MAX_TOKENS = 64
WORTH = 50
# gpt-4o-mini list prices in nano-dollars per token ($0.15 / $0.60 per MTok).
INPUT_NANOS, OUTPUT_NANOS = 150, 600


def _redis_up() -> bool:
    try:
        import redis

        return bool(redis.Redis.from_url(REDIS_URL, socket_connect_timeout=0.5).ping())
    except Exception:
        return False


def _worker(config_path: str) -> None:
    """Run one gateway until stdin closes, then shut down gracefully (flush + settle)."""
    from spendgate.config import load_settings
    from spendgate.serve import GatewayServer
    from spendgate.server.app import Gateway

    server = GatewayServer(Gateway(load_settings(config_path))).start()
    print(f"READY {server.url}", flush=True)
    sys.stdin.read()
    server.stop()
    print("STOPPED", flush=True)


class _Fleet:
    def __init__(self, configs: list[Path]) -> None:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
        self.procs = [
            subprocess.Popen(
                [sys.executable, __file__, "worker", str(cfg)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
                env=env,
            )
            for cfg in configs
        ]
        self.urls: list[str] = []
        try:
            for proc in self.procs:
                assert proc.stdout is not None
                line = proc.stdout.readline()  # blocks until the worker's socket listens
                assert line.startswith("READY "), f"worker failed to start: {line!r}"
                self.urls.append(line.split()[1])
        except BaseException:
            for proc in self.procs:
                proc.kill()
                proc.wait()
            raise

    def stop(self) -> None:
        for proc in self.procs:
            if proc.stdin is not None and not proc.stdin.closed:
                proc.stdin.close()
        for proc in self.procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for proc in self.procs:
            assert proc.returncode == 0, f"worker exited with {proc.returncode}"


async def _drive(urls: list[str], feature: str, prompts: list[str]) -> list[tuple[int, str]]:
    import httpx2

    limits = httpx2.Limits(max_connections=N_REQUESTS, max_keepalive_connections=N_REQUESTS)
    async with httpx2.AsyncClient(timeout=60, limits=limits) as client:
        start = asyncio.Event()

        async def one(i: int) -> tuple[int, str]:
            body: dict[str, Any] = {
                "model": "gpt-4o-mini",
                "max_tokens": MAX_TOKENS,
                "messages": [{"role": "user", "content": prompts[i]}],
            }
            url = urls[i % len(urls)] + "/v1/chat/completions"
            headers = {"x-spendgate-feature": feature}
            await start.wait()
            if i % 4 == 3:
                body["stream"] = True
                async with client.stream("POST", url, json=body, headers=headers) as r:
                    async for _ in r.aiter_bytes():
                        pass
                    return r.status_code, r.headers["x-spendgate-request-id"]
            r = await client.post(url, json=body, headers=headers)
            return r.status_code, r.headers["x-spendgate-request-id"]

        tasks = [asyncio.ensure_future(one(i)) for i in range(N_REQUESTS)]
        start.set()  # all 300 go at once
        return list(await asyncio.gather(*tasks))


@pytest.mark.skipif(not _redis_up(), reason="Redis is not running on 127.0.0.1:6379")
def test_three_processes_share_one_budget_through_redis(sim: Any, tmp_path: Path) -> None:
    import redis
    import yaml

    from spendgate.ledger import open_ledger
    from spendgate.tokens import count_openai_request, estimated_counts

    prefix = f"sgtest-{uuid.uuid4().hex[:10]}:"
    feature = f"fleet-{uuid.uuid4().hex[:8]}"
    prompts = [f"Request {i}: write a short note about shared budgets." for i in range(N_REQUESTS)]
    with estimated_counts(upper=True):  # the manager reserves on this worst-case count
        worst = max(
            count_openai_request("gpt-4o-mini", {"messages": [{"role": "user", "content": p}]})
            * INPUT_NANOS
            + MAX_TOKENS * OUTPUT_NANOS
            for p in prompts
        )
    limit_nanos = WORTH * worst
    limit_usd = f"{limit_nanos / 1e9:.9f}"
    configs = []
    for w in range(N_WORKERS):
        folder = tmp_path / f"w{w}"
        folder.mkdir()
        settings = {
            "storage": {
                "ledger": f"sqlite:///{folder / 'ledger.db'}",
                "keys": f"sqlite:///{folder / 'keys.db'}",
            },
            "deployments": [
                {
                    "name": "sim",
                    "provider": "simulated",
                    "base_url": sim.url + "/v1",
                    "models": ["gpt-4o-mini"],
                }
            ],
            "budgets": {
                "store": REDIS_URL,
                "key_prefix": prefix,
                "fail_open": False,
                "redis_timeout_s": 5,
                "budgets": [
                    {
                        "name": "fleet",
                        "scope": {"feature": feature},
                        "period": "day",
                        "limit_usd": limit_usd,
                        "mode": "hard",
                    }
                ],
            },
        }
        path = folder / "spendgate.yaml"
        path.write_text(yaml.safe_dump(settings))
        configs.append(path)

    t0 = time.perf_counter()
    fleet = _Fleet(configs)
    t1 = time.perf_counter()
    try:
        results = asyncio.run(_drive(fleet.urls, feature, prompts))
    finally:
        t2 = time.perf_counter()
        fleet.stop()
    t3 = time.perf_counter()

    client = redis.Redis.from_url(REDIS_URL, decode_responses=True)
    try:
        counter_keys = [
            k for k in client.scan_iter(match=prefix + "c:b:fleet:*") if not k.endswith(":leases")
        ]
        spent_redis = sum(int(client.hget(k, "spent") or 0) for k in counter_keys)
        reserved_redis = sum(int(client.hget(k, "reserved") or 0) for k in counter_keys)
        leases_left = sum(client.zcard(k + ":leases") for k in counter_keys)
    finally:
        keys = list(client.scan_iter(match=prefix + "*"))
        if keys:
            client.delete(*keys)
        client.close()

    events = []
    for w in range(N_WORKERS):
        store = open_ledger(f"sqlite:///{tmp_path / f'w{w}' / 'ledger.db'}", create=False)
        events += list(store.events(filters={"feature": feature}))
        store.close()

    statuses = [s for s, _ in results]
    assert set(statuses) <= {200, 429}, sorted(set(statuses))
    admitted = statuses.count(200)
    assert admitted >= WORTH, admitted
    assert statuses.count(429) > 0

    by_id = {e.request_id: e for e in events}
    assert len(events) == N_REQUESTS == len(by_id), "one ledger row per request"
    for status, rid in results:
        assert by_id[rid].status == status
        if status == 429:
            assert by_id[rid].cost_nanos == 0
            assert by_id[rid].extra["decisions"]["budget"]["rejected_by"] == ["fleet"]

    for e in events:
        if e.status == 200:  # streamed or not, the row says what was settled
            assert e.extra["decisions"]["budget"]["settled_nanos"] == e.cost_nanos
    admitted_spend = sum(e.cost_nanos or 0 for e in events if e.status == 200)
    largest = max(e.extra["decisions"]["budget"]["reserved_nanos"] for e in events)
    assert largest <= worst
    assert admitted_spend <= limit_nanos + largest
    ledger_sum = sum(e.cost_nanos or 0 for e in events)
    assert spent_redis == ledger_sum
    assert reserved_redis == 0 and leases_left == 0
    print(
        f"\nfleet: {admitted} admitted / {N_REQUESTS}, spend {admitted_spend} of "
        f"{limit_nanos} nanos ({admitted_spend / limit_nanos:.1%}), worst case {worst}; "
        f"start {t1 - t0:.1f}s, {N_REQUESTS} requests {t2 - t1:.1f}s, stop {t3 - t2:.1f}s"
    )


@pytest.mark.skipif(not _redis_up(), reason="Redis is not running on 127.0.0.1:6379")
def test_library_mode_streams_settle_before_shutdown_completes(sim: Any, tmp_path: Path) -> None:
    """Streamed calls settle in tasks (Redis needs I/O, completion callbacks cannot await);
    closing the transport waits for them, so counters equal the ledger once it returns."""
    import httpx2
    import openai
    import redis

    from conftest import gateway_settings
    from spendgate.ledger import open_ledger
    from spendgate.library import SpendgateTransport

    prefix = f"sgtest-{uuid.uuid4().hex[:10]}:"
    feature = f"lib-{uuid.uuid4().hex[:8]}"
    settings = gateway_settings(
        sim,
        tmp_path,
        budgets={"store": REDIS_URL, "key_prefix": prefix, "fail_open": False,
                 "budgets": [{"name": "lib", "scope": {"feature": "*"}, "limit_usd": "5"}]},
    )  # fmt: skip
    transport = SpendgateTransport(settings)
    client = openai.OpenAI(base_url="http://spendgate/v1", api_key="x", max_retries=0,
                           http_client=httpx2.Client(transport=transport),
                           default_headers={"x-spendgate-feature": feature})  # fmt: skip
    try:
        for model in ("gpt-4o-mini", "claude-sonnet-4"):
            stream = client.chat.completions.create(
                model=model, max_tokens=40, stream=True,
                messages=[{"role": "user", "content": "Stream a few words."}],
            )  # fmt: skip
            assert sum(1 for _ in stream) > 1
        client.chat.completions.create(
            model="gpt-4o", max_tokens=20, messages=[{"role": "user", "content": "hi"}]
        )
    finally:
        client.close()  # graceful shutdown: stage settlements, then the ledger flush
    rc = redis.Redis.from_url(REDIS_URL, decode_responses=True)
    try:
        [key] = [k for k in rc.scan_iter(match=prefix + "c:b:lib:*") if not k.endswith("leases")]
        spent, reserved = int(rc.hget(key, "spent") or 0), int(rc.hget(key, "reserved") or 0)
    finally:
        keys = list(rc.scan_iter(match=prefix + "*"))
        if keys:
            rc.delete(*keys)
        rc.close()
    ledger = open_ledger(settings.storage.ledger)
    events = list(ledger.events(filters={"feature": feature}))
    ledger.close()
    assert len(events) == 3 and all(e.status == 200 for e in events)
    assert spent == sum(e.cost_nanos or 0 for e in events) > 0
    assert reserved == 0


if __name__ == "__main__" and len(sys.argv) == 3 and sys.argv[1] == "worker":
    _worker(sys.argv[2])
