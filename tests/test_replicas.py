"""Many replicas, one ledger: 3 gateway processes share a PostgreSQL ledger (a schema of
their own per test run) and the simulated upstream.

Each replica is a real subprocess running the gateway under uvicorn on a socket this test
bound and passed down (so clients can connect at once — the kernel queues connections
until the app accepts them; no readiness polling). Mixed load (OpenAI chat plain and
streamed, Anthropic messages plain and streamed, through raw HTTP and the real SDKs, plus
bad requests) goes to all three concurrently; then SIGTERM → lifespan shutdown flushes
each writer. Exactly one ledger row must exist per request id any response carried.

Two of the replicas hold every event until shutdown (`flush_interval_s: 600`), so the test
also proves that a graceful stop loses nothing; the third writes continuously, racing the
others on the migration and on partition creation.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import anthropic
import httpx2
import openai
import psycopg
import pytest
import yaml

from conftest import Harness, gateway_settings
from spendgate.ledger.postgres import PostgresLedger
from spendgate.simulated import SimulatedUpstream

PG = "postgresql://postgres@127.0.0.1:5432/test"
REPLICAS = 3
REQUESTS = 330

CHILD = """
import socket, sys
import uvicorn
from spendgate.config import load_settings
from spendgate.serve import _uvicorn_config
from spendgate.server.app import Gateway

sock = socket.socket(fileno=int(sys.argv[2]))
gateway = Gateway(load_settings(sys.argv[1]))
uvicorn.Server(_uvicorn_config(gateway, "127.0.0.1", 0)).run(sockets=[sock])
"""


def _pg_available() -> bool:
    try:
        with psycopg.connect(PG, connect_timeout=2):
            return True
    except psycopg.Error:
        return False


pytestmark = pytest.mark.skipif(not _pg_available(), reason="PostgreSQL not reachable")


class Replica:
    def __init__(self, config: Path) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0), backlog=1024)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        fd = self.sock.fileno()
        self.proc = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(config), str(fd)],
            pass_fds=[fd],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )

    def stop(self) -> tuple[int, str]:
        _, err = self.proc.communicate(timeout=60)
        self.sock.close()
        return self.proc.returncode, err


@pytest.fixture
def ledger_url() -> Iterator[str]:
    schema = f"sgrep_{uuid.uuid4().hex[:12]}"
    yield f"{PG}?schema={schema}"
    with psycopg.connect(PG, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'.encode())


def start_replicas(
    sim: SimulatedUpstream,
    ledger_url: str,
    folder: Path,
    *,
    count: int = REPLICAS,
    hold: bool = True,
    **extra: Any,
) -> list[Replica]:
    """`REPLICAS` gateway processes sharing `ledger_url`. With `hold`, all but the first keep
    every event until shutdown (`flush_interval_s: 600`)."""
    started: list[Replica] = []
    for i in range(count):
        home = folder / f"replica{i}"
        home.mkdir(parents=True)
        ledger = {"flush_interval_s": 600, "max_batch": 100_000} if hold and i else {}
        settings = gateway_settings(
            sim, home, storage={"ledger": ledger_url}, ledger=ledger, **extra
        )
        config = home / "spendgate.yaml"
        config.write_text(yaml.safe_dump(settings.model_dump(mode="json", exclude_none=True)))
        started.append(Replica(config))
    return started


def stop_all(replicas: list[Replica]) -> None:
    """SIGTERM → uvicorn's graceful shutdown → the gateway's lifespan flushes its ledger."""
    for replica in replicas:
        replica.proc.send_signal(signal.SIGTERM)
    for replica in replicas:
        code, err = replica.stop()
        # uvicorn re-raises the captured SIGTERM once its graceful shutdown is done.
        assert code in (0, -signal.SIGTERM), err[-2000:]
        assert "Traceback" not in err, err[-2000:]


@pytest.fixture
def cluster(sim: SimulatedUpstream, ledger_url: str, tmp_path: Path) -> Iterator[Any]:
    made: list[Replica] = []

    def start(**kw: Any) -> list[Replica]:
        replicas = start_replicas(sim, ledger_url, tmp_path / f"c{len(made)}", **kw)
        made.extend(replicas)
        return replicas

    yield start
    for replica in made:
        if replica.proc.poll() is None:
            replica.proc.kill()
            replica.proc.wait()
        replica.sock.close()


# (kind, share of the load)
KINDS = ["chat", "chat", "chat-stream", "chat-stream", "messages", "messages-stream",
         "sdk-chat", "sdk-messages", "bad-json", "bad-model", "bad-param"]  # fmt: skip
EXPECTED_STATUS = {"bad-json": 400, "bad-model": 404, "bad-param": 400}


async def _one(
    client: httpx2.AsyncClient,
    oai: openai.AsyncOpenAI,
    claude: anthropic.AsyncAnthropic,
    url: str,
    i: int,
    feature: str,
) -> tuple[str, str, int]:
    kind = KINDS[i % len(KINDS)]
    headers = {"x-spendgate-feature": feature, "x-spendgate-team": f"team{i % 4}"}
    prompt = [{"role": "user", "content": f"replica load {i}: say something short"}]
    if kind == "sdk-chat":
        raw = await oai.chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=prompt, max_tokens=40,  # type: ignore[arg-type]
            extra_headers=headers,
        )  # fmt: skip
        assert raw.parse().choices[0].message.content
        return kind, raw.headers["x-spendgate-request-id"], raw.status_code
    if kind == "sdk-messages":
        raw_m = await claude.messages.with_raw_response.create(
            model="claude-sonnet-4", max_tokens=40, messages=prompt,  # type: ignore[arg-type]
            extra_headers=headers,
        )  # fmt: skip
        assert (await raw_m.parse()).content
        return kind, raw_m.headers["x-spendgate-request-id"], raw_m.status_code
    path = "/v1/messages" if kind.startswith("messages") else "/v1/chat/completions"
    body: Any
    if kind.startswith("messages"):
        body = {"model": "claude-sonnet-4", "max_tokens": 40, "messages": prompt,
                "stream": kind.endswith("stream")}  # fmt: skip
    elif kind.startswith("chat"):
        body = {"model": "gpt-4o", "messages": prompt, "stream": kind.endswith("stream")}
    elif kind == "bad-model":
        body = {"model": "gpt-9-ultra", "messages": prompt}
    elif kind == "bad-param":
        body = {"model": "gpt-4o", "messages": prompt, "temperature": 5}
    else:
        body = None
    content = b'{"model": "gpt-4o", "messages": [' if body is None else json.dumps(body).encode()
    headers["content-type"] = "application/json"
    async with client.stream("POST", url + path, content=content, headers=headers) as r:
        chunks = [chunk async for chunk in r.aiter_bytes()]
    text = b"".join(chunks).decode()
    if kind.endswith("stream"):
        assert r.status_code == 200 and ("[DONE]" in text or "message_stop" in text), text[:300]
    elif kind in EXPECTED_STATUS:
        assert r.status_code == EXPECTED_STATUS[kind], text
        assert json.loads(text)["error"]["message"]
    else:
        assert r.status_code == 200, text
    return kind, r.headers["x-spendgate-request-id"], r.status_code


async def _drive(urls: list[str], feature: str) -> list[tuple[str, str, int]]:
    limits = httpx2.Limits(max_connections=64)
    async with httpx2.AsyncClient(timeout=60, limits=limits) as client:
        sdks = [
            (
                openai.AsyncOpenAI(base_url=u + "/v1", api_key="unused", max_retries=0),
                anthropic.AsyncAnthropic(base_url=u, api_key="unused", max_retries=0),
            )
            for u in urls
        ]
        gate = asyncio.Semaphore(48)

        async def one(i: int) -> tuple[str, str, int]:
            async with gate:
                oai, claude = sdks[i % len(urls)]
                return await _one(client, oai, claude, urls[i % len(urls)], i, feature)

        results = await asyncio.gather(*(one(i) for i in range(REQUESTS)))
        for oai, claude in sdks:
            await oai.close()
            await claude.close()
        return list(results)


def test_three_replicas_one_ledger_row_per_request(cluster: Any, ledger_url: str) -> None:
    replicas = cluster()
    feature = f"replicas-{uuid.uuid4().hex[:8]}"
    results = asyncio.run(_drive([r.url for r in replicas], feature))
    assert len(results) == REQUESTS

    metrics = [httpx2.get(r.url + "/metrics", timeout=10).text for r in replicas]
    for text in metrics:
        assert "spendgate_ledger_dropped 0.0" in text
    # The held-back replicas have written nothing yet: shutdown must do it.
    with PostgresLedger(ledger_url) as early:
        before_stop = early.count()
    assert before_stop < REQUESTS

    stop_all(replicas)

    with PostgresLedger(ledger_url, create=False) as ledger:
        rows = list(ledger.events())
        seen = Counter(e.request_id for e in rows)
        sent = {request_id: (kind, status) for kind, request_id, status in results}
        assert len(sent) == REQUESTS, "request ids are unique"
        assert [rid for rid, n in seen.items() if n > 1] == []  # no duplicates
        assert set(seen) == set(sent)  # no loss, nothing extra
        assert ledger.count() == REQUESTS
        for event in rows:
            kind, status = sent[event.request_id]
            assert event.status == status, (kind, event)
            if status == 200:
                assert event.feature == feature
                assert event.cost_nanos is not None and event.cost_nanos > 0, event
                assert event.stream == kind.endswith("stream")
        # Reports over the shared ledger add up to its rows, exactly.
        (everything,) = ledger.spend([])
        kinds = Counter(kind for kind, _, _ in results)
        assert everything.calls == REQUESTS
        assert everything.errors == sum(kinds[k] for k in EXPECTED_STATUS)
        assert everything.cost_nanos == sum(e.cost_nanos or 0 for e in rows)
        by_team = ledger.spend(["team"], filters={"feature": feature})
        tagged = [e for e in rows if e.feature == feature]
        assert len(tagged) >= REQUESTS - everything.errors  # every success, some refusals
        assert sum(r.calls for r in by_team) == len(tagged)
        assert sum(r.cost_nanos for r in by_team) == sum(e.cost_nanos or 0 for e in tagged)
        assert len(by_team) == 4


# --------------------------------------------------------------------------- shared budget

REDIS = "redis://127.0.0.1:6379/0"
BUDGET_REQUESTS = 300


def _redis_available() -> bool:
    try:
        import redis

        return bool(redis.Redis.from_url(REDIS, socket_connect_timeout=1).ping())
    except Exception:
        return False


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    if not _redis_available():
        pytest.skip("Redis not reachable")
    import redis

    prefix = f"sgrep-{uuid.uuid4().hex[:10]}:"
    yield prefix
    client = redis.Redis.from_url(REDIS)
    keys = list(client.scan_iter(match=prefix + "*"))
    if keys:
        client.delete(*keys)
    client.close()


def test_three_replicas_hold_one_shared_redis_budget(
    cluster: Any, ledger_url: str, redis_prefix: str, make_gateway: Callable[..., Harness]
) -> None:
    """300 concurrent calls at 3 replicas against a hard budget worth ~50 of them: admitted
    spend ≤ budget + the largest single reservation; each refusal has its ledger row; the
    Redis counter equals the ledger's admitted spend exactly."""
    from spendgate.budgets.redis_store import RedisStore

    team = f"team-{uuid.uuid4().hex[:8]}"
    prompt = [{"role": "user", "content": "budget load: say something short"}]
    body = {"model": "gpt-4o-mini", "max_tokens": 20, "messages": prompt}

    # Price one call (on an in-process gateway) to size the budget at ~50 calls.
    r = httpx2.post(make_gateway().v1 + "/chat/completions", json=body, timeout=30)
    assert r.status_code == 200, r.text
    one_call_nanos = int(Decimal(r.headers["x-spendgate-cost-usd"]) * 10**9)
    assert one_call_nanos > 0
    limit_nanos = 50 * one_call_nanos

    budgets = {
        "store": REDIS,
        "key_prefix": redis_prefix,
        "fail_open": False,
        "budgets": [{"name": "shared", "scope": {"team": team}, "period": "day",
                     "limit_usd": str(Decimal(limit_nanos) / 10**9), "mode": "hard"}],
    }  # fmt: skip
    replicas = cluster(budgets=budgets)
    urls = [rep.url for rep in replicas]

    async def fire() -> list[tuple[str, int]]:
        limits = httpx2.Limits(max_connections=96)
        async with httpx2.AsyncClient(timeout=60, limits=limits) as client:

            async def one(i: int) -> tuple[str, int]:
                payload = {**body, "stream": i % 3 == 1}
                url = urls[i % len(urls)] + "/v1/chat/completions"
                async with client.stream(
                    "POST", url, json=payload, headers={"x-spendgate-team": team}
                ) as resp:
                    text = b"".join([c async for c in resp.aiter_bytes()]).decode()
                assert resp.status_code in (200, 429), text
                if resp.status_code == 429:
                    assert "shared" in json.loads(text)["error"]["message"]
                return resp.headers["x-spendgate-request-id"], resp.status_code

            return list(await asyncio.gather(*(one(i) for i in range(BUDGET_REQUESTS))))

    results = asyncio.run(fire())
    stop_all(replicas)

    statuses = dict(results)
    assert len(statuses) == BUDGET_REQUESTS
    admitted = [rid for rid, status in results if status == 200]
    refused = [rid for rid, status in results if status == 429]
    assert admitted and refused, Counter(statuses.values())

    with PostgresLedger(ledger_url, create=False) as ledger:
        rows = [e for e in ledger.events(filters={"team": team})]
    by_id = {e.request_id: e for e in rows}
    assert len(rows) == len(by_id) == BUDGET_REQUESTS  # one row per call, refusals included
    assert set(by_id) == set(statuses)
    for rid in refused:
        event = by_id[rid]
        assert event.status == 429 and not event.cost_nanos
        assert event.extra is not None
        assert event.extra["decisions"]["budget"]["rejected_by"] == ["shared"]
    spent = sum(by_id[rid].cost_nanos or 0 for rid in admitted)
    largest = max(e.extra["decisions"]["budget"]["reserved_nanos"] for e in rows if e.extra)
    assert spent <= limit_nanos + largest, (spent, limit_nanos, largest)
    print(f"budget: {len(admitted)} admitted, {len(refused)} refused; spent {spent} of "
          f"{limit_nanos} nanos (largest reservation {largest})")  # fmt: skip

    async def counters() -> dict[str, Any]:
        store = RedisStore(REDIS, prefix=redis_prefix)
        try:
            return await store.scan("b:shared:")
        finally:
            await store.aclose()

    states = asyncio.run(counters())
    assert sum(s.spent for s in states.values()) == spent
    assert sum(s.reserved for s in states.values()) == 0
