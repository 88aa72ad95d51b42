"""The rollup job on a real SQLite ledger: it folds in the background while writes go on,
reports are exact whatever it lags, a crash or a v2 ledger is caught up, and nothing is
ever counted twice. No sleeps: the tests wait on `wait_folded()` (a condition the job
signals after each fold) or fold in their own thread with `flush_rollups()`."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from spendgate.ledger import SCHEMA_VERSION, SQLiteLedger
from spendgate.ledger import rollups as R
from spendgate.ledger.event import COLUMNS
from spendgate.ledger.rollup_job import rollup_path
from spendgate.ledger.sqlite import _V1_SCHEMA
from test_rollups import as_map, expected, make_events

BY = ["feature", "model", "tenant"]


def test_job_folds_in_the_background_while_writes_continue(tmp_path: Path) -> None:
    events = make_events(6000, seed=31, prefix="bg")
    store = SQLiteLedger(tmp_path / "l.db", fold_interval=0.001)
    first = threading.Event()
    stop = threading.Event()
    written: list[int] = []
    errors: list[BaseException] = []

    def write() -> None:
        try:
            for i in range(0, len(events), 100):
                store.write_batch(events[i : i + 100])
                written.append(i + 100)
                first.set()
                if stop.is_set():
                    return
        except BaseException as exc:  # surfaced below
            errors.append(exc)
            first.set()

    writer = threading.Thread(target=write)
    writer.start()
    assert first.wait(60)
    folds_seen = 0
    while writer.is_alive() and folds_seen < 3:
        assert store.wait_folded(timeout=60)  # the job caught up with what was written
        folds_seen += 1
    stop.set()
    writer.join()
    assert not errors
    n = written[-1]
    assert store.wait_folded(timeout=60)
    stats = store.rollup_stats()
    assert stats["watermark"] == n and stats["unfolded"] == 0
    assert stats["events_folded"] == n  # all by the job's thread: nobody else folded
    assert stats["folds"] >= 1 and stats["running"]
    want = expected(events[:n], BY, None, None, {})
    assert as_map(store.aggregate(BY), BY) == want
    store.use_rollups = False
    assert as_map(store.aggregate(BY), BY) == want
    store.close()


def test_reports_are_exact_while_the_job_lags(tmp_path: Path) -> None:
    events = make_events(1500, seed=32, prefix="lag")
    with SQLiteLedger(tmp_path / "l.db", rollup_job=False) as store:
        store.write_batch(events[:1000])
        store.flush_rollups()
        store.write_batch(events[1000:])  # the job is "behind" by 500
        assert store.rollup_stats()["unfolded"] == 500
        assert store.wait_folded(timeout=0) is False
        assert as_map(store.aggregate(BY), BY) == expected(events, BY, None, None, {})
        assert store.rollup_stats()["unfolded"] == 500


def test_reports_stay_exact_while_the_job_folds_concurrently(tmp_path: Path) -> None:
    """Every report sees whole batches, never one twice: a fold committing between the
    two snapshots of a report (events, rollups) cannot double-count or drop a batch."""
    events = make_events(8000, seed=33, prefix="race")
    for e in events:
        e.cost_nanos = 1  # total cost == calls, so a double count shows
    store = SQLiteLedger(tmp_path / "l.db", fold_interval=0.001)
    stop = threading.Event()
    seen: list[tuple[int, int]] = []
    errors: list[BaseException] = []

    def read() -> None:
        try:
            while not stop.is_set():
                for _, agg in store.aggregate([]):
                    seen.append((agg["calls"], agg["cost_nanos"]))
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    readers = [threading.Thread(target=read) for _ in range(2)]
    for r in readers:
        r.start()
    for i in range(0, len(events), 100):
        store.write_batch(events[i : i + 100])
    assert store.wait_folded(timeout=60)
    stop.set()
    for r in readers:
        r.join()
    assert not errors
    assert seen
    assert all(calls % 100 == 0 and cost == calls <= 8000 for calls, cost in seen)
    assert store._job.events_folded == 8000
    store.close()


def test_crash_between_write_and_fold_then_reopen(tmp_path: Path) -> None:
    events = make_events(1000, seed=34, prefix="crash")
    store = SQLiteLedger(tmp_path / "l.db", rollup_job=False)
    store.write_batch(events[:600])
    store.flush_rollups()
    store.write_batch(events[600:])
    store._closed = True  # killed: no close(), no final fold
    assert store._checkpointer is not None
    store._checkpointer.close()
    store._close_connections()
    with SQLiteLedger(tmp_path / "l.db") as again:
        assert as_map(again.aggregate(BY), BY) == expected(events, BY, None, None, {})
        assert again.wait_folded(timeout=60)
        assert again.rollup_stats()["watermark"] == 1000
        assert as_map(again.aggregate(BY), BY) == expected(events, BY, None, None, {})


def test_close_folds_what_is_left(tmp_path: Path) -> None:
    events = make_events(700, seed=35, prefix="close")
    store = SQLiteLedger(tmp_path / "l.db", rollup_job=False)
    store.write_batch(events)
    store.close()
    conn = sqlite3.connect(rollup_path(str(tmp_path / "l.db")))
    assert conn.execute("SELECT watermark FROM rollup_state").fetchone()[0] == 700
    conn.close()


def test_resent_batch_after_fold_is_not_double_counted(tmp_path: Path) -> None:
    events = make_events(500, seed=36, prefix="dup")
    with SQLiteLedger(tmp_path / "l.db", fold_interval=0.001) as store:
        store.write_batch(events)
        assert store.wait_folded(timeout=60)
        store.write_batch(events)  # a retry after an ambiguous failure, already folded
        store.write_batch(events[:10] + events[:10])
        assert store.wait_folded(timeout=60)
        assert store.count() == 500
        assert store.rollup_stats()["watermark"] == 500
        assert as_map(store.aggregate(BY), BY) == expected(events, BY, None, None, {})


def _v2_ledger(path: Path, events: list, folded: int) -> None:
    """A ledger as spendgate with schema v2 left it: rollups inside the ledger file,
    folded up to event `folded`."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    for statement in _V1_SCHEMA:
        conn.execute(statement)
    cols = ", ".join(f'"{c}"' for c in COLUMNS)
    marks = ", ".join("?" for _ in COLUMNS)
    conn.executemany(
        f"INSERT INTO usage_events ({cols}) VALUES ({marks})", [e.to_row() for e in events]
    )
    # Today's fold reads the columns v4/v5 add: give it them, all NULL (as on every row
    # written before them), and take them away again afterwards, as v2 had none.
    for column in R.DERIVED_COLUMNS:
        conn.execute(f'ALTER TABLE usage_events ADD COLUMN "{column}" INTEGER')
    for statement in R.schema_statements():
        conn.execute(statement)
    for statement in R.fold_statements():
        conn.execute(statement, {"lo": 0, "hi": folded})
    conn.execute("DELETE FROM temp.fold_src")
    for column in R.DERIVED_COLUMNS:
        conn.execute(f'ALTER TABLE usage_events DROP COLUMN "{column}"')
    conn.execute("UPDATE rollup_state SET watermark = ?", (folded,))
    conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
    conn.execute("INSERT INTO schema_version VALUES (2)")
    conn.close()


def test_v2_ledger_is_migrated_to_a_rollup_file(tmp_path: Path) -> None:
    path = tmp_path / "v2.db"
    events = make_events(800, seed=37, prefix="v2")
    _v2_ledger(path, events, folded=500)
    with SQLiteLedger(path, rollup_job=False) as store:
        # The v2 rollups and watermark were copied, not refolded.
        stats = store.rollup_stats()
        assert stats["watermark"] == 500 and stats["unfolded"] == 300
        assert as_map(store.aggregate(BY), BY) == expected(events, BY, None, None, {})
        store.flush_rollups()
        assert as_map(store.aggregate(BY), BY) == expected(events, BY, None, None, {})
        assert store.rollup_stats()["events_folded"] == 300
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert not any(t.startswith("rollup") for t in tables)  # they moved out
    conn.close()


def test_missing_or_stale_rollup_file_is_rebuilt(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    events = make_events(400, seed=38, prefix="gone")
    with SQLiteLedger(path, rollup_job=False) as store:
        store.write_batch(events)
    side = Path(rollup_path(str(path)))
    assert side.exists()
    side.unlink()
    with SQLiteLedger(path, rollup_job=False) as store:
        assert store.rollup_stats()["unfolded"] == 400  # rebuilt empty, read raw
        assert as_map(store.aggregate(BY), BY) == expected(events, BY, None, None, {})
        store.flush_rollups()
    # Rollups ahead of the events (the ledger lost its tail, or was restored from backup).
    conn = sqlite3.connect(side)
    conn.execute("UPDATE rollup_state SET watermark = 10000")
    conn.commit()
    conn.close()
    with SQLiteLedger(path, rollup_job=False) as store:
        assert store.rollup_stats()["watermark"] == 0
        assert as_map(store.aggregate(BY), BY) == expected(events, BY, None, None, {})


def test_memory_ledger_folds_inline() -> None:
    events = make_events(900, seed=39, prefix="mem")
    with SQLiteLedger(":memory:", fold_every=300) as store:
        for i in range(0, 900, 100):
            store.write_batch(events[i : i + 100])
        assert store.rollup_stats()["unfolded"] == 0
        assert as_map(store.aggregate(BY), BY) == expected(events, BY, None, None, {})
        store.write_batch(make_events(50, seed=40, prefix="mem2"))
        assert store.rollup_stats()["unfolded"] == 50


def test_a_read_only_report_leaves_folding_to_the_writer(tmp_path: Path) -> None:
    """`spendgate report` beside a running gateway: exact figures from the unfolded events,
    no fold or checkpoint thread of its own, and nothing folded when it closes."""
    import json

    from spendgate.ledger import report_command

    path = tmp_path / "l.db"
    events = make_events(800, seed=41, prefix="ro")
    writer = SQLiteLedger(path, rollup_job=False)  # the gateway, its job not yet run
    writer.write_batch(events)
    before = _ledger_threads()
    doc = json.loads(report_command(str(path), by="feature", fmt="json"))
    want = expected(events, ["feature"], None, None, {})
    assert {r["feature"]: r["calls"] for r in doc["rows"]} == {
        k[0]: v["calls"] for k, v in want.items()
    }
    assert writer.rollup_stats()["watermark"] == 0  # the report folded nothing

    reader = SQLiteLedger(path, create=False, read_only=True)
    assert _ledger_threads() - before == set()  # no job, no checkpointer of its own
    with pytest.raises(sqlite3.ProgrammingError, match="read-only"):
        reader.write_batch(events[:1])
    reader.close()
    assert writer.rollup_stats()["watermark"] == 0
    writer.close()  # the writer's close folds its events, as before
    with SQLiteLedger(path, read_only=True) as again:
        assert again.rollup_stats()["watermark"] == 800


def _ledger_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name.startswith("spendgate-ledger")}
