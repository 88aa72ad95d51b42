"""BatchingWriter over a real SQLite file: concurrency, shutdown, retries, overflow, rejects.

Synchronisation is by events and joins only; nothing here waits on the clock.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path

import pytest

from spendgate.ledger import BatchingWriter, SQLiteLedger, UsageEvent

T0 = 1_793_500_000.0


def event(request_id: str, **kw: object) -> UsageEvent:
    base: dict[str, object] = dict(
        request_id=request_id,
        ts=T0,
        endpoint="chat",
        api="openai",
        requested_model="gpt-4o-mini",
        status=200,
        latency_ms=5.0,
        cost_nanos=1_500,
    )
    base.update(kw)
    return UsageEvent(**base)  # type: ignore[arg-type]


def stored_ids(path: Path) -> list[str]:
    """Read through an independent connection, not the store under test."""
    conn = sqlite3.connect(path)
    try:
        return [r[0] for r in conn.execute("SELECT request_id FROM usage_events")]
    finally:
        conn.close()


class FlakyLedger(SQLiteLedger):
    """Fails the first `failures` writes; with `after_commit` it fails *after* committing,
    the ambiguous case where the writer cannot know the batch landed."""

    def __init__(self, path: Path, failures: int, *, after_commit: bool = False) -> None:
        super().__init__(path)
        self.failures = failures
        self.after_commit = after_commit
        self.calls = 0

    def write_batch(self, events: Sequence[UsageEvent]) -> None:
        self.calls += 1
        if self.calls <= self.failures:
            if self.after_commit:
                super().write_batch(events)
            raise sqlite3.OperationalError("database is locked")
        super().write_batch(events)


class GatedLedger(SQLiteLedger):
    """Blocks inside write_batch until the test opens the gate."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.entered = threading.Event()
        self.gate = threading.Event()

    def write_batch(self, events: Sequence[UsageEvent]) -> None:
        self.entered.set()
        self.gate.wait()
        super().write_batch(events)


def test_concurrent_submitters_lose_and_duplicate_nothing(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    store = SQLiteLedger(path)
    writer = BatchingWriter(store, max_batch=500)
    threads, per_thread = 4, 5_000
    start = threading.Barrier(threads)

    def produce(t: int) -> None:
        start.wait()
        for i in range(per_thread):
            writer.submit(event(f"sg-{t}-{i}"))

    producers = [threading.Thread(target=produce, args=(t,)) for t in range(threads)]
    for p in producers:
        p.start()
    for p in producers:
        p.join()
    assert writer.close()
    store.close()

    ids = stored_ids(path)
    expected = {f"sg-{t}-{i}" for t in range(threads) for i in range(per_thread)}
    assert len(ids) == len(expected) and set(ids) == expected
    stats = writer.stats()
    assert stats["submitted"] == stats["written"] == len(expected)
    assert stats["pending"] == stats["dropped"] == stats["rejected"] == 0
    assert stats["batches"] >= len(expected) // 500


def test_close_writes_everything_still_queued(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    store = SQLiteLedger(path)
    # An interval long enough that nothing is written unless close() forces it.
    writer = BatchingWriter(store, max_batch=10_000, flush_interval=3600)
    for i in range(1234):
        writer.submit(event(f"sg-{i}"))
    assert writer.close()
    store.close()
    assert len(stored_ids(path)) == 1234


def test_flush_waits_for_earlier_submits_only(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    store = SQLiteLedger(path)
    writer = BatchingWriter(store, max_batch=10_000, flush_interval=3600)
    for i in range(300):
        writer.submit(event(f"sg-{i}"))
    assert writer.flush(timeout=30)
    assert len(stored_ids(path)) == 300
    assert writer.stats()["pending"] == 0
    writer.close()
    store.close()


def test_failed_writes_are_retried_and_land_once(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    store = FlakyLedger(path, failures=3)
    writer = BatchingWriter(store, max_batch=50, retry_backoff=0.001, max_backoff=0.004)
    for i in range(120):
        writer.submit(event(f"sg-{i}"))
    assert writer.close()
    store.close()
    assert sorted(stored_ids(path)) == sorted(f"sg-{i}" for i in range(120))
    stats = writer.stats()
    assert stats["write_errors"] == 3
    assert stats["written"] == 120 and stats["pending"] == 0


def test_retry_after_an_ambiguous_commit_does_not_duplicate(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    store = FlakyLedger(path, failures=2, after_commit=True)
    writer = BatchingWriter(store, max_batch=50, retry_backoff=0.001, max_backoff=0.002)
    for i in range(80):
        writer.submit(event(f"sg-{i}"))
    assert writer.close()
    store.close()
    ids = stored_ids(path)
    assert len(ids) == len(set(ids)) == 80


def test_overflow_is_counted_and_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "l.db"
    store = GatedLedger(path)
    writer = BatchingWriter(store, max_batch=10, max_buffer=100, flush_interval=0.001)
    writer.submit(event("sg-first"))
    assert store.entered.wait(timeout=30)  # the writer holds sg-first and is stuck in I/O
    with caplog.at_level(logging.ERROR, logger="spendgate.ledger"):
        for i in range(107):
            writer.submit(event(f"sg-{i}"))  # must not block although the store is stuck
    stats = writer.stats()
    assert stats["dropped"] == 7
    assert stats["pending"] == 101
    assert any("dropped" in r.getMessage() for r in caplog.records)
    store.gate.set()
    assert writer.close()
    store.close()
    assert len(stored_ids(path)) == 101
    final = writer.stats()
    assert final["submitted"] == final["written"] + final["dropped"] == 108


def test_submit_after_close_is_counted_not_lost_silently(tmp_path: Path) -> None:
    store = SQLiteLedger(tmp_path / "l.db")
    writer = BatchingWriter(store)
    writer.close()
    writer.submit(event("sg-late"))
    assert writer.stats()["dropped"] == 1
    store.close()


def test_an_unstorable_event_is_rejected_without_its_neighbours(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    store = SQLiteLedger(path)
    writer = BatchingWriter(store, max_batch=64, flush_interval=3600)
    for i in range(64):
        bad = i == 37
        writer.submit(event(f"sg-{i}", cost_nanos=Decimal("0.5") if bad else 10))
    assert writer.close()
    store.close()
    ids = set(stored_ids(path))
    assert ids == {f"sg-{i}" for i in range(64)} - {"sg-37"}
    stats = writer.stats()
    assert stats["rejected"] == 1 and stats["written"] == 63 and stats["write_errors"] == 0


def test_close_with_timeout_gives_up_on_a_dead_store(tmp_path: Path) -> None:
    store = FlakyLedger(tmp_path / "l.db", failures=10**9)
    writer = BatchingWriter(store, retry_backoff=0.001, max_backoff=0.001)
    writer.submit(event("sg-1"))
    assert writer.close(timeout=0.05) is False
    assert writer.stats()["pending"] == 1
    assert writer.stats()["write_errors"] >= 1
    store.close()
