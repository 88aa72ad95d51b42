"""Report latency over a big ledger, and sustained SQLite ingest with the rollup job running.

    .venv/bin/python bench/reports.py                    # 10 M events (a few minutes)
    .venv/bin/python bench/reports.py --events 1000000   # smaller
    .venv/bin/python bench/reports.py --json out.json    # also write the figures as JSON
    .venv/bin/python bench/reports.py --events 0 --ingest 1000000   # ingest only
    .venv/bin/python bench/reports.py --ingest 0 --ledger big.db    # keep the 10 M ledger;
                                        # run again to time the reports on it, no reload

Three parts:

1. **Ingest** (`--ingest N`, default 300k): N realistic events, generated in Python
   beforehand, written two ways — `write_batch` (the store alone, batches of `--batch`,
   default 500 like the gateway's `ledger.max_batch`: what the writer thread can sustain)
   and `batching_writer` (`submit()` from this thread while the `BatchingWriter` thread
   drains: the production path, producer and writer sharing the GIL) — each into a fresh
   ledger, with the rollup job running ("with_rollups") and with it off
   ("without_rollups"). Ingest is timed from the first write to the last commit
   (`close()` for the writer). With the job on, it also reports whether the job kept up:
   its own throughput (events folded per second of fold work), the largest backlog it
   met, the backlog (events, and seconds of ingest) when ingest stopped, and how long it
   then took to catch up. Without it, the time to fold everything afterwards in one go.
   `--paced R` adds a run with the job on where events are submitted at R events/s (the
   gateway's arrival rate, not flat out): does the job keep up at that rate?
2. **Bulk load** (`--events N`, default 10 M; 0 skips parts 2 and 3): N events over 30 days
   generated inside SQLite (a recursive CTE with deterministic pseudo-random columns —
   not `random()`, which SQLite re-evaluates at every reference to a CTE column): 20
   features each with a primary model, a cheap model that routing sends 25% of calls
   to, 500 tenants, 20k users, 3% errors, 0.5% unpriced; then `rebuild_rollups()`. This
   is a bulk insert, not the ingest path: it exists to get a 10 M-event ledger in minutes.
3. **Reports**: each report the admin API serves, run 3 times (the best and the median are
   printed), through `spendgate.analytics.reports` exactly as `/admin/*` calls it. Windows
   are whole days / a calendar month (what the dashboard and `--since DATE` send) and a
   ragged 7-day window (relative `--since 7d`), whose partial days are read from raw events.
   `--raw` also times the main query with the rollups switched off, for comparison;
   `--dashboard` times the dashboard's whole view (`/dashboard/api/summary`: every panel
   in one call) for a few ranges and filters over the same ledger.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from spendgate.analytics import reports
from spendgate.analytics.config import FeaturesConfig
from spendgate.analytics.tiers import TierClassifier
from spendgate.ledger import BatchingWriter, SQLiteLedger, UsageEvent
from spendgate.ledger.event import COLUMNS
from spendgate.ledger.rollups import DERIVED_COLUMNS
from spendgate.pricing import PriceCatalog

T0 = datetime(2026, 10, 1, tzinfo=UTC)
DAYS = 30
FEATURES = 20
TENANTS = 500
USERS = 20_000

# name, provider, input nanos/token, output nanos/token (list prices)
MODELS = [
    ("gpt-4o", "openai", 2500, 10000),
    ("gpt-4o-mini", "openai", 150, 600),
    ("claude-sonnet-4-20250514", "anthropic", 3000, 15000),
    ("claude-3-5-haiku-20241022", "anthropic", 800, 4000),
    ("o3-mini", "openai", 1100, 4400),
    ("gpt-4.1-mini", "openai", 400, 1600),
    ("gpt-4.1", "openai", 2000, 8000),
    ("text-embedding-3-small", "openai", 20, 0),
]
CHEAP = 1  # gpt-4o-mini: where routing sends calls


def python_events(n: int, seed: int = 1, span: float = DAYS * 86400) -> list[UsageEvent]:
    """`n` events evenly over `span` seconds from T0."""
    rnd = random.Random(seed)
    start = T0.timestamp()
    out = []
    for i in range(n):
        f = rnd.randrange(FEATURES)
        u = rnd.randrange(USERS)
        mr = rnd.randrange(100)
        primary = f % len(MODELS)
        served = primary if mr < 70 else CHEAP if mr < 95 else rnd.randrange(len(MODELS))
        name, provider, pin, pout = MODELS[served]
        status = 200 if rnd.random() < 0.97 else rnd.choice([429, 500])
        inp = 200 + rnd.randrange(3000) if status == 200 else 0
        outp = 20 + rnd.randrange(600) if status == 200 else 0
        cost = inp * pin + outp * pout
        savings = {}
        if 70 <= mr < 95 and status == 200:
            _, _, ppin, ppout = MODELS[primary]
            savings["routing"] = inp * ppin + outp * ppout - cost
        out.append(
            UsageEvent(
                request_id=f"ing-{seed}-{i}",
                ts=start + span * i / n,
                endpoint="embeddings" if f == FEATURES - 1 else "chat",
                api="openai",
                requested_model=MODELS[primary][0],
                served_model=name,
                provider=provider,
                status=status,
                latency_ms=rnd.uniform(100, 3000),
                feature=f"feature-{f}",
                use_case=f"uc-{f * 2 + rnd.randrange(2)}",
                team=f"team-{f % 6}",
                tenant=f"tenant-{u % TENANTS}",
                user=f"user-{u}",
                key_id=f"key-{f % 6}-{rnd.randrange(3)}",
                input_tokens=inp,
                output_tokens=outp,
                cost_nanos=cost,
                baseline_nanos=cost + sum(savings.values()),
                savings=savings,
                price_version="genai-prices bench",
                extra={"input_cost_nanos": inp * pin, "system_tokens": inp * (20 + f) // 100}
                if status == 200
                else None,
            )
        )
    return out


def measure_ingest(n: int, folder: Path, paced: int = 0, batch: int = 500) -> dict[str, Any]:
    """Events/s into the SQLite ledger, with and without the rollup job, two ways (see the
    module docstring), plus how the rollup job kept up."""
    # Arriving at the rate of 10 M events a month, as a live gateway would write them.
    events = python_events(n, span=n * DAYS * 86400 / 10_000_000)
    out: dict[str, Any] = {"events": n, "batch": batch}
    for label, rollups in (("with_rollups", True), ("without_rollups", False)):
        out[label] = {}
        for how in ("write_batch", "batching_writer"):
            store = SQLiteLedger(folder / f"ingest-{label}-{how}.db", rollup_job=rollups)
            t = time.perf_counter()
            if how == "write_batch":
                for i in range(0, n, batch):
                    store.write_batch(events[i : i + batch])
            else:
                writer = BatchingWriter(store, max_batch=batch, max_buffer=n + 1)
                for e in events:
                    writer.submit(e)
                writer.close()
            elapsed = time.perf_counter() - t
            rate = n / elapsed
            fig: dict[str, Any] = {"seconds": round(elapsed, 3), "events_per_s": round(rate)}
            stats = store.rollup_stats()
            fig["wal_mb_at_end"] = round(stats["checkpointer"]["wal_bytes"] / 2**20)
            if rollups:
                t = time.perf_counter()
                assert store.wait_folded()
                catch_up = time.perf_counter() - t
                after = store.rollup_stats()
                busy = after["busy_seconds"]
                fig["rollup_job"] = {
                    "folds": after["folds"],
                    "events_per_busy_s": round(after["events_folded"] / busy) if busy else None,
                    "busy_share": round(busy / (elapsed + catch_up), 2),
                    "max_backlog_events": after["max_backlog"],
                    "lag_at_end_events": stats["unfolded"],
                    "lag_at_end_s": round(stats["unfolded"] / rate, 2),
                    "catch_up_s": round(catch_up, 2),
                }
            else:
                t = time.perf_counter()
                store.flush_rollups()
                fig["fold_afterwards_s"] = round(time.perf_counter() - t, 2)
            assert store.count() == n
            assert store.rollup_stats()["unfolded"] == 0
            store.close()
            out[label][how] = fig
    if paced:
        out["paced"] = measure_paced(events, paced, folder, batch)
    return out


def measure_paced(events: list[UsageEvent], rate: int, folder: Path, batch: int) -> dict[str, Any]:
    """Submit `events` at `rate` per second through the BatchingWriter, rollup job on;
    sample the job's backlog every second."""
    store = SQLiteLedger(folder / "ingest-paced.db")
    writer = BatchingWriter(store, max_batch=batch, max_buffer=len(events) + 1)
    backlog: list[int] = []
    t0 = time.perf_counter()
    next_sample = t0 + 1.0
    step = 100  # events per pacing step
    for i in range(0, len(events), step):
        due = t0 + i / rate
        now = time.perf_counter()
        if due > now:
            time.sleep(due - now)
        for e in events[i : i + step]:
            writer.submit(e)
        if now >= next_sample:
            backlog.append(store.rollup_stats()["unfolded"])
            next_sample += 1.0
    writer.close()
    elapsed = time.perf_counter() - t0
    stats = store.rollup_stats()
    wal_mb = round(stats["checkpointer"]["wal_bytes"] / 2**20)
    t = time.perf_counter()
    assert store.wait_folded()
    catch_up = time.perf_counter() - t
    store.close()
    return {
        "target_events_per_s": rate,
        "events_per_s": round(len(events) / elapsed),
        "seconds": round(elapsed, 2),
        "backlog_samples_per_s": backlog,
        "max_backlog_events": max(backlog, default=0),
        "lag_at_end_events": stats["unfolded"],
        "catch_up_s": round(catch_up, 2),
        "job_events_per_busy_s": round(stats["events_folded"] / stats["busy_seconds"])
        if stats["busy_seconds"]
        else None,
        "job_busy_share": round(stats["busy_seconds"] / elapsed, 2),
        "wal_mb_at_end": wal_mb,
    }


def _case(index: str, values: list[str]) -> str:
    return (
        "CASE "
        + index
        + " "
        + " ".join(f"WHEN {i} THEN {v}" for i, v in enumerate(values))
        + " END"
    )


def bulk_load(path: Path, n: int) -> None:
    """N events generated inside SQLite (see the module docstring), on a connection of its
    own (no journal, indexes built once afterwards) into a ledger created and closed."""
    start = T0.timestamp()
    span = DAYS * 86400
    nm = len(MODELS)
    name = lambda ix: _case(ix, [f"'{m[0]}'" for m in MODELS])  # noqa: E731
    prov = lambda ix: _case(ix, [f"'{m[1]}'" for m in MODELS])  # noqa: E731
    pin = lambda ix: _case(ix, [str(m[2]) for m in MODELS])  # noqa: E731
    pout = lambda ix: _case(ix, [str(m[3]) for m in MODELS])  # noqa: E731
    cost = "(inp * " + pin("sv") + " + outp * " + pout("sv") + ")"
    pcost = "(inp * " + pin("pr") + " + outp * " + pout("pr") + ")"
    routed = "(mr >= 70 AND mr < 95 AND ok)"
    cols: dict[str, str] = {
        "request_id": "'b-' || i",
        "ts": f"{start} + {span}.0 * i / {n}",
        "day": f"strftime('%Y-%m-%d', {start} + {span}.0 * i / {n}, 'unixepoch')",
        "endpoint": f"CASE WHEN f = {FEATURES - 1} THEN 'embeddings' ELSE 'chat' END",
        "api": "'openai'",
        "feature": "'feature-' || f",
        "use_case": "'uc-' || (f * 2 + b % 2)",
        "team": "'team-' || (f % 6)",
        "tenant": f"'tenant-' || (u % {TENANTS})",
        "user": "'user-' || u",
        "key_id": "'key-' || (f % 6) || '-' || (b % 3)",
        "requested_model": name("pr"),
        "served_model": name("sv"),
        "provider": prov("sv"),
        "input_tokens": "inp",
        "output_tokens": "outp",
        "cost_nanos": f"CASE WHEN a % 200 = 7 THEN NULL ELSE {cost} END",
        "baseline_nanos": (
            f"CASE WHEN a % 200 = 7 THEN NULL ELSE "
            f"{cost} + CASE WHEN {routed} THEN {pcost} - {cost} ELSE 0 END END"
        ),
        "savings": f"CASE WHEN {routed} THEN json_object('routing', {pcost} - {cost}) "
        "ELSE '{}' END",
        "savings_nanos": f"CASE WHEN {routed} THEN {pcost} - {cost} ELSE 0 END",
        "price_version": "'genai-prices bench'",
        "attempts": "'[]'",
        "status": "CASE WHEN ok THEN 200 WHEN a % 2 = 0 THEN 429 ELSE 500 END",
        "latency_ms": "100 + c % 3000",
        "extra": (
            "CASE WHEN ok THEN json_object('input_cost_nanos', inp * "
            + pin("sv")
            + ", 'system_tokens', inp * (20 + f) / 100) ELSE NULL END"
        ),
        # What `write_batch` stores beside them (`rollups.DERIVED_COLUMNS`; 0 when absent).
        "system_tokens": "CASE WHEN ok THEN inp * (20 + f) / 100 ELSE 0 END",
        "input_cost_nanos": "CASE WHEN ok THEN inp * " + pin("sv") + " ELSE 0 END",
        # No `route` decisions here (routing shows in `savings`), and `extra` measures
        # every answered call that had input.
        "routed": "0",
        "measured": "CASE WHEN ok AND inp > 0 THEN 1 ELSE 0 END",
    }
    missing = [c for c in cols if c not in (*COLUMNS, *DERIVED_COLUMNS)]
    assert not missing, missing
    names = ", ".join(f'"{c}"' for c in cols)
    sql = f"""
    WITH RECURSIVE seq(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM seq WHERE i < {n - 1}),
    r AS (
        SELECT i, (i * 2654435761 + 97) % 4294967291 AS a,
               (i * 2246822519 + 3266489917) % 4294967279 AS b,
               (i * 3266489917 + 668265263) % 4294967231 AS c FROM seq
    ),
    d AS (
        SELECT i, a, b, c, a % {FEATURES} AS f, c % {USERS} AS u, b % 100 AS mr,
               (a / 7) % 100 < 97 AS ok, (a % {FEATURES}) % {nm} AS pr FROM r
    ),
    e AS (
        SELECT *, CASE WHEN mr < 70 THEN pr WHEN mr < 95 THEN {CHEAP}
                       ELSE (a / 20) % {nm} END AS sv,
               CASE WHEN ok THEN 200 + (a / 13) % 3000 ELSE 0 END AS inp,
               CASE WHEN ok THEN 20 + (b / 17) % 600 ELSE 0 END AS outp
        FROM d
    )
    INSERT INTO usage_events ({names}) SELECT {", ".join(cols.values())} FROM e
    """
    indexes = [
        "CREATE UNIQUE INDEX usage_events_request_id ON usage_events (request_id)",
        "CREATE INDEX usage_events_ts ON usage_events (ts)",
        "CREATE INDEX usage_events_feature_ts ON usage_events (feature, ts)",
        "CREATE INDEX usage_events_tenant_ts ON usage_events (tenant, ts)",
    ]
    SQLiteLedger(path, rollup_job=False).close()  # the schema
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        # A bulk load, not the ingest path: no journal, indexes built once afterwards.
        conn.execute("PRAGMA cache_size = -262144")  # 256 MB page cache
        conn.execute("PRAGMA journal_mode = OFF")
        conn.execute("PRAGMA synchronous = OFF")
        for statement in indexes:
            conn.execute("DROP INDEX " + statement.split(" INDEX ")[1].split(" ON ")[0])
        conn.execute("BEGIN")
        conn.execute(sql)
        conn.execute("COMMIT")
        for statement in indexes:
            conn.execute(statement)
        conn.execute("PRAGMA journal_mode = WAL")
    finally:
        conn.close()


def timed(fn: Callable[[], Any], runs: int = 3) -> dict[str, Any]:
    times = []
    result = None
    for _ in range(runs):
        t = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t)
    rows = len(result.get("rows", [])) if isinstance(result, dict) else len(result or [])
    return {
        "best_ms": round(min(times) * 1000, 1),
        "median_ms": round(statistics.median(times) * 1000, 1),
        "rows": rows,
    }


def measure_reports(store: SQLiteLedger, raw: bool) -> dict[str, Any]:
    month = T0.strftime("%Y-%m")
    end = T0 + timedelta(days=DAYS)
    whole = reports.Window(T0, end)
    week = reports.Window(end - timedelta(days=7), end)
    ragged_end = end - timedelta(hours=3, minutes=17)
    ragged = reports.Window(ragged_end - timedelta(days=7), ragged_end)
    now = end + timedelta(days=1)
    features = FeaturesConfig.model_validate(
        {f"feature-{i}": {"revenue_usd_per_month": 1000 * i} for i in range(FEATURES)}
    )
    tiers = TierClassifier(PriceCatalog.default())
    queries: dict[str, Callable[[], Any]] = {
        "spend by feature,model (30 days)": lambda: reports.spend_report(
            store, ["feature", "model"], whole, {}
        ),
        "spend by feature,model (ragged 7 days)": lambda: reports.spend_report(
            store, ["feature", "model"], ragged, {}
        ),
        "spend by day (30 days)": lambda: reports.spend_report(store, ["day"], whole, {}),
        "spend by team,use_case,status (30 days)": lambda: reports.spend_report(
            store, ["team", "use_case", "status"], whole, {}
        ),
        "spend by tenant (30 days)": lambda: reports.spend_report(store, ["tenant"], whole, {}),
        "spend by tenant (ragged 7 days)": lambda: reports.spend_report(
            store, ["tenant"], ragged, {}
        ),
        "spend by model, tenant=tenant-7 (7 days)": lambda: reports.spend_report(
            store, ["model"], week, {"tenant": "tenant-7"}
        ),
        "spend by user (30 days)": lambda: reports.spend_report(store, ["user"], whole, {}),
        "unit economics by feature (month)": lambda: reports.unit_economics(
            store, features, month, {}, now=now
        ),
        "tier trends by day (30 days)": lambda: reports.tier_trends(store, tiers, whole, {}),
        "system-prompt share by feature (30 days)": lambda: reports.system_prompt_report(
            store, ["feature"], whole, {}
        ),
        "savings by technique by feature (30 days)": lambda: reports.savings_report(
            store, ["feature"], whole, {}
        ),
        "feature economics (month)": lambda: reports.feature_economics(
            store, features, month, {}, now=now
        ),
    }
    out = {name: timed(fn) for name, fn in queries.items()}
    if raw:
        store.use_rollups = False
        out["RAW spend by feature,model (30 days), no rollups"] = timed(
            queries["spend by feature,model (30 days)"], runs=1
        )
        store.use_rollups = True
    return out


def measure_dashboard(store: SQLiteLedger) -> dict[str, Any]:
    """The dashboard's one JSON view (`server.dashboard.data.summary`, what
    `/dashboard/api/summary` returns) over the same ledger: every panel in one call."""
    from spendgate.server.dashboard import data

    end = T0 + timedelta(days=DAYS)
    tiers = TierClassifier(PriceCatalog.default())
    views = {
        "dashboard, 30 days": data.Query(T0, end),
        "dashboard, 7 days": data.Query(end - timedelta(days=7), end),
        "dashboard, 24 h (hourly)": data.Query(end - timedelta(days=1), end),
        "dashboard, 30 days, feature=feature-3": data.Query(T0, end, {"feature": "feature-3"}),
        "dashboard, 30 days, tenant=tenant-7": data.Query(T0, end, {"tenant": "tenant-7"}),
    }
    out = {}
    for name, q in views.items():
        out[name] = timed(lambda q=q: data.summary(store, tiers, q, now=end))
        out[name]["rows"] = 0
    return out


def rollup_sizes(store: SQLiteLedger) -> dict[str, int]:
    from spendgate.ledger.rollups import OUTCOME_ROLLUP, ROLLUPS, SAVINGS_ROLLUP

    tables = [r.table for r in (*ROLLUPS, SAVINGS_ROLLUP, OUTCOME_ROLLUP)]
    with store._reader() as conn:
        return {t: conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in tables}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--events", type=int, default=10_000_000, help="events to bulk-load")
    ap.add_argument("--ingest", type=int, default=300_000, help="events for the ingest test")
    ap.add_argument(
        "--paced", type=int, default=0, help="also ingest at this rate (events/s), job on"
    )
    ap.add_argument(
        "--batch", type=int, default=500, help="events per write (the gateway's ledger.max_batch)"
    )
    ap.add_argument("--dir", default=None, help="where to put the ledgers (default: temp)")
    ap.add_argument(
        "--ledger",
        default=None,
        help="bulk-load into this file and keep it; if it exists, time the reports on it as is",
    )
    ap.add_argument("--raw", action="store_true", help="also time one query without rollups")
    ap.add_argument(
        "--dashboard", action="store_true", help="also time the dashboard's view over the ledger"
    )
    ap.add_argument("--json", dest="json_path", default=None, help="write figures as JSON")
    args = ap.parse_args()

    tmp = tempfile.TemporaryDirectory(dir=args.dir)
    folder = Path(tmp.name)
    figures: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {sys.version.split()[0]}",
        "sqlite": sqlite3.sqlite_version,
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }
    try:
        if args.ingest:
            print(f"ingest: {args.ingest:,} events, batches of {args.batch}, 4 runs …", flush=True)
            figures["ingest"] = measure_ingest(args.ingest, folder, args.paced, args.batch)
            for k in ("with_rollups", "without_rollups"):
                for how, v in figures["ingest"][k].items():
                    line = (
                        f"  {k:16} {how:16} {v['events_per_s']:>9,} events/s ({v['seconds']} s, "
                        f"WAL {v['wal_mb_at_end']} MB)"
                    )
                    if "rollup_job" in v:
                        j = v["rollup_job"]
                        line += (
                            f"; job {j['events_per_busy_s']:,} events/busy-s, "
                            f"busy {j['busy_share']:.0%}, {j['folds']} folds, "
                            f"max backlog {j['max_backlog_events']:,}, "
                            f"lag at end {j['lag_at_end_events']:,} events "
                            f"({j['lag_at_end_s']} s), caught up in {j['catch_up_s']} s"
                        )
                    else:
                        line += f"; folding it all afterwards: {v['fold_afterwards_s']} s"
                    print(line, flush=True)
            if args.paced:
                p = figures["ingest"]["paced"]
                print(
                    f"  paced at {p['target_events_per_s']:,}/s: {p['events_per_s']:,} events/s; "
                    f"rollup backlog max {p['max_backlog_events']:,} events (sampled each s), "
                    f"{p['lag_at_end_events']:,} at end, caught up in {p['catch_up_s']} s; job "
                    f"{p['job_events_per_busy_s']:,} events/busy-s, busy {p['job_busy_share']:.0%}",
                    flush=True,
                )
        figures["load_average_after_ingest"] = [round(x, 2) for x in os.getloadavg()]
        if args.events:
            run_reports(args, folder, figures)
    finally:
        tmp.cleanup()
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(figures, indent=2) + "\n")


def run_reports(args: argparse.Namespace, folder: Path, figures: dict[str, Any]) -> None:
    """Parts 2 and 3: bulk load, rollup rebuild, report latency."""
    path = Path(args.ledger) if args.ledger else folder / "big.db"
    load_s = rebuild_s = None
    if path.exists():
        print(f"reusing {path} (no bulk load, no rebuild)", flush=True)
        store = SQLiteLedger(path, create=False, rollup_job=False)
        store.flush_rollups()
    else:
        print(f"bulk load: {args.events:,} events …", flush=True)
        t = time.perf_counter()
        bulk_load(path, args.events)
        load_s = round(time.perf_counter() - t, 1)
        store = SQLiteLedger(path, rollup_job=False)
        t = time.perf_counter()
        store.rebuild_rollups()
        rebuild_s = round(time.perf_counter() - t, 1)
    size = path.stat().st_size
    figures["ledger"] = {
        "events": store.count(),
        "bulk_load_s": load_s,
        "rebuild_rollups_s": rebuild_s,
        "file_mb": round(size / 2**20),
        "rollup_rows": rollup_sizes(store),
    }
    print(
        f"  loaded in {load_s} s, rollups rebuilt in {rebuild_s} s, "
        f"file {size / 2**20:,.0f} MB; rollup rows: {figures['ledger']['rollup_rows']}"
    )
    print("reports (best / median of 3):", flush=True)
    figures["reports"] = measure_reports(store, args.raw)
    for name, v in figures["reports"].items():
        print(f"  {name:48} {v['best_ms']:>9,.1f} ms  {v['median_ms']:>9,.1f} ms  "
              f"{v['rows']:>6} rows")  # fmt: skip
    worst = max(v["median_ms"] for k, v in figures["reports"].items() if "RAW" not in k)
    figures["worst_median_ms"] = worst
    print(f"slowest report (median): {worst:,.1f} ms")
    if args.dashboard:
        print("dashboard views (best / median of 3):", flush=True)
        figures["dashboard"] = measure_dashboard(store)
        for name, v in figures["dashboard"].items():
            print(f"  {name:48} {v['best_ms']:>9,.1f} ms  {v['median_ms']:>9,.1f} ms")
    store.close()


if __name__ == "__main__":
    main()
