"""The outcome rollup (cache outcomes, routed calls, measured system prompts, per day): the
same figures as the dashboard's own pass over the events, over rollup days, ragged edges
and unfolded events alike; the same with the write-time columns as from the JSON; and an
older rollup file gets it backfilled, not refolded."""

from __future__ import annotations

import random
import sqlite3
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from spendgate.ledger import SQLiteLedger, UsageEvent
from spendgate.ledger import rollups as R
from spendgate.ledger import sqlite as sqlite_ledger
from spendgate.ledger.rollup_job import rollup_path
from spendgate.server.dashboard import data
from test_rollups import T0, make_events

ROUTES: list[dict[str, Any] | None] = [
    None,
    {"mode": "shadow", "served": "gpt-4o-mini", "requested": "gpt-4o"},
    {"served": "gpt-4o-mini", "requested": "gpt-4o"},
    {"served": "gpt-4o", "requested": "gpt-4o"},
    {"served": "claude-3-5-haiku-20241022"},
]


def outcome_events(n: int, seed: int) -> list[UsageEvent]:
    rnd = random.Random(seed)
    out = []
    for e in make_events(n, seed=seed, prefix=f"oc{seed}"):
        extra = None
        if e.input_tokens and rnd.random() < 0.7:
            extra = {"input_cost_nanos": rnd.randrange(0, 10**6)}
            if rnd.random() < 0.7:
                extra["system_tokens"] = rnd.choice([50, 900, 1024, 2000, 5000])
        out.append(
            replace(
                e,
                cache=rnd.choice([None, "hit", "miss", "semantic_hit", "bypass"]),
                route=rnd.choice(ROUTES),
                extra=extra,
                cache_read_tokens=rnd.choice([0, 0, 500, 1500]),
            )
        )
    return out


def figures(scan: data._Scan) -> tuple[Any, ...]:
    return scan.events, scan.answered, scan.routed, scan.cache, scan.system


def dt(ts: float | None) -> datetime | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC)


WINDOWS = [
    (None, T0 + 7 * 86400),
    (T0 + 86400, T0 + 3 * 86400),  # whole days
    (T0 + 3600 * 5 + 17.5, T0 + 86400 * 4 + 3600 * 7 + 0.25),  # ragged
]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Any:
    s = SQLiteLedger(tmp_path_factory.mktemp("outcomes") / "l.db", rollup_job=False)
    events = outcome_events(2500, seed=3)
    s.write_batch(events[:2000])
    s.flush_rollups()
    s.write_batch(events[2000:])  # 500 left unfolded: read raw
    yield s
    s.close()


@pytest.mark.parametrize("filters", [{}, {"feature": "chat"}, {"team": "core", "model": "gpt-4o"}])
def test_outcomes_equal_the_dashboards_own_count(store: SQLiteLedger, filters: dict) -> None:
    assert store.rollup_stats()["unfolded"] == 500
    for since, until in WINDOWS:
        q = data.Query(dt(since), dt(until), dict(filters))  # type: ignore[arg-type]
        want = figures(data._scan_events(store, q))
        assert want[0] > 0
        got = data._scan_rollup(store, q)
        assert got is not None and figures(got) == want
        store.use_rollups = False  # all raw: the same
        raw = data._scan_rollup(store, q)
        store.use_rollups = True
        assert raw is not None and figures(raw) == want


def test_a_filter_the_rollup_lacks_is_left_to_the_event_scan(store: SQLiteLedger) -> None:
    assert store.outcomes(filters={"tenant": "acme"}) is None
    q = data.Query(None, dt(T0 + 7 * 86400), {"tenant": "acme"})  # type: ignore[arg-type]
    assert data._scan_rollup(store, q) is None
    assert data._scan(store, q).events > 0  # the capped SQL scan answers instead
    # Uncapped here (fewer events than the cap), it counts what the Python pass counts.
    recent = data._scan_recent(store, q)
    assert recent is not None and not recent.capped
    assert figures(recent) == figures(data._scan_events(store, q))


def test_columns_and_json_count_the_same(tmp_path: Path) -> None:
    """`routed`/`measured` written by Python equal what SQL works out of the JSON (rows
    from before v5 have NULL there), odd routes included."""
    events = outcome_events(600, seed=9)
    events += [
        replace(events[0], request_id="odd-0", route={"served": "x", "requested": None}),
        replace(events[1], request_id="odd-1", route={"served": 5, "requested": "gpt-4o"}),
        replace(events[2], request_id="odd-2", route={"mode": None, "served": "y"}),
    ]
    path = tmp_path / "l.db"
    with SQLiteLedger(path, rollup_job=False) as s:
        s.write_batch(events)
        s.use_rollups = False
        with_columns = s.outcomes()
        conn = sqlite3.connect(path)
        conn.execute('UPDATE usage_events SET "routed" = NULL, "measured" = NULL')
        conn.commit()
        conn.close()
        from_json = s.outcomes()
        assert with_columns == from_json and from_json
        s.use_rollups = True
        s.rebuild_rollups()  # folded from the JSON
        assert s.outcomes() == from_json


def test_an_older_rollup_file_is_backfilled_not_refolded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "l.db"
    events = outcome_events(900, seed=5)
    with SQLiteLedger(path, rollup_job=False) as s:
        s.write_batch(events[:700])
        s.flush_rollups()
        s.use_rollups = False
        want_700 = s.outcomes()
    # A rollup file from before the outcome rollup.
    conn = sqlite3.connect(rollup_path(str(path)))
    conn.execute("DROP TABLE rollup_outcome_day")
    conn.execute("DROP TABLE rollup_outcome_state")
    conn.commit()
    conn.close()
    with SQLiteLedger(path, rollup_job=False) as s:
        assert s.rollup_stats()["watermark"] == 700  # the other rollups were kept
        # Lagging: still exact (the lag is read raw) while the lag is small …
        assert s.outcomes() == want_700
        # … and left to the bounded event scan when it is not.
        monkeypatch.setattr(sqlite_ledger, "OUTCOME_MAX_LAG", 100)
        assert s.outcomes() is None
        s.write_batch(events[700:])
        s.flush_rollups()  # folds the 200 new events, then backfills the first 700
        assert s._job.events_folded == 200
        assert s.outcomes() is not None  # level again
        s.use_rollups = False
        everything = s.outcomes()
        s.use_rollups = True
        assert s.outcomes() == everything


def test_events_folded_without_the_outcome_rollup_are_backfilled(tmp_path: Path) -> None:
    """An older process folding the same file leaves the outcome rollup behind; its own
    watermark says so, and the backfill brings it up, so nothing is missed."""
    path = tmp_path / "l.db"
    events = outcome_events(600, seed=6)
    with SQLiteLedger(path, rollup_job=False) as s:
        s.write_batch(events[:300])
        s.flush_rollups()
        s.write_batch(events[300:])
        # What an older spendgate's fold does: the other rollups and their watermark only.
        conn = sqlite3.connect(rollup_path(str(path)), isolation_level=None)
        conn.execute("ATTACH DATABASE ? AS ev", (str(path),))
        conn.execute("BEGIN IMMEDIATE")
        for statement in R.fold_statements():
            conn.execute(statement, {"lo": 300, "hi": 600})
        conn.execute("UPDATE rollup_state SET watermark = 600")
        conn.execute("COMMIT")
        levels = conn.execute(
            "SELECT (SELECT watermark FROM rollup_outcome_state), "
            "(SELECT watermark FROM rollup_state)"
        ).fetchone()
        conn.close()
        assert levels == (300, 600)
        s.use_rollups = False
        want = s.outcomes()
        s.use_rollups = True
        assert s.outcomes() == want  # exact while behind (the 300 are read raw)
        assert s._job.backfill() == 300
        assert s.outcomes() == want
        s.flush_rollups()
        assert s._job.backfill() == 0
