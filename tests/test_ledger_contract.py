"""The `LedgerStore` contract, the same assertions on every backend: a SQLite file (part of
its events folded into rollups, part read raw), a `:memory:` SQLite ledger, and PostgreSQL
(127.0.0.1:5432, db `test`, a schema of its own per test).

Every public method `LedgerStore` declares is checked here against figures worked out in
Python from the events themselves; `test_every_declared_method_is_checked` keeps it so when
the contract grows.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest

from spendgate.ledger import NONE_LABEL, LedgerStore, SQLiteLedger, UsageEvent, open_ledger
from spendgate.ledger.fold import outcome_rows_of
from spendgate.ledger.spend import SPEND_FIELDS
from test_outcome_rollup import outcome_events
from test_rollups import T0, as_map, expected

PG = "postgresql://postgres@127.0.0.1:5432/test"

EVENTS = outcome_events(600, seed=18)
SINCE = datetime.fromtimestamp(T0 + 86400 + 3 * 3600 + 17.5, UTC)
UNTIL = datetime.fromtimestamp(T0 + 4 * 86400 + 5 * 3600, UTC)
WINDOWS: list[tuple[datetime | None, datetime | None]] = [(None, None), (SINCE, UNTIL)]
FILTERS: list[dict[str, str]] = [{}, {"feature": "chat"}, {"tenant": NONE_LABEL}]


def _pg_available() -> bool:
    try:
        with psycopg.connect(PG, connect_timeout=2):
            return True
    except psycopg.Error:
        return False


def _sqlite_file(tmp_path: Path) -> Iterator[LedgerStore]:
    store = SQLiteLedger(tmp_path / "contract.db", rollup_job=False)
    store.write_batch(EVENTS[:400])
    store.flush_rollups()
    store.write_batch(EVENTS[400:])  # above the watermark: read raw
    yield store
    store.close()


def _sqlite_memory(tmp_path: Path) -> Iterator[LedgerStore]:
    store = open_ledger("sqlite:///:memory:")
    store.write_batch(EVENTS)
    yield store
    store.close()


def _postgres(tmp_path: Path) -> Iterator[LedgerStore]:
    if not _pg_available():
        pytest.skip("PostgreSQL not reachable")
    schema = f"sgc_{uuid.uuid4().hex[:12]}"
    store = open_ledger(f"{PG}?schema={schema}")
    try:
        store.write_batch(EVENTS[:300])
        store.write_batch(EVENTS[300:])
        yield store
    finally:
        store.close()
        with psycopg.connect(PG, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'.encode())


BACKENDS: dict[str, Callable[[Path], Iterator[LedgerStore]]] = {
    "sqlite-file": _sqlite_file,
    "sqlite-memory": _sqlite_memory,
    "postgres": _postgres,
}


@pytest.fixture(params=list(BACKENDS))
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LedgerStore]:
    yield from BACKENDS[request.param](tmp_path)


def _ts(when: datetime | None) -> float | None:
    return None if when is None else when.timestamp()


def _selected(
    window: tuple[datetime | None, datetime | None], filters: dict[str, str]
) -> list[UsageEvent]:
    """The events in the window that match `filters` (on feature and tenant), in order."""
    since, until = (_ts(w) for w in window)
    out = []
    for e in EVENTS:
        if (since is not None and e.ts < since) or (until is not None and e.ts >= until):
            continue
        tags = {"feature": e.feature, "tenant": e.tenant}
        if all((tags[d] or NONE_LABEL) == v for d, v in filters.items()):
            out.append(e)
    return out


def _sorted(rows: Any) -> list[str]:
    return sorted(map(repr, rows))


CHECKED: set[str] = set()


def checks(name: str) -> Callable[[Callable[..., None]], Callable[..., None]]:
    CHECKED.add(name)
    return lambda f: f


# --------------------------------------------------------------------------- the contract


@checks("count")
@checks("write_batch")
def test_write_batch_is_idempotent_and_count_counts(store: LedgerStore) -> None:
    assert store.count() == len(EVENTS)
    store.write_batch(EVENTS[100:150])  # a batch re-sent after an unseen commit
    store.write_batch([])
    assert store.count() == len(EVENTS)


@checks("events")
def test_events_come_back_whole_in_write_order(store: LedgerStore) -> None:
    got = list(store.events(chunk=97))
    assert [e.request_id for e in got] == [e.request_id for e in EVENTS]
    assert got[7] == EVENTS[7]
    assert [e.request_id for e in store.events(5)] == [e.request_id for e in EVENTS[:5]]
    for window in WINDOWS:
        for filters in FILTERS:
            rows = store.events(since=window[0], until=window[1], filters=filters, chunk=50)
            want = _selected(window, filters)
            assert [e.request_id for e in rows] == [e.request_id for e in want]


@checks("aggregate")
def test_aggregate(store: LedgerStore) -> None:
    for by in ([], ["feature"], ["model", "day"], ["user"]):
        for window in WINDOWS:
            for filters in FILTERS:
                got = store.aggregate(by, *window, filters)
                want = expected(EVENTS, by, _ts(window[0]), _ts(window[1]), filters)
                assert as_map(got, by) == want, (by, window, filters)
    some = store.aggregate(["team"], fields=["cost_nanos"])
    assert some and all(set(agg) == {"calls", "cost_nanos"} for _, agg in some)
    with pytest.raises(ValueError):
        store.aggregate(["team"], fields=["no_such_figure"])
    with pytest.raises(ValueError):
        store.aggregate(["no_such_dimension"])


@checks("spend")
def test_spend(store: LedgerStore) -> None:
    for window in WINDOWS:
        rows = store.spend(["feature", "team"], *window, {"tenant": NONE_LABEL})
        want = expected(EVENTS, ["feature", "team"], _ts(window[0]), _ts(window[1]),
                        {"tenant": NONE_LABEL})  # fmt: skip
        assert {tuple(r.keys.values()): [getattr(r, f) for f in SPEND_FIELDS] for r in rows} == {
            k: [v[f] for f in SPEND_FIELDS] for k, v in want.items()
        }
        order = [(-r.cost_nanos, -r.calls, tuple(r.keys.values())) for r in rows]
        assert order == sorted(order)  # most costly first
    assert store.spend([], filters={"feature": "no-such-feature"}) == []


@checks("savings_by_technique")
def test_savings_by_technique(store: LedgerStore) -> None:
    for window in WINDOWS:
        want: dict[tuple[str, str], list[int]] = {}
        for e in _selected(window, {}):
            for technique, nanos in e.savings.items():
                slot = want.setdefault((e.feature or NONE_LABEL, technique), [0, 0])
                slot[0] += 1
                slot[1] += nanos
        got = store.savings_by_technique(["feature"], *window)
        assert {(k["feature"], t): [c, n] for k, t, c, n in got} == want
        assert want


@checks("active_users")
def test_active_users(store: LedgerStore) -> None:
    for window in WINDOWS:
        for filters in FILTERS:
            events = _selected(window, filters)
            per_feature: dict[str, set[str]] = {}
            for e in events:
                if e.user is not None:
                    per_feature.setdefault(e.feature or NONE_LABEL, set()).add(e.user)
            got = store.active_users(["feature"], *window, filters)
            assert {k["feature"]: n for k, n in got} == {f: len(u) for f, u in per_feature.items()}
            (overall,) = store.active_users([], *window, filters) or [({}, 0)]
            assert overall[1] == len({e.user for e in events if e.user is not None})


@checks("outcomes")
def test_outcomes(store: LedgerStore) -> None:
    for window in WINDOWS:
        for filters in FILTERS:
            got = store.outcomes(*window, filters)
            want = outcome_rows_of(_selected(window, filters))
            if got is None:
                # Allowed where the store cannot answer cheaply (SQLite: a filter its outcome
                # rollup does not hold); `recent_outcomes` answers then.
                assert isinstance(store, SQLiteLedger) and "tenant" in filters
                continue
            assert _sorted(got) == _sorted(want), (window, filters)


@checks("recent_outcomes")
def test_recent_outcomes(store: LedgerStore) -> None:
    for window in WINDOWS:
        for filters in FILTERS:
            events = _selected(window, filters)
            got = store.recent_outcomes(*window, filters, len(events) + 10)
            assert _sorted(got) == _sorted(outcome_rows_of(events))
            newest = sorted(events, key=lambda e: e.ts)[-40:]
            got = store.recent_outcomes(*window, filters, 40)
            assert _sorted(got) == _sorted(outcome_rows_of(newest))


@checks("parallel_reads")
def test_parallel_reads(store: LedgerStore) -> None:
    memory = isinstance(store, SQLiteLedger) and store.path == ":memory:"
    assert store.parallel_reads is (not memory)


@checks("close")
def test_close_is_final_and_idempotent(store: LedgerStore) -> None:
    store.close()
    store.close()
    with pytest.raises(Exception):  # noqa: B017 - each driver has its own "closed" error
        store.count()


def test_every_declared_method_is_checked() -> None:
    declared = {name for name in dir(LedgerStore) if not name.startswith("_")}
    assert declared == CHECKED


@pytest.mark.parametrize("backend", list(BACKENDS))
def test_every_backend_is_a_ledger_store(backend: str, tmp_path: Path) -> None:
    for store in BACKENDS[backend](tmp_path):
        assert isinstance(store, LedgerStore)
