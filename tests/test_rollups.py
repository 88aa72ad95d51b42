"""Rollup tables on a real SQLite ledger: every rollup-backed answer must equal the answer
recomputed here in plain Python from the events, for aligned and ragged windows, filters,
re-sent batches, and a ledger migrated from schema v1. The background job itself (folding
while writes go on, v2 migration, lag) is tested in tests/test_rollup_job.py."""

from __future__ import annotations

import random
import sqlite3
from collections import defaultdict
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from spendgate.ledger import NONE_LABEL, SQLiteLedger, UsageEvent
from spendgate.ledger import rollups as R
from spendgate.ledger.event import COLUMNS

T0 = datetime(2026, 10, 1, tzinfo=UTC).timestamp()


def make_events(n: int, seed: int = 3, prefix: str = "r") -> list[UsageEvent]:
    rnd = random.Random(seed)
    out = []
    for i in range(n):
        requested = rnd.choice(["gpt-4o", "gpt-4o-mini", "claude-sonnet-4"])
        served = rnd.choice([None, requested, "gpt-4o-mini"])
        status = rnd.choice([200] * 8 + [429, 500])
        cost = rnd.randrange(0, 5_000_000) if rnd.random() > 0.1 else None
        savings = {}
        if rnd.random() < 0.3:
            savings["routing"] = rnd.randrange(0, 10**6)
        if rnd.random() < 0.2:
            savings["cache"] = rnd.randrange(0, 10**6)
        inp = rnd.randrange(0, 4000)
        extra: dict[str, Any] | None = None
        if rnd.random() < 0.7 and inp:
            extra = {"input_cost_nanos": rnd.randrange(0, 3_000_000)}
            if rnd.random() < 0.6:
                extra["system_tokens"] = rnd.randrange(0, inp + 50)
        out.append(
            UsageEvent(
                request_id=f"{prefix}-{i}",
                ts=T0 + rnd.uniform(0, 6 * 86400),
                endpoint=rnd.choice(["chat", "messages", "embeddings"]),
                api="openai",
                requested_model=requested,
                served_model=served,
                status=status,
                latency_ms=1.0,
                feature=rnd.choice([None, "search", "chat", "summarize"]),
                use_case=rnd.choice([None, "qa", "draft"]),
                team=rnd.choice([None, "core", "growth"]),
                tenant=rnd.choice([None, "acme", "globex", "initech"]),
                user=rnd.choice([None, *[f"u{k}" for k in range(25)]]),
                key_id=rnd.choice([None, "k1", "k2"]),
                provider=rnd.choice([None, "openai", "anthropic"]),
                input_tokens=inp,
                output_tokens=rnd.randrange(0, 900),
                cache_read_tokens=rnd.randrange(0, 100),
                cost_nanos=cost,
                baseline_nanos=None if cost is None else cost + sum(savings.values()),
                savings=savings,
                extra=extra,
            )
        )
    return out


def _key(e: UsageEvent, dim: str) -> str:
    value = {"model": e.model, "day": e.day}.get(dim)
    if value is None and dim not in ("model", "day"):
        value = getattr(e, dim)
    return NONE_LABEL if value is None else str(value)


def expected(
    events: list[UsageEvent], by: list[str], since: float | None, until: float | None,
    filters: dict[str, str],
) -> dict[tuple[str, ...], dict[str, int]]:  # fmt: skip
    groups: dict[tuple[str, ...], dict[str, int]] = {}
    for e in events:
        if (since is not None and e.ts < since) or (until is not None and e.ts >= until):
            continue
        if any(_key(e, d) != v for d, v in filters.items()):
            continue
        acc = groups.setdefault(tuple(_key(e, d) for d in by), dict.fromkeys(R.AGGREGATES, 0))
        sys_tok = sys_cost = in_cost = 0
        if e.extra and e.input_tokens:
            sys_tok = min(e.extra.get("system_tokens", 0), e.input_tokens)
            in_cost = e.extra.get("input_cost_nanos", 0)
            sys_cost = in_cost * sys_tok // e.input_tokens
        for name, value in (
            ("calls", 1),
            ("errors", int(e.status >= 400)),
            ("input_tokens", e.input_tokens),
            ("output_tokens", e.output_tokens),
            ("cache_read_tokens", e.cache_read_tokens),
            ("cost_nanos", e.cost_nanos or 0),
            ("unknown_cost_calls", int(e.cost_nanos is None)),
            ("baseline_nanos", e.baseline_nanos or 0),
            ("savings_nanos", sum(e.savings.values())),
            ("system_tokens", sys_tok),
            ("input_cost_nanos", in_cost),
            ("system_input_nanos", sys_cost),
        ):
            acc[name] += value
    return groups


def as_map(rows: list[tuple[dict[str, str], dict[str, int]]], by: list[str]) -> dict:
    return {tuple(k[d] for d in by): v for k, v in rows}


@pytest.fixture(scope="module")
def ledger(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """Read-only for the tests that use it (rebuild_rollups leaves the same answers)."""
    store = SQLiteLedger(tmp_path_factory.mktemp("rollups") / "ledger.db", rollup_job=False)
    events = make_events(3000)
    for i in range(0, len(events), 337):
        store.write_batch(events[i : i + 337])
        if i in (674, 2022):
            store.flush_rollups()
    # Most events are folded, the last batches are not (read raw above the watermark).
    assert 0 < store.rollup_stats()["unfolded"] < 1000
    yield store, events
    store.close()


def dt(ts: float | None) -> datetime | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC)


QUERIES: list[tuple[list[str], dict[str, str]]] = [
    (["feature", "model"], {}),
    (["day"], {}),
    ([], {}),
    (["tenant"], {"feature": "search"}),
    (["team", "status"], {"provider": NONE_LABEL}),
    (["user"], {"tenant": "acme"}),
    (["feature"], {"user": "u3"}),
    (["feature", "tenant"], {"user": "u7"}),
    (["endpoint", "requested_model"], {"status": "200"}),
    (["tenant", "key_id"], {}),  # no rollup has both: raw path
]
WINDOWS = [
    (None, None),
    (T0, datetime(2026, 11, 1, tzinfo=UTC).timestamp()),  # a calendar month
    (T0 + 86400, T0 + 3 * 86400),  # day-aligned
    (T0 + 3600 * 5 + 17.5, T0 + 86400 * 4 + 3600 * 7 + 0.25),  # ragged
    (T0 + 100, T0 + 200),  # inside one hour: raw only
    (T0 + 2 * 86400 + 1, None),
]


@pytest.mark.parametrize(("by", "filters"), QUERIES)
def test_rollup_answers_equal_python_and_raw(ledger: Any, by: list[str], filters: dict) -> None:
    store, events = ledger
    for since, until in WINDOWS:
        want = expected(events, by, since, until, filters)
        got = as_map(store.aggregate(by, dt(since), dt(until), filters), by)
        assert got == want, (by, filters, since, until)
        store.use_rollups = False
        raw = as_map(store.aggregate(by, dt(since), dt(until), filters), by)
        store.use_rollups = True
        assert raw == want


def test_plan_uses_rollups_with_raw_edges() -> None:
    p = R.plan(["feature", "model"], T0 + 10, T0 + 7200 + 5)
    assert p.rollup is not None and p.rollup.table == "rollup_hour"
    assert p.middle == (T0 + 3600, T0 + 7200)
    assert p.edges == ((T0 + 10, T0 + 3600), (T0 + 7200, T0 + 7200 + 5))
    assert R.plan(["tenant"], None, None).rollup.table == "rollup_tenant_feature_day"  # type: ignore[union-attr]
    assert R.plan(["user"], None, None).rollup.table == "rollup_user_month"  # type: ignore[union-attr]
    p = R.plan(["user"], T0 + 86400, T0 + 3 * 86400)
    assert p.rollup is not None and p.rollup.table == "rollup_user_day" and p.edges == ()
    p = R.plan(["use_case"], T0 + 3600, T0 + 7200 + 3 * 86400)  # finest covering: daily
    assert p.rollup is not None and p.rollup.table == "rollup_day"
    assert R.plan(["tenant", "key_id"], None, None).rollup is None
    # per-feature users: only the monthly rollup has both; a calendar month aligns with it
    oct1 = datetime(2026, 10, 1, tzinfo=UTC).timestamp()
    nov1 = datetime(2026, 11, 1, tzinfo=UTC).timestamp()
    p = R.plan(["feature", "user"], oct1, nov1)
    assert p.rollup is not None and p.rollup.table == "rollup_user_feature_month"
    assert p.edges == ()
    # a ragged window on tenant: daily middle, raw edges
    p = R.plan(["tenant"], oct1 + 5, nov1 - 5)
    assert p.rollup is not None and p.rollup.table == "rollup_tenant_feature_day"
    assert p.edges == ((oct1 + 5, oct1 + 86400), (nov1 - 86400, nov1 - 5))
    assert R.plan(["feature", "user", "day"], None, None).rollup is None


def test_spend_rows_match(ledger: Any) -> None:
    store, events = ledger
    rows = store.spend(["feature"], dt(T0 + 3600.5), dt(T0 + 5 * 86400 - 1))
    want = expected(events, ["feature"], T0 + 3600.5, T0 + 5 * 86400 - 1, {})
    assert {r.keys["feature"]: (r.calls, r.cost_nanos, r.unknown_cost_calls) for r in rows} == {
        k[0]: (v["calls"], v["cost_nanos"], v["unknown_cost_calls"]) for k, v in want.items()
    }
    costs = [r.cost_nanos for r in rows]
    assert costs == sorted(costs, reverse=True)


@pytest.mark.parametrize("window", WINDOWS)
def test_active_users(ledger: Any, window: tuple[float | None, float | None]) -> None:
    store, events = ledger
    since, until = window
    # Users here span several tenants, so a rollup keyed on (user, tenant) holds a user more
    # than once: the `[]`/`{}` case fails unless the count dedups across rollup rows.
    cases: list[tuple[list[str], dict[str, str]]] = [
        (["feature"], {}),
        ([], {"tenant": "acme"}),
        (["team"], {}),
        ([], {}),
        (["tenant"], {"feature": "chat"}),
    ]
    for by, filters in cases:
        want: dict[tuple[str, ...], set[str]] = defaultdict(set)
        for e in events:
            if (since is not None and e.ts < since) or (until is not None and e.ts >= until):
                continue
            if any(_key(e, d) != v for d, v in filters.items()) or e.user is None:
                continue
            want[tuple(_key(e, d) for d in by)].add(e.user)
        got = {
            tuple(k[d] for d in by): n
            for k, n in store.active_users(by, dt(since), dt(until), filters)
        }
        assert got == {k: len(v) for k, v in want.items()}


@pytest.mark.parametrize("window", WINDOWS)
def test_savings_by_technique(ledger: Any, window: tuple[float | None, float | None]) -> None:
    store, events = ledger
    since, until = window
    want: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    for e in events:
        if (since is not None and e.ts < since) or (until is not None and e.ts >= until):
            continue
        for t, n in e.savings.items():
            want[(_key(e, "feature"), t)][0] += 1
            want[(_key(e, "feature"), t)][1] += n
    got = {
        (k["feature"], t): [c, n]
        for k, t, c, n in store.savings_by_technique(["feature"], dt(since), dt(until))
    }
    assert got == dict(want)


def test_resent_and_overlapping_batches_count_once(tmp_path: Path) -> None:
    events = make_events(600, seed=11, prefix="dup")
    with SQLiteLedger(tmp_path / "l.db", rollup_job=False) as store:
        store.write_batch(events[:400])
        store.flush_rollups()
        store.write_batch(events[200:600])  # half already stored (and folded)
        store.write_batch(events[:50] + events[:50])  # all stored, and repeated in-batch
        assert store.count() == 600
        assert as_map(store.aggregate(["feature"]), ["feature"]) == expected(
            events, ["feature"], None, None, {}
        )
        store.flush_rollups()
        store.write_batch(events[500:600])  # re-sent after it was folded
        store.flush_rollups()
        assert store.rollup_stats()["unfolded"] == 0
        assert as_map(store.aggregate(["feature"]), ["feature"]) == expected(
            events, ["feature"], None, None, {}
        )


def test_crash_before_fold_is_caught_up_on_open(tmp_path: Path) -> None:
    """Events written but never folded (the process died first) are read raw meanwhile
    and folded by the job when the ledger is next opened."""
    events = make_events(900, seed=21, prefix="crash")
    store = SQLiteLedger(tmp_path / "c.db", rollup_job=False)
    for i in range(0, 900, 100):
        store.write_batch(events[i : i + 100])
        if i == 700:
            store.flush_rollups()  # 800 folded, 100 not
    assert store.rollup_stats()["unfolded"] == 100
    want = expected(events, ["feature", "tenant"], None, None, {})
    assert as_map(store.aggregate(["feature", "tenant"]), ["feature", "tenant"]) == want
    # The "crash": connections dropped, no close() (which would fold), like a killed process.
    store._closed = True
    assert store._checkpointer is not None
    store._checkpointer.close()
    store._close_connections()
    with SQLiteLedger(tmp_path / "c.db") as again:
        assert again.wait_folded(timeout=60)  # the job, not this thread, folds them
        assert again.rollup_stats()["watermark"] == 900
        assert again._job.events_folded == 100
        assert as_map(again.aggregate(["feature", "tenant"]), ["feature", "tenant"]) == want


def test_two_writers_on_one_file_stay_exact(tmp_path: Path) -> None:
    """Two ledgers (as two processes would) writing one file, each with a rollup job
    folding into the one rollup file: the watermark is read inside the fold's write
    transaction, so nothing is lost or doubled."""
    events = make_events(1200, seed=8, prefix="two")
    a = SQLiteLedger(tmp_path / "t.db", fold_interval=0.001)
    b = SQLiteLedger(tmp_path / "t.db", fold_interval=0.001)
    for i in range(0, 1200, 100):
        (a if i % 200 else b).write_batch(events[i : i + 100])
    a.close()
    b.close()
    with SQLiteLedger(tmp_path / "t.db") as store:
        assert as_map(store.aggregate(["model"]), ["model"]) == expected(
            events, ["model"], None, None, {}
        )
        store.use_rollups = False
        assert store.count() == 1200


def test_rebuild_equals_incremental(ledger: Any) -> None:
    store, _ = ledger
    before = as_map(store.aggregate(["feature", "model", "day"]), ["feature", "model", "day"])
    users = store.active_users(["tenant"])
    store.rebuild_rollups()
    assert (
        as_map(store.aggregate(["feature", "model", "day"]), ["feature", "model", "day"]) == before
    )
    assert store.active_users(["tenant"]) == users


def test_v1_ledger_is_migrated_and_backfilled(tmp_path: Path) -> None:
    path = tmp_path / "v1.db"
    events = make_events(500, seed=5, prefix="old")
    conn = sqlite3.connect(path)
    cols = ", ".join(f'"{c}"' for c in COLUMNS)
    conn.execute(f"CREATE TABLE usage_events (id INTEGER PRIMARY KEY, {cols})")
    conn.execute("CREATE UNIQUE INDEX usage_events_request_id ON usage_events (request_id)")
    conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
    conn.execute("INSERT INTO schema_version VALUES (1)")
    marks = ", ".join("?" for _ in COLUMNS)
    conn.executemany(
        f"INSERT INTO usage_events ({cols}) VALUES ({marks})", [e.to_row() for e in events]
    )
    conn.commit()
    conn.close()
    with SQLiteLedger(path) as store:
        got = as_map(store.aggregate(["tenant", "day"]), ["tenant", "day"])
        assert got == expected(events, ["tenant", "day"], None, None, {})
        store.flush_rollups()
        assert as_map(store.aggregate(["tenant", "day"]), ["tenant", "day"]) == got
        with store._reader() as conn:
            rollup_rows = conn.execute("SELECT COUNT(*) FROM rollup_tenant_feature_day").fetchone()[
                0
            ]
        assert len({e.ts // 86400 for e in events}) <= rollup_rows < len(events)


def test_day_filter_and_month_window(ledger: Any) -> None:
    store, events = ledger
    day = events[0].day
    start = datetime.fromisoformat(day).replace(tzinfo=UTC)
    got = as_map(store.aggregate(["model"], filters={"day": day}), ["model"])
    assert got == expected(events, ["model"], None, None, {"day": day})
    got = as_map(store.aggregate(["model"], start, start + timedelta(days=1)), ["model"])
    assert got == expected(events, ["model"], None, None, {"day": day})


def test_extra_fields_as_columns_sum_exactly_as_the_json_did(tmp_path: Path) -> None:
    """Schema v4 copies `extra.system_tokens` / `extra.input_cost_nanos` into columns so
    scans need not parse JSON. A row whose columns are NULL (written before v4, or a value
    that is no 64-bit integer) is read from `extra`: both kinds sum exactly as `extra` did."""
    events = make_events(400, seed=77, prefix="col")
    odd = [
        {"system_tokens": 12.5, "input_cost_nanos": 1000},
        {"system_tokens": True, "input_cost_nanos": "7"},
        {"system_tokens": 5, "input_cost_nanos": [1]},
        {"input_cost_nanos": None},
    ]
    events += [
        replace(events[i], request_id=f"odd-{i}", extra=extra, input_tokens=100)
        for i, extra in enumerate(odd)
    ]
    path = tmp_path / "l.db"
    by = ["feature", "model"]
    with SQLiteLedger(path, rollup_job=False) as store:
        store.write_batch(events)
        conn = sqlite3.connect(path)
        stored = {
            rid: (st, ic)
            for rid, st, ic in conn.execute(
                'SELECT request_id, "system_tokens", "input_cost_nanos" FROM usage_events '
                "WHERE request_id LIKE 'odd-%'"
            )
        }
        # Integers are copied; absent or JSON null reads as 0; anything else stays NULL.
        assert stored == {
            "odd-0": (None, 1000),
            "odd-1": (None, None),
            "odd-2": (5, None),
            "odd-3": (0, 0),
        }
        store.use_rollups = False
        with_columns = as_map(store.aggregate(by), by)
        conn.execute('UPDATE usage_events SET "system_tokens" = NULL, "input_cost_nanos" = NULL')
        conn.commit()
        conn.close()
        from_json = as_map(store.aggregate(by), by)  # every row read as before v4
        assert with_columns == from_json
        store.use_rollups = True
        store.rebuild_rollups()  # folds the all-NULL (pre-v4) rows from their JSON
        assert as_map(store.aggregate(by), by) == from_json
    # Past 64 bits SQLite would not bind it: the column stays NULL, the JSON is read.
    huge = replace(events[0], extra={"system_tokens": 2**63, "input_cost_nanos": -(2**63)})
    assert R.derived_values(huge)[:2] == (None, -(2**63))


def test_a_subset_of_aggregates_is_the_same_figures(ledger: Any) -> None:
    """Reports ask only for the aggregates they show (`fields=`): the figures are those of
    the full query, over rollup middles, raw edges and unfolded events alike."""
    store, _ = ledger
    fields = ("cost_nanos", "errors")
    for since, until in WINDOWS:
        for by, filters in ((["feature"], {}), (["user"], {"tenant": "acme"}), ([], {})):
            full = as_map(store.aggregate(by, dt(since), dt(until), filters), by)
            part = as_map(store.aggregate(by, dt(since), dt(until), filters, fields=fields), by)
            # `calls` always comes along: it is what says a group exists.
            assert part == {
                k: {a: v[a] for a in ("calls", "errors", "cost_nanos")} for k, v in full.items()
            }
    with pytest.raises(ValueError, match="unknown aggregates: costs"):
        store.aggregate(["feature"], fields=["costs"])
