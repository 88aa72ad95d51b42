"""SQLiteLedger against real files: round trips, idempotence, schema, URLs, concurrent reads."""

from __future__ import annotations

import sqlite3
import threading
from dataclasses import fields
from decimal import Decimal
from pathlib import Path

import pytest

from spendgate.call import to_nanos
from spendgate.ledger import (
    SCHEMA_VERSION,
    InvalidEvent,
    LedgerStore,
    SQLiteLedger,
    UsageEvent,
    open_ledger,
    utc_day,
)

T0 = 1_793_500_000.25  # 2026-11-01, an arbitrary fixed instant


def full_event(request_id: str = "sg-full") -> UsageEvent:
    """Every field set to something other than its default."""
    return UsageEvent(
        request_id=request_id,
        ts=T0,
        endpoint="messages",
        api="anthropic",
        feature="summarize",
        use_case="support",
        team="cx",
        tenant="acme",
        user="u-1",
        key_id="k-9",
        requested_model="claude-sonnet-4-5",
        served_model="claude-haiku-4-5",
        provider="anthropic",
        deployment="anthropic-us",
        input_tokens=1200,
        output_tokens=340,
        cache_read_tokens=800,
        cache_write_tokens=100,
        cache_write_1h_tokens=50,
        reasoning_tokens=20,
        usage_estimated=True,
        cost_nanos=to_nanos(Decimal("0.0012345678")),
        baseline_nanos=to_nanos(Decimal("0.0099")),
        savings={"routing": 7_000_000, "prefix-cache": 1_554_322},
        cost_estimated=True,
        price_version="2026-10-30",
        cache="miss",
        route={"rule": "short-prompts", "target": "claude-haiku-4-5", "score": 0.93},
        attempts=[
            {"deployment": "anthropic-eu", "status": 529, "ms": 812.5},
            {"deployment": "anthropic-us", "status": 200, "ms": 1430.0},
        ],
        stream=True,
        status=200,
        error_type="overloaded_retried",
        latency_ms=2250.5,
        ttfb_ms=310.25,
        client_disconnected=True,
        prompt_fingerprint="b3:9f2c",
        extra={"trim": {"dropped_messages": 4}, "shadow": ["semantic-cache"]},
    )


def minimal_event(request_id: str, **kw: object) -> UsageEvent:
    base: dict[str, object] = dict(
        request_id=request_id,
        ts=T0,
        endpoint="chat",
        api="openai",
        requested_model="gpt-4o-mini",
        status=200,
        latency_ms=12.0,
    )
    base.update(kw)
    return UsageEvent(**base)  # type: ignore[arg-type]


def test_every_field_survives_a_round_trip_on_disk(tmp_path: Path) -> None:
    full = full_event()
    bare = minimal_event("sg-bare")  # None cost, None JSON fields, defaults everywhere
    path = tmp_path / "ledger.db"
    store = SQLiteLedger(path)
    store.write_batch([full, bare])
    store.close()

    reopened = SQLiteLedger(path)
    got = {e.request_id: e for e in reopened.events()}
    reopened.close()
    assert got["sg-full"] == full
    assert got["sg-bare"] == bare
    assert got["sg-bare"].cost_nanos is None
    assert got["sg-bare"].route is None and got["sg-bare"].extra is None
    # The test would be vacuous if the full event left any field at its default.
    defaults = minimal_event("x")
    for f in fields(UsageEvent):
        if f.name not in ("endpoint", "api", "requested_model", "status", "latency_ms", "ts"):
            assert getattr(full, f.name) != getattr(defaults, f.name), f.name


def test_day_is_the_utc_date_and_is_stored(tmp_path: Path) -> None:
    just_before_midnight = 1_793_577_599.9  # 2026-11-01T23:59:59.9Z
    e = minimal_event("sg-1", ts=just_before_midnight)
    assert e.day == "2026-11-01"
    assert utc_day(just_before_midnight + 0.2) == "2026-11-02"
    store = SQLiteLedger(tmp_path / "l.db")
    store.write_batch([e])
    assert [r.keys for r in store.spend(["day"])] == [{"day": "2026-11-01"}]
    store.close()


def test_rewriting_a_batch_does_not_double_count(tmp_path: Path) -> None:
    store = SQLiteLedger(tmp_path / "l.db")
    batch = [minimal_event(f"sg-{i}", cost_nanos=1000 + i) for i in range(50)]
    store.write_batch(batch)
    store.write_batch(batch)  # a retry after an ambiguous failure
    store.write_batch([*batch[:10], minimal_event("sg-new", cost_nanos=5)])
    assert store.count() == 51
    [row] = store.spend([])
    assert row.cost_nanos == sum(e.cost_nanos or 0 for e in batch) + 5
    store.close()


def test_schema_is_versioned_and_wal(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    SQLiteLedger(path).close()
    SQLiteLedger(path).close()  # reopening does not re-run the migration
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    indexed = {r[1] for r in conn.execute("PRAGMA index_list(usage_events)")}
    assert "usage_events_request_id" in indexed and "usage_events_ts" in indexed
    conn.execute("INSERT INTO schema_version VALUES (?)", (SCHEMA_VERSION + 1,))
    conn.commit()
    conn.close()
    with pytest.raises(RuntimeError, match="newer"):
        SQLiteLedger(path)


def test_open_ledger_urls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    relative = open_ledger("sqlite:///data/rel.db")
    absolute = open_ledger(f"sqlite:///{tmp_path}/abs.db")
    bare = open_ledger(str(tmp_path / "bare.db"))
    memory = open_ledger("sqlite:///:memory:")
    for store in (relative, absolute, bare, memory):
        assert isinstance(store, LedgerStore)
        store.write_batch([minimal_event("sg-1")])
        assert store.count() == 1
        store.close()
    assert (tmp_path / "data" / "rel.db").exists()
    assert (tmp_path / "abs.db").exists() and (tmp_path / "bare.db").exists()

    # postgresql:// is PostgresLedger (tests/test_ledger_postgres.py); a bad URL fails early.
    with pytest.raises(ValueError, match="bad schema name"):
        open_ledger("postgresql://127.0.0.1/test?schema=bad-name")
    with pytest.raises(ValueError, match="unsupported"):
        open_ledger("mysql://x/y")
    with pytest.raises(FileNotFoundError):
        open_ledger("sqlite:///missing.db", create=False)


def test_unstorable_events_are_refused_before_touching_the_database(tmp_path: Path) -> None:
    store = SQLiteLedger(tmp_path / "l.db")
    with pytest.raises(InvalidEvent, match="cost_nanos"):
        store.write_batch([minimal_event("ok"), minimal_event("bad", cost_nanos=Decimal("1"))])
    with pytest.raises(InvalidEvent, match="savings"):
        store.write_batch([minimal_event("bad", savings={"cache": 0.5})])
    with pytest.raises(InvalidEvent):
        store.write_batch([minimal_event("bad", extra={"x": object()})])
    with pytest.raises(InvalidEvent):
        store.write_batch([minimal_event("bad", feature={"not": "a string"})])
    assert store.count() == 0  # the batch is all or nothing
    store.close()


def test_events_pages_and_filters(tmp_path: Path) -> None:
    store = SQLiteLedger(tmp_path / "l.db")
    batch = [
        minimal_event(f"sg-{i:04d}", ts=T0 + i, feature="a" if i % 3 else None) for i in range(2500)
    ]
    store.write_batch(batch)
    ids = [e.request_id for e in store.events(chunk=300)]
    assert ids == [e.request_id for e in batch]
    assert [e.request_id for e in store.events(7, chunk=3)] == ids[:7]
    untagged = list(store.events(filters={"feature": "(none)"}))
    assert [e.request_id for e in untagged] == [e.request_id for e in batch if e.feature is None]
    store.close()


def test_memory_ledger_is_one_database_across_threads() -> None:
    store = open_ledger("sqlite:///:memory:")
    t = threading.Thread(target=store.write_batch, args=([minimal_event("sg-t")],))
    t.start()
    t.join()
    assert store.count() == 1
    store.close()


def test_readers_in_other_threads_see_committed_batches_while_writing(tmp_path: Path) -> None:
    store = SQLiteLedger(tmp_path / "l.db")
    counts: list[int] = []
    errors: list[BaseException] = []
    stop = threading.Event()

    def read() -> None:
        try:
            while not stop.is_set():
                counts.append(store.count())
                store.spend(["feature", "model"])
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    readers = [threading.Thread(target=read) for _ in range(3)]
    for r in readers:
        r.start()
    for b in range(40):
        store.write_batch([minimal_event(f"sg-{b}-{i}") for i in range(100)])
    stop.set()
    for r in readers:
        r.join()
    assert not errors
    assert all(c % 100 == 0 for c in counts)  # a batch is seen whole or not at all
    assert store.count() == 4000
    store.close()
