"""Faults on purpose, measured: budgets while Redis is paused or restarted empty, ledger rows
across SIGKILL and a SIGTERM with PostgreSQL down, memory over a soak, latency of the first
requests after a start. Every service is this script's own (redis-server on a free port,
an initdb'd PostgreSQL cluster, gateway processes); the machine's are never touched.

    python bench/faults.py [--json] [--only fuzz,hostile,budgets,shutdown,soak,cold-start]
                           [--quick]

It prints one table, tried / failed / lost per area (what each column counts is in the
area's notes), and each area's figures. `AREAS` is a list of (name, function): an area is
one function `fn(ctx) -> AreaResult`; add one by appending to it.

Areas:
- fuzz: schemathesis from `GET /openapi.json` (bench/fuzz_openapi.py), valid and invalid
  requests. failed = 5xx not from upstream + dropped connections, lost = request ids
  without exactly one ledger row.
- hostile: 1,500 random bodies over both wire formats (bench/hostile_bodies.py), then 8
  concurrent 50 MB header blocks; failed = 5xx, dropped, or a header block not refused
  with 431; RSS before and after; lost = bodies without exactly one row.
- budgets: 3 gateways, one hard budget ($0.50/day; `--quick`: a smaller one), traffic until
  the budget refuses, with Redis paused (SIGSTOP/SIGCONT) or killed and restarted empty in
  the middle, fail-open and fail-closed. tried = scenarios, failed = scenarios whose
  overshoot passed one reservation per replica or whose counters ≠ ledger afterwards,
  lost = USD admitted beyond that bound (sum over scenarios).
- shutdown: SIGKILL under load and SIGTERM with PostgreSQL down. tried = requests
  answered, lost = answered requests without a ledger row after the next start.
- soak: RSS growth of one gateway (budgets, cache, trim on) under steady traffic.
- cold-start: p50/p99 latency of the first requests after a start, at concurrency 1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import faultkit

# gpt-4o list prices in nano-dollars per token ($2.50 / $10 per MTok)
GPT4O_IN, GPT4O_OUT = 2500, 10_000


@dataclass
class AreaResult:
    name: str
    tried: int = 0
    failed: int = 0
    lost: float = 0
    notes: str = ""
    details: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Ctx:
    upstream: str
    home: Path
    quick: bool = False


# ----------------------------------------------------------------------------- traffic


async def _drive(
    urls: list[str],
    feature: str,
    *,
    concurrency: int,
    max_requests: int,
    max_tokens: int,
    on_progress: Callable[[int, int], Any] | None = None,
    stop_after_refusals: int = 0,
) -> list[tuple[int, str]]:
    """Round-robin requests at `concurrency` until `max_requests`, or until
    `stop_after_refusals` 429s in a row once `on_progress` said the fault phase is over."""
    import httpx2

    results: list[tuple[int, str]] = []
    sent = 0
    refusals_in_row = 0
    done = asyncio.Event()
    limits = httpx2.Limits(max_connections=concurrency * 2)
    async with httpx2.AsyncClient(timeout=60, limits=limits) as client:

        async def worker() -> None:
            nonlocal sent, refusals_in_row
            while not done.is_set() and sent < max_requests:
                i = sent
                sent += 1
                body = {
                    "model": "gpt-4o",
                    "max_tokens": max_tokens,
                    "messages": [{"role": "user", "content": f"{feature} request {i}: go on."}],
                }
                if i % 4 == 3:
                    body["stream"] = True
                url = urls[i % len(urls)] + "/v1/chat/completions"
                headers = {"x-spendgate-feature": feature}
                if body.get("stream"):
                    async with client.stream("POST", url, json=body, headers=headers) as r:
                        async for _ in r.aiter_bytes():
                            pass
                        status, rid = r.status_code, r.headers["x-spendgate-request-id"]
                else:
                    r = await client.post(url, json=body, headers=headers)
                    status, rid = r.status_code, r.headers["x-spendgate-request-id"]
                results.append((status, rid))
                ok = sum(1 for s, _ in results if s == 200)
                keep_going = on_progress(len(results), ok) if on_progress else True
                refusals_in_row = refusals_in_row + 1 if status == 429 else 0
                if (
                    stop_after_refusals
                    and keep_going is False
                    and refusals_in_row >= stop_after_refusals
                ):
                    done.set()

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return results


# ----------------------------------------------------------------------------- budgets


def budget_scenario(
    ctx: Ctx,
    fault: str,
    fail_open: bool,
    *,
    limit_usd: str = "0.50",
    replicas: int = 3,
    max_tokens: int = 256,
    concurrency: int = 6,
    fault_s: float = 1.5,
) -> dict[str, Any]:
    """`fault`: "pause" (SIGSTOP for `fault_s`, then SIGCONT) or "restart" (SIGKILL, then
    a new empty redis-server on the same port after `fault_s`). The fault starts once
    admitted spend is about 40 % of the budget (estimated from admitted requests)."""
    from spendgate.call import to_nanos
    from spendgate.ledger import open_ledger

    redis = faultkit.RedisServer()
    home = Path(tempfile.mkdtemp(prefix=f"sg-budget-{fault}-", dir=ctx.home))
    feature = f"bf-{uuid.uuid4().hex[:8]}"
    limit_nanos = to_nanos(Decimal(limit_usd))
    budgets = {
        "store": redis.url,
        "key_prefix": "sgf:",
        "fail_open": fail_open,
        "redis_timeout_s": 0.5,
        "budgets": [
            {"name": "fleet", "scope": {"feature": feature}, "period": "day",
             "limit_usd": limit_usd, "mode": "hard"}
        ],
    }  # fmt: skip
    gws = []
    for w in range(replicas):
        cfg = faultkit.gateway_config(home / f"w{w}", ctx.upstream, budgets=budgets)
        gws.append(faultkit.GatewayProcess(cfg))
    for gw in gws:
        gw.ready()
    # one call's worst case (input ≈ 20 tokens): the fault starts near 40 % of the budget
    per_call = 20 * GPT4O_IN + max_tokens * GPT4O_OUT
    typical = per_call // 2
    state = {"phase": "before", "t": 0.0}
    fault_at = max(1, int(0.4 * limit_nanos / typical))

    def progress(total: int, ok: int) -> bool:
        if state["phase"] == "before" and ok >= fault_at:
            state["phase"], state["t"] = "during", time.monotonic()
            if fault == "pause":
                redis.pause()
            else:
                redis.kill()
        elif state["phase"] == "during" and time.monotonic() - state["t"] >= fault_s:
            state["phase"] = "after"
            if fault == "pause":
                redis.resume()
            else:
                redis.start()
        if os.environ.get("SG_DEBUG") and state["phase"] == "after" and not state.get("dumped"):
            c = redis.client()
            keys = [k for k in c.scan_iter(match="sgf:c:*")]
            if keys and time.monotonic() - state["t"] > fault_s + 0.3:
                state["dumped"] = True
                for k in keys:
                    print(
                        k,
                        c.hgetall(k) if not k.endswith("leases") else c.zrange(k, 0, -1),
                        file=sys.stderr,
                    )
        return state["phase"] != "after"  # False: the fault is over, stop on refusals

    t0 = time.monotonic()
    results = asyncio.run(
        _drive(
            [g.url for g in gws],
            feature,
            concurrency=concurrency,
            max_requests=int(3 * limit_nanos / typical) + 20_000,
            max_tokens=max_tokens,
            on_progress=progress,
            stop_after_refusals=3 * concurrency,
        )
    )
    if state["phase"] == "during":  # traffic ended inside the fault: end it
        redis.resume() if fault == "pause" else redis.start()
    elapsed = time.monotonic() - t0
    codes = [gw.stop() for gw in gws]

    client = redis.client()
    keys = [k for k in client.scan_iter(match="sgf:c:b:fleet:*") if not k.endswith(":leases")]
    spent = sum(int(client.hget(k, "spent") or 0) for k in keys)
    reserved = sum(int(client.hget(k, "reserved") or 0) for k in keys)
    leases = sum(client.zcard(k + ":leases") for k in keys)
    client.close()
    redis.stop()

    events = []
    for w in range(replicas):
        store = open_ledger(f"sqlite:///{home / f'w{w}' / 'ledger.db'}", create=False)
        events += list(store.events(filters={"feature": feature}))
        store.close()
    statuses = [s for s, _ in results]
    admitted = sum(e.cost_nanos or 0 for e in events if e.status == 200)
    ledger_sum = sum(e.cost_nanos or 0 for e in events)
    reservations = [
        e.extra["decisions"]["budget"]["reserved_nanos"]
        for e in events
        if e.extra and "budget" in e.extra.get("decisions", {})
    ]
    largest = max(reservations or [per_call])
    overshoot = admitted - limit_nanos
    bound = replicas * largest
    decisions = [
        e.extra["decisions"]["budget"]
        for e in events
        if e.extra and "budget" in e.extra.get("decisions", {})
    ]
    return {
        "scenario": f"{fault}-{'open' if fail_open else 'closed'}",
        "fail_open_admitted": sum(1 for d in decisions if d.get("fail_open")),
        "store_errors": sum(1 for d in decisions if d.get("store_error")),
        "requests": len(results),
        "ok": statuses.count(200),
        "refused_429": statuses.count(429),
        "refused_503": statuses.count(503),
        "rows": len(events),
        "limit_usd": limit_nanos / 1e9,
        "admitted_usd": round(admitted / 1e9, 6),
        "overshoot_pct": round(100 * overshoot / limit_nanos, 2),
        "overshoot_usd": round(max(0, overshoot) / 1e9, 6),
        "bound_usd": round(bound / 1e9, 6),
        "within_bound": overshoot <= bound,
        "counter_usd": round(spent / 1e9, 9),
        "ledger_usd": round(ledger_sum / 1e9, 9),
        "counter_equals_ledger": spent == ledger_sum,
        "reserved_left": reserved,
        "leases_left": leases,
        "gateway_exit_codes": codes,
        "seconds": round(elapsed, 1),
    }


def area_budgets(ctx: Ctx) -> AreaResult:
    out = AreaResult("budgets")
    limit = "0.05" if ctx.quick else "0.50"
    for fault in ("pause", "restart"):
        for fail_open in (True, False):
            r = budget_scenario(ctx, fault, fail_open, limit_usd=limit)
            out.details.append(r)
            out.tried += 1
            bad = (
                not r["within_bound"]
                or not r["counter_equals_ledger"]
                or r["reserved_left"]
                or r["leases_left"]
                or r["rows"] != r["requests"]
            )
            out.failed += int(bool(bad))
            if not r["within_bound"]:
                out.lost += r["overshoot_usd"] - r["bound_usd"]
    out.notes = "scenarios; lost = USD admitted past 1 reservation per replica"
    return out


# ----------------------------------------------------------------------------- shutdown


def sigkill_scenario(ctx: Ctx, *, requests: int = 1600, concurrency: int = 32) -> dict[str, Any]:
    """Kill -9 a gateway while `concurrency` requests are in flight and most events are
    still in its buffer; restart it; count rows against answered requests."""
    from spendgate.ledger import open_ledger

    home = Path(tempfile.mkdtemp(prefix="sg-kill-", dir=ctx.home))
    feature = f"kill-{uuid.uuid4().hex[:8]}"
    cfg = faultkit.gateway_config(home, ctx.upstream, ledger={"flush_interval_s": 2.0})
    gw = faultkit.GatewayProcess(cfg)
    gw.ready()
    kill_at = int(requests * 0.9)

    def progress(total: int, ok: int) -> bool:
        if total == kill_at:
            gw.signal(signal.SIGKILL)
        return True

    results = asyncio.run(_drive_tolerant(gw.url, feature, requests, concurrency, progress))
    gw.wait()
    again = faultkit.GatewayProcess(cfg)
    again.stop()
    store = open_ledger(f"sqlite:///{home / 'ledger.db'}", create=False)
    rows = {e.request_id for e in store.events(filters={"feature": feature})}
    store.close()
    answered = [rid for status, rid in results if rid]
    lost = [rid for rid in answered if rid not in rows]
    return {
        "scenario": "sigkill",
        "answered": len(answered),
        "failed_connections": sum(1 for _, rid in results if not rid),
        "rows": len(rows),
        "lost": len(lost),
        "recovered_log": "recovered" in again.log(),
    }


async def _drive_tolerant(
    url: str, feature: str, n: int, concurrency: int, progress: Callable[[int, int], Any]
) -> list[tuple[int, str]]:
    """Like `_drive` on one gateway, but a dropped connection is a result ("", 0)."""
    import httpx2

    results: list[tuple[int, str]] = []
    sent = 0
    async with httpx2.AsyncClient(timeout=30) as client:

        async def worker() -> None:
            nonlocal sent
            while sent < n:
                i = sent
                sent += 1
                body = {
                    "model": "gpt-4o-mini",
                    "max_tokens": 16,
                    "messages": [{"role": "user", "content": f"{feature} {i}"}],
                }
                try:
                    r = await client.post(
                        url + "/v1/chat/completions",
                        json=body,
                        headers={"x-spendgate-feature": feature},
                    )
                    results.append((r.status_code, r.headers.get("x-spendgate-request-id", "")))
                except httpx2.HTTPError:
                    results.append((0, ""))
                progress(len(results), 0)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return results


def pg_down_scenario(ctx: Ctx, *, requests: int = 400, grace: float = 3.0) -> dict[str, Any]:
    """SIGTERM a gateway whose PostgreSQL ledger is stopped; time the exit; start both
    again; count rows."""
    from spendgate.ledger import open_ledger

    pg = faultkit.PostgresServer()
    try:
        home = Path(tempfile.mkdtemp(prefix="sg-pgdown-", dir=ctx.home))
        feature = f"pgdown-{uuid.uuid4().hex[:8]}"
        from spendgate.config import LedgerConfig

        ledger: dict[str, Any] = {}
        if "spool" in LedgerConfig.model_fields:  # (older code, for before/after figures)
            ledger = {"spool": str(home / "spool"), "shutdown_grace_s": grace}
        cfg = faultkit.gateway_config(home, ctx.upstream, storage={"ledger": pg.url}, ledger=ledger)
        gw = faultkit.GatewayProcess(cfg)
        gw.ready()
        first = asyncio.run(_drive_tolerant(gw.url, feature, requests // 2, 8, lambda *_: 0))
        pg.stop("fast")
        second = asyncio.run(_drive_tolerant(gw.url, feature, requests // 2, 8, lambda *_: 0))
        t0 = time.monotonic()
        gw.signal(signal.SIGTERM)
        try:
            code = gw.wait(120)
        except subprocess.TimeoutExpired:
            gw.kill()  # it would wait for PostgreSQL without limit
            code = -9
        exit_s = time.monotonic() - t0
        pg.start()
        again = faultkit.GatewayProcess(cfg)
        again.stop()
        store = open_ledger(pg.url)
        rows = {e.request_id for e in store.events(filters={"feature": feature})}
        store.close()
        answered = [rid for _, rid in first + second if rid]
        return {
            "scenario": "sigterm-pg-down",
            "answered": len(answered),
            "rows": len(rows),
            "lost": sum(1 for rid in answered if rid not in rows),
            "exit_s": round(exit_s, 2),
            "grace_s": grace,
            "exit_code": code,
        }
    finally:
        pg.destroy()


def area_shutdown(ctx: Ctx) -> AreaResult:
    out = AreaResult("shutdown")
    kill = sigkill_scenario(ctx, requests=400 if ctx.quick else 1600)
    out.details.append(kill)
    results = [kill]
    if faultkit.have_postgres():
        pgd = pg_down_scenario(ctx, requests=100 if ctx.quick else 400)
        out.details.append(pgd)
        results.append(pgd)
        if pgd["exit_s"] > pgd["grace_s"] + 5:
            out.failed += 1
    for r in results:
        out.tried += r["answered"]
        out.lost += r["lost"]
        out.failed += r["lost"]
    out.notes = "requests answered; lost = answered without a ledger row after restart"
    return out


# ----------------------------------------------------------------------------- soak + cold


def _rss_kb(pid: int, field: str = "VmRSS") -> int:
    """RSS of a process in kB; `field` RssAnon (heap) or RssFile (mapped files: SQLite's
    mmap of the ledger, shared libraries) splits it."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


SOAK_CONFIGS: dict[str, dict[str, Any]] = {
    # what the issue measured: budgets and the exact cache
    "budgets+cache": {
        "budgets": {"budgets": [{"name": "soak", "period": "day", "limit_usd": "1000"}]},
        "cache": {"enabled": True},
    },
    # every stage that holds memory: + semantic cache (embedder, index) + prompt caching
    # (which counts Claude prompts exactly, so ctok loads too)
    "all": {
        "budgets": {"budgets": [{"name": "soak", "period": "day", "limit_usd": "1000"}]},
        "cache": {"enabled": True, "semantic": {"enabled": True}},
        "prefix": {"enabled": True},
    },
}


def soak_scenario(
    ctx: Ctx, *, seconds: float = 120, concurrency: int = 4, config: str = "budgets+cache"
) -> dict[str, Any]:
    """One gateway (`SOAK_CONFIGS[config]`), steady mixed traffic (OpenAI and Anthropic
    models, streams, repeats, unique users); RSS sampled every 5 s; growth from the first
    sample after warm-up (20 % of the run) to the end, per minute."""
    import httpx2

    home = Path(tempfile.mkdtemp(prefix="sg-soak-", dir=ctx.home))
    cfg = faultkit.gateway_config(home, ctx.upstream, **SOAK_CONFIGS[config])
    gw = faultkit.GatewayProcess(cfg)
    started_kb = _rss_kb(gw.proc.pid)
    gw.ready()
    idle_kb = _rss_kb(gw.proc.pid)
    del started_kb
    samples: list[tuple[float, int]] = []
    anon: list[tuple[float, int]] = []
    t0 = time.monotonic()

    async def run() -> int:
        n = 0
        async with httpx2.AsyncClient(timeout=30) as client:

            async def worker(w: int) -> None:
                nonlocal n
                while time.monotonic() - t0 < seconds:
                    i = n
                    n += 1
                    model = "claude-3-5-haiku" if i % 3 == 0 else "gpt-4o-mini"
                    body: dict[str, Any] = {
                        "model": model,
                        "max_tokens": 64,
                        "messages": [
                            {"role": "system", "content": f"You are assistant {i % 7}."},
                            {"role": "user", "content": f"Question {i % 500} by user {i}"},
                        ],
                    }
                    if i % 5 == 4:
                        body["stream"] = True
                    headers = {"x-spendgate-feature": f"f{i % 5}", "x-spendgate-user": f"u{i}",
                               "x-spendgate-tenant": f"t{i % 50}"}  # fmt: skip
                    r = await client.post(
                        gw.url + "/v1/chat/completions", json=body, headers=headers
                    )
                    r.read()

            async def sampler() -> None:
                while time.monotonic() - t0 < seconds:
                    samples.append((time.monotonic() - t0, _rss_kb(gw.proc.pid)))
                    anon.append((time.monotonic() - t0, _rss_kb(gw.proc.pid, "RssAnon")))
                    await asyncio.sleep(5)  # a sampling period, not synchronisation

            await asyncio.gather(sampler(), *(worker(w) for w in range(concurrency)))
            return n

    requests = asyncio.run(run())
    samples.append((time.monotonic() - t0, _rss_kb(gw.proc.pid)))
    anon.append((time.monotonic() - t0, _rss_kb(gw.proc.pid, "RssAnon")))
    file_kb = _rss_kb(gw.proc.pid, "RssFile")
    gw.stop()
    warm_anon = [a for a in anon if a[0] >= seconds * 0.2] or anon
    (xa, ya), (xb, yb) = warm_anon[0], warm_anon[-1]
    anon_per_min = (yb - ya) / 1024 / max(1e-9, (xb - xa) / 60)
    warm = [s for s in samples if s[0] >= seconds * 0.2] or samples
    (ta, ra), (tb, rb) = warm[0], warm[-1]
    per_min = (rb - ra) / 1024 / max(1e-9, (tb - ta) / 60)
    # Bounded caches fill early and then stop: the last third shows whether growth goes on.
    late = [s for s in samples if s[0] >= seconds * 2 / 3] or samples
    (tl, rl) = late[0]
    late_per_min = (rb - rl) / 1024 / max(1e-9, (tb - tl) / 60)
    return {
        "scenario": f"soak {config}",
        "seconds": round(samples[-1][0], 1),
        "requests": requests,
        "rss_ready_mb": round(idle_kb / 1024, 1),
        "rss_peak_mb": round(max(r for _, r in samples) / 1024, 1),
        "rss_end_mb": round(rb / 1024, 1),
        "growth_mb_per_min": round(per_min, 2),
        "growth_last_third_mb_per_min": round(late_per_min, 2),
        "rss_end_anon_mb": round(yb / 1024, 1),
        "rss_end_file_mb": round(file_kb / 1024, 1),
        "anon_growth_mb_per_min": round(anon_per_min, 2),
    }


def cold_start_scenario(ctx: Ctx, *, seconds: float = 8.0) -> dict[str, Any]:
    """Start a gateway (budgets + cache on) and send requests one at a time for `seconds`
    from the moment it accepts connections; latency of each (first ones vs the rest)."""
    import httpx2

    home = Path(tempfile.mkdtemp(prefix="sg-cold-", dir=ctx.home))
    cfg = faultkit.gateway_config(
        home, ctx.upstream,
        budgets={"budgets": [{"name": "cold", "period": "day", "limit_usd": "1000"}]},
        cache={"enabled": True},
    )  # fmt: skip
    from spendgate.tokens import count_text

    for model in ("gpt-4o-mini", "claude-3-5-haiku"):  # the simulated upstream's tokenizers,
        count_text(model, "warm up")  # in this process: not part of the gateway's start
    gw = faultkit.GatewayProcess(cfg)
    started = time.monotonic()
    health = gw.ready()
    ready_s = time.monotonic() - started
    lat: list[float] = []
    with httpx2.Client(timeout=30) as client:
        t0 = time.monotonic()
        i = 0
        while time.monotonic() - t0 < seconds:
            model = "claude-3-5-haiku" if i % 2 else "gpt-4o-mini"
            text = f"cold {i} {uuid.uuid4().hex}"
            body = {"model": model, "max_tokens": 16,
                    "messages": [{"role": "user", "content": text}]}  # fmt: skip
            s = time.perf_counter()
            r = client.post(gw.url + "/v1/chat/completions", json=body)
            lat.append((time.perf_counter() - s) * 1000)
            assert r.status_code == 200, r.text
            i += 1
    gw.stop()
    first = lat[:20]
    rest = lat[20:] or lat
    return {
        "scenario": "cold-start",
        "ready_s": round(ready_s, 2),
        "healthz": health.get("status"),
        "requests": len(lat),
        "first20_p50_ms": round(statistics.median(first), 2),
        "first20_max_ms": round(max(first), 2),
        "p99_ms": round(_pct(lat, 99), 2),
        "rest_p99_ms": round(_pct(rest, 99), 2),
    }


def _pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p / 100))]


def area_soak(ctx: Ctx) -> AreaResult:
    out = AreaResult("soak")
    for config in SOAK_CONFIGS:
        r = soak_scenario(ctx, seconds=30 if ctx.quick else 180, config=config)
        out.details.append(r)
        out.tried += r["requests"]
        out.failed += int(r["rss_peak_mb"] > 150)
    peaks = ", ".join(f"{d['scenario'][5:]} {d['rss_peak_mb']} MB" for d in out.details)
    growth = ", ".join(str(d["growth_mb_per_min"]) for d in out.details)
    out.notes = f"requests; failed = peak RSS > 150 MB; peak {peaks}; MB/min {growth}"
    return out


def area_cold_start(ctx: Ctx) -> AreaResult:
    r = cold_start_scenario(ctx)
    return AreaResult("cold-start", tried=r["requests"], details=[r],
                      notes=f"requests; p99 {r['p99_ms']} ms over {8}s from start")  # fmt: skip


def area_fuzz(ctx: Ctx) -> AreaResult:
    """schemathesis from the gateway's own OpenAPI document, positive and negative."""
    from fuzz_openapi import run_against_fresh_gateway

    r = run_against_fresh_gateway(examples=40 if ctx.quick else 300, seed=7)
    failed = len(r["server_errors"]) + len(r["dropped"])
    return AreaResult(
        "fuzz", tried=r["tried"], failed=failed, lost=r["lost_rows"] + r["duplicate_rows"],
        details=[{k: v for k, v in r.items() if k != "by_operation"}],
        notes=f"requests; failed = 5xx not from upstream + dropped connections; "
        f"lost = missing + duplicate rows; statuses {r['statuses']}",
    )  # fmt: skip


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _raw(url: str, head: bytes) -> bytes:
    import contextlib
    import socket
    from urllib.parse import urlsplit

    where = urlsplit(url)
    with socket.create_connection((where.hostname, where.port), timeout=60) as s:
        with contextlib.suppress(OSError):
            s.sendall(head)
        with contextlib.suppress(OSError):
            return s.recv(200)
    return b""


def area_hostile(ctx: Ctx) -> AreaResult:
    """Random bodies over both formats, and 8 concurrent 50 MB header blocks (the probe's
    attack: RSS 238 → 618 MB)."""
    import random
    from collections import Counter
    from concurrent.futures import ThreadPoolExecutor

    import httpx2

    from hostile_bodies import random_body

    home = Path(tempfile.mkdtemp(prefix="sg-hostile-", dir=ctx.home))
    gw = faultkit.GatewayProcess(faultkit.gateway_config(home, ctx.upstream))
    gw.ready()
    rnd = random.Random(20261205)
    statuses: Counter[int] = Counter()
    ids: list[str] = []
    failed = dropped = 0
    n = 300 if ctx.quick else 1500
    with httpx2.Client(timeout=30) as client:
        for _ in range(n):
            path, body = random_body(rnd)
            try:
                r = client.post(gw.url + path, content=json.dumps(body),
                                headers={"content-type": "application/json"})  # fmt: skip
            except httpx2.HTTPError:
                dropped += 1
                continue
            statuses[r.status_code] += 1
            failed += r.status_code >= 500
            ids.append(r.headers.get("x-spendgate-request-id", ""))
    before = _rss_mb(gw.proc.pid)
    head = b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nx-big: " + b"a" * 50_000_000
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: _raw(gw.url, head), range(8)))
    after = _rss_mb(gw.proc.pid)
    refused = sum(a.startswith(b"HTTP/1.1 431") for a in answers)
    gw.stop()
    from spendgate.ledger import open_ledger

    store = open_ledger(f"sqlite:///{(home / 'ledger.db').resolve()}")
    rows = Counter(e.request_id for e in store.events())
    store.close()
    lost = sum(1 for i in ids if rows[i] != 1)
    detail = {"scenario": "hostile", "bodies": n, "statuses": dict(statuses),
              "dropped": dropped, "header_attacks": 8, "header_431": refused,
              "rss_before_mb": round(before, 1), "rss_after_mb": round(after, 1)}  # fmt: skip
    return AreaResult(
        "hostile", tried=n + 8, failed=failed + dropped + (8 - refused), lost=lost,
        details=[detail],
        notes=f"bodies + header attacks; failed = 5xx, dropped, or a header attack not "
        f"refused with 431; RSS {detail['rss_before_mb']} -> {detail['rss_after_mb']} MB",
    )  # fmt: skip


AREAS: list[tuple[str, Callable[[Ctx], AreaResult]]] = [
    ("fuzz", area_fuzz),
    ("hostile", area_hostile),
    ("budgets", area_budgets),
    ("shutdown", area_shutdown),
    ("soak", area_soak),
    ("cold-start", area_cold_start),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--only", default="", help="comma-separated area names")
    ap.add_argument("--quick", action="store_true", help="smaller budgets and shorter runs")
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from spendgate.simulated import SimulatedUpstream

    wanted = {a for a in args.only.split(",") if a}
    results: list[AreaResult] = []
    with (
        tempfile.TemporaryDirectory(prefix="sg-faults-") as home,
        SimulatedUpstream(latency="none") as sim,
    ):
        ctx = Ctx(sim.url, Path(home), quick=args.quick)
        for name, fn in AREAS:
            if wanted and name not in wanted:
                continue
            results.append(fn(ctx))
            # each area as it finishes, on stderr: a later failure keeps these figures
            print(json.dumps(results[-1].__dict__), file=sys.stderr, flush=True)
    if args.json:
        print(json.dumps([r.__dict__ for r in results], indent=2))
        return
    print(f"{'area':<12} {'tried':>8} {'failed':>7} {'lost':>10}  notes")
    for r in results:
        print(f"{r.name:<12} {r.tried:>8} {r.failed:>7} {r.lost:>10.6g}  {r.notes}")
    for r in results:
        for d in r.details:
            print(json.dumps(d))


if __name__ == "__main__":
    main()
