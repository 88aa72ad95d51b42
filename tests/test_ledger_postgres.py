"""PostgresLedger against the real PostgreSQL on 127.0.0.1:5432 (db `test`).

Each test gets its own schema (`?schema=…`), dropped afterwards, so parallel runs never
collide. The SQLite store is the reference: the same events must give the same answers.
Outages are real: a TCP proxy in front of PostgreSQL is stopped and restarted, and
backends are killed with `pg_terminate_backend`.
"""

from __future__ import annotations

import contextlib
import logging
import random
import socket
import threading
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from decimal import Decimal

import httpx2
import psycopg
import pytest
from click.testing import CliRunner

from conftest import Harness
from spendgate.cli import main
from spendgate.ledger import (
    BatchingWriter,
    InvalidEvent,
    SpendRow,
    SQLiteLedger,
    UsageEvent,
    open_ledger,
)
from spendgate.ledger.postgres import PostgresLedger, parse_postgres_url

PG = "postgresql://postgres@127.0.0.1:5432/test"


def _pg_available() -> bool:
    try:
        with psycopg.connect(PG, connect_timeout=2):
            return True
    except psycopg.Error:
        return False


pytestmark = pytest.mark.skipif(not _pg_available(), reason="PostgreSQL not reachable")


def drop_schema(schema: str) -> None:
    with psycopg.connect(PG, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'.encode())


@pytest.fixture
def schema() -> Iterator[str]:
    name = f"sgt_{uuid.uuid4().hex[:12]}"
    yield name
    drop_schema(name)


@pytest.fixture
def pg_url(schema: str) -> str:
    return f"{PG}?schema={schema}"


T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC).timestamp()


def random_events(n: int, seed: int = 7, prefix: str = "ev") -> list[UsageEvent]:
    """Events over five days with missing tags, failures and unknown costs."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        cost = None if rng.random() < 0.1 else rng.randrange(0, 10**12)
        savings = {"cache": rng.randrange(0, 10**9)} if rng.random() < 0.3 else {}
        out.append(
            UsageEvent(
                request_id=f"{prefix}-{i}",
                ts=T0 + rng.uniform(-2, 3) * 86400,
                endpoint=rng.choice(["chat", "messages", "embeddings"]),
                api=rng.choice(["openai", "anthropic"]),
                requested_model=rng.choice(["gpt-4o", "gpt-4o-mini", "claude-sonnet-4"]),
                served_model=rng.choice([None, "gpt-4o-mini", "claude-sonnet-4-20250514"]),
                status=rng.choice([200, 200, 200, 400, 429, 502]),
                latency_ms=rng.uniform(1, 900),
                feature=rng.choice([None, "search", "chat", "summarize"]),
                use_case=rng.choice([None, "a", "b"]),
                team=rng.choice([None, "core", "growth"]),
                tenant=rng.choice([None, "t1", "t2", "t3"]),
                user=rng.choice([None, "u1", "u2"]),
                key_id=rng.choice([None, "k1"]),
                provider=rng.choice([None, "openai", "anthropic"]),
                input_tokens=rng.randrange(0, 100_000),
                output_tokens=rng.randrange(0, 10_000),
                cache_read_tokens=rng.randrange(0, 1000),
                reasoning_tokens=rng.randrange(0, 50),
                usage_estimated=rng.random() < 0.1,
                cost_nanos=cost,
                baseline_nanos=None if cost is None else cost + sum(savings.values()),
                savings=savings,
                stream=rng.random() < 0.5,
                route={"rule": "cheap", "why": ["x", 1]} if rng.random() < 0.2 else None,
                attempts=[{"deployment": "d", "status": 200, "ms": 1.5}],
                ttfb_ms=rng.choice([None, 12.5]),
                extra=rng.choice(
                    [
                        None,
                        {"π": "unicode ✓"},
                        {
                            "system_tokens": rng.randrange(0, 120_000),
                            "input_cost_nanos": rng.randrange(0, 10**9),
                        },
                    ]
                ),
            )
        )
    return out


QUERIES: list[tuple[list[str], dict[str, str] | None, bool]] = [
    ([], None, False),
    (["feature"], None, False),
    (["model"], None, False),
    (["feature", "model"], None, True),
    (["day", "status"], None, False),
    (["team", "tenant", "user"], {"endpoint": "chat"}, False),
    (["provider", "key_id", "use_case"], {"feature": "(none)"}, True),
    (["requested_model"], {"status": "429"}, False),
    (["endpoint"], {"day": "2026-03-01", "tenant": "t1"}, False),
]


def test_same_answers_as_sqlite(pg_url: str) -> None:
    events = random_events(1500)
    reference = SQLiteLedger(":memory:")
    reference.write_batch(events)
    with PostgresLedger(pg_url) as pg:
        for start in range(0, len(events), 400):
            pg.write_batch(events[start : start + 400])
        assert pg.count() == reference.count() == len(events)
        since = datetime(2026, 2, 28, 6, 0, tzinfo=UTC)
        until = datetime(2026, 3, 2, 18, 30)  # naive = UTC, like SQLite
        for by, filters, windowed in QUERIES:
            window = {"since": since, "until": until} if windowed else {}
            got = pg.spend(by, filters=filters, **window)
            want = reference.spend(by, filters=filters, **window)
            assert got == want, (by, filters)
            assert got, (by, filters)
        assert {e.request_id: e for e in pg.events()} == {e.request_id: e for e in events}
        window_events = list(pg.events(since=since, until=until, filters={"team": "core"}))
        assert sorted(e.request_id for e in window_events) == sorted(
            e.request_id
            for e in reference.events(since=since, until=until, filters={"team": "core"})
        )
        assert len(list(pg.events(limit=7, chunk=3))) == 7
        # One partition per UTC day the events touched (plus today/tomorrow made on open).
        days = {e.day.replace("-", "") for e in events}
        assert {f"usage_events_p{d}" for d in days} <= set(pg.partitions())
        with pytest.raises(ValueError, match="unknown report dimension"):
            pg.spend(["colour"])
        with pytest.raises(ValueError, match="status filter"):
            pg.spend(["model"], filters={"status": "ok"})
        with pytest.raises(ValueError, match="day filter"):
            pg.spend(["model"], filters={"day": "yesterday"})
    reference.close()


@pytest.mark.parametrize("method", ["aggregate", "savings_by_technique", "active_users"])
def test_report_fast_paths_match_sqlite(pg_url: str, method: str) -> None:
    """The report queries `analytics.reports` uses: same figures as the SQLite store
    (rollups or raw events) over the same events."""
    reference = SQLiteLedger(":memory:")
    events = random_events(1200, seed=11)
    for i, e in enumerate(events):
        if i % 4 == 0:
            e.savings = {"cache": 1000 + i, "routing": 7 * i} if i % 8 else {"trim": i}
    reference.write_batch(events)
    from spendgate.ledger.postgres import _REPORT
    from spendgate.ledger.rollups import AGGREGATES

    assert set(_REPORT) == set(AGGREGATES)
    since = datetime(2026, 2, 28, 6, 0, tzinfo=UTC)
    until = datetime(2026, 3, 2, 18, 30, tzinfo=UTC)
    with PostgresLedger(pg_url) as pg:
        pg.write_batch(events)
        for by, filters, windowed in QUERIES:
            window = (since, until) if windowed else (None, None)
            got = getattr(pg, method)(by, *window, filters)
            want = getattr(reference, method)(by, *window, filters)
            assert sorted(map(repr, got)) == sorted(map(repr, want)), (by, filters)
            assert got, (by, filters)
    reference.close()


def test_big_integers_sum_exactly(pg_url: str) -> None:
    """Sums past 2**63 nanos (PostgreSQL NUMERIC) come back as exact Python ints."""
    big = 2**62 + 12345
    events = [
        UsageEvent(request_id=f"big-{i}", ts=T0, endpoint="chat", api="openai",
                   requested_model="m", status=200, latency_ms=1.0, cost_nanos=big,
                   baseline_nanos=big)
        for i in range(5)
    ]  # fmt: skip
    with PostgresLedger(pg_url) as pg:
        pg.write_batch(events)
        (row,) = pg.spend([])
    assert row.cost_nanos == 5 * big and type(row.cost_nanos) is int


def test_batches_are_idempotent(pg_url: str) -> None:
    events = random_events(300, seed=3)
    with PostgresLedger(pg_url) as pg:
        pg.write_batch(events[:200])
        pg.write_batch(events[:200])  # the writer re-sends a batch whose commit it missed
        pg.write_batch(events[100:] + events[:5])  # overlapping
        pg.write_batch([events[0], events[0]])  # duplicate inside one batch
        assert pg.count() == 300
        assert pg.spend([]) == _sqlite_spend(events)


def _sqlite_spend(events: list[UsageEvent]) -> list[SpendRow]:
    with SQLiteLedger(":memory:") as ref:
        ref.write_batch(events)
        return ref.spend([])


def test_two_replicas_create_the_same_new_partitions_concurrently(pg_url: str) -> None:
    """Both stores see brand-new days at the same moment: the advisory lock + IF NOT EXISTS
    makes exactly one of them create each partition, and both batches land."""
    a, b = PostgresLedger(pg_url), PostgresLedger(pg_url)
    future = datetime(2031, 1, 1, tzinfo=UTC).timestamp()
    errors: list[BaseException] = []
    barrier = threading.Barrier(2)

    def write(store: PostgresLedger, prefix: str) -> None:
        batch = [
            UsageEvent(request_id=f"{prefix}-{d}", ts=future + d * 86400, endpoint="chat",
                       api="openai", requested_model="m", status=200, latency_ms=1.0)
            for d in range(6)
        ]  # fmt: skip
        barrier.wait()
        try:
            store.write_batch(batch)
        except BaseException as exc:  # surfaced by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(s, p)) for s, p in ((a, "a"), (b, "b"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert a.count() == 12
    assert sum(p.startswith("usage_events_p2031") for p in a.partitions()) == 6
    a.close()
    b.close()


def test_unstorable_event_is_rejected_alone(pg_url: str) -> None:
    """PostgreSQL refuses NUL in text; the writer bisects the batch and keeps the rest."""
    events = random_events(40, seed=5, prefix="nul")
    events[17].feature = "bad\x00feature"
    with PostgresLedger(pg_url) as pg:
        with pytest.raises(InvalidEvent):
            pg.write_batch(events[15:20])
        writer = BatchingWriter(pg, max_batch=40, flush_interval=0.01)
        for event in events:
            writer.submit(event)
        assert writer.flush(timeout=30)
        writer.close()
        stats = writer.stats()
        assert (stats["written"], stats["rejected"], stats["dropped"]) == (39, 1, 0)
        assert pg.count() == 39
        assert "nul-17" not in {e.request_id for e in pg.events()}


def test_schema_versions_and_cli(schema: str, pg_url: str) -> None:
    with pytest.raises(FileNotFoundError, match="spendgate db upgrade"):
        open_ledger(pg_url, create=False)
    runner = CliRunner()
    r = runner.invoke(main, ["db", "current", "--ledger", pg_url])
    assert r.exit_code == 0 and "version 0" in r.output, r.output
    r = runner.invoke(main, ["db", "history", "--ledger", pg_url])
    assert r.exit_code == 0 and "pending" in r.output, r.output
    r = runner.invoke(main, ["db", "upgrade", "--ledger", pg_url])
    assert r.exit_code == 0 and "applied 1" in r.output, r.output
    r = runner.invoke(main, ["db", "upgrade", "--ledger", pg_url])
    assert r.exit_code == 0 and "nothing to do" in r.output, r.output
    r = runner.invoke(main, ["db", "history", "--ledger", pg_url])
    assert r.exit_code == 0 and "pending" not in r.output, r.output
    with open_ledger(pg_url, create=False) as store:
        assert isinstance(store, PostgresLedger)
        assert store.current_version() == 1 and store.schema == schema
    # `spendgate report` reads the same ledger.
    with PostgresLedger(pg_url) as pg:
        pg.write_batch(random_events(20, seed=9))
    r = runner.invoke(main, ["report", "--ledger", pg_url, "--by", "model", "--json"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(main, ["db", "current", "--ledger", "postgresql://postgres@127.0.0.1:1/x"])
    assert r.exit_code == 1 and "cannot read" in r.output


def test_search_path_option_selects_the_schema(schema: str) -> None:
    url = f"{PG}?options=-csearch_path%3D{schema}"
    with open_ledger(url) as store:
        assert isinstance(store, PostgresLedger) and store.schema == schema
        store.write_batch(random_events(3, seed=1))
    with PostgresLedger(f"{PG}?schema={schema}") as same:
        assert same.count() == 3


def test_url_parsing() -> None:
    conninfo, schema = parse_postgres_url("postgresql+psycopg://u@h:1/d?schema=s1&sslmode=disable")
    assert schema == "s1" and conninfo.startswith("postgresql://u@h:1/d?")
    assert "sslmode=disable" in conninfo and "connect_timeout=5" in conninfo
    conninfo, schema = parse_postgres_url("postgres://h/d?connect_timeout=1")
    assert (
        schema is None and "connect_timeout=1" in conninfo and "connect_timeout=5" not in conninfo
    )
    for bad in ("postgresql://h/d?schema=a;drop", "postgresql://h/d?nonsense=1", "sqlite:///x"):
        with pytest.raises(ValueError):
            parse_postgres_url(bad)


# --------------------------------------------------------------------------- outages


class TcpProxy:
    """A loopback TCP proxy to PostgreSQL that can be stopped (listener and every live
    connection cut) and started again on the same port: a database that goes away."""

    def __init__(self, target: tuple[str, int] = ("127.0.0.1", 5432)) -> None:
        self.target = target
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self._listener: socket.socket | None = None
        self._socks: list[socket.socket] = []
        self._lock = threading.Lock()

    def start(self) -> None:
        listener = socket.create_server(("127.0.0.1", self.port))
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def stop(self) -> None:
        assert self._listener is not None
        self._listener.shutdown(socket.SHUT_RDWR)  # wakes accept() on Linux
        self._listener.close()
        self._listener = None
        with self._lock:
            socks, self._socks = self._socks, []
        for s in socks:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            with self._lock:
                self._socks += [client, upstream]
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)


@pytest.fixture
def proxy() -> Iterator[TcpProxy]:
    p = TcpProxy()
    p.start()
    yield p
    if p._listener is not None:
        p.stop()


def _events(prefix: str, n: int) -> list[UsageEvent]:
    now = datetime.now(UTC).timestamp()
    return [
        UsageEvent(request_id=f"{prefix}-{i}", ts=now, endpoint="chat", api="openai",
                   requested_model="gpt-4o", status=200, latency_ms=1.0, cost_nanos=i)
        for i in range(n)
    ]  # fmt: skip


def _fast_writer(store: PostgresLedger, **kw: int) -> BatchingWriter:
    return BatchingWriter(store, flush_interval=0.01, retry_backoff=0.01, max_backoff=0.05, **kw)


def test_nothing_lost_while_postgres_is_away(proxy: TcpProxy, schema: str) -> None:
    store = PostgresLedger(
        f"postgresql://postgres@127.0.0.1:{proxy.port}/test?schema={schema}&connect_timeout=2"
    )
    writer = _fast_writer(store, max_batch=50)
    first, during = _events("before", 30), _events("during", 120)
    for e in first:
        writer.submit(e)
    assert writer.flush(timeout=30)

    proxy.stop()
    for e in during:
        writer.submit(e)
    # The database is unreachable, so these cannot be written: the writer keeps them.
    assert writer.flush(timeout=1.0) is False
    stats = writer.stats()
    assert stats["write_errors"] >= 1 and stats["pending"] > 0 and stats["dropped"] == 0

    proxy.start()
    assert writer.flush(timeout=60)
    writer.close()
    stats = writer.stats()
    assert (stats["written"], stats["dropped"], stats["pending"]) == (150, 0, 0)
    with PostgresLedger(f"{PG}?schema={schema}") as direct:
        assert direct.count() == 150
        assert {e.request_id for e in direct.events()} == {e.request_id for e in first + during}
    store.close()


def test_overflow_while_away_is_counted_and_logged(
    proxy: TcpProxy, schema: str, caplog: pytest.LogCaptureFixture
) -> None:
    store = PostgresLedger(f"postgresql://postgres@127.0.0.1:{proxy.port}/test?schema={schema}")
    writer = _fast_writer(store, max_batch=4, max_buffer=8)
    proxy.stop()
    caplog.set_level(logging.ERROR, logger="spendgate.ledger")
    for e in _events("flood", 40):
        writer.submit(e)
    stats = writer.stats()
    assert stats["dropped"] >= 40 - 8 - 4  # buffer + the batch being retried
    assert any("dropped" in r.getMessage() and "buffer full" in r.getMessage()
               for r in caplog.records)  # fmt: skip
    proxy.start()
    assert writer.flush(timeout=60)
    writer.close()
    stats = writer.stats()
    assert stats["written"] + stats["dropped"] == 40 and stats["pending"] == 0
    assert store.count() == stats["written"] > 0
    store.close()


def test_killed_backends_are_replaced(schema: str) -> None:
    app = f"sgt-{uuid.uuid4().hex[:8]}"
    store = PostgresLedger(f"{PG}?schema={schema}&application_name={app}")
    writer = _fast_writer(store, max_batch=25)
    for e in _events("a", 50):
        writer.submit(e)
    assert writer.flush(timeout=30)
    assert store.count() == 50  # also leaves a pooled reader connection behind
    with psycopg.connect(PG, autocommit=True) as admin:
        killed = admin.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE application_name = %s",
            [app],
        ).fetchone()
    assert killed is not None and killed[0] >= 2  # the writer's and the reader's
    for e in _events("b", 50):
        writer.submit(e)
    assert writer.flush(timeout=30)
    writer.close()
    assert writer.stats()["write_errors"] >= 1
    assert writer.stats()["written"] == 100
    assert store.count() == 100  # the dead pooled reader was replaced transparently
    store.close()


# --------------------------------------------------------------------------- gateway


def test_gateway_writes_to_postgres(
    make_gateway: Callable[..., Harness], pg_url: str, http: httpx2.Client
) -> None:
    unset = "SG_TEST_UNSET_" + uuid.uuid4().hex[:8].upper()  # admin open: auth off
    gw = make_gateway(storage={"ledger": pg_url}, server={"auth": "off", "admin_key_env": unset})
    ids = []
    for i in range(5):
        r = http.post(gw.v1 + "/chat/completions", json={
            "model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"hello {i}"}],
        }, headers={"x-spendgate-feature": "pg-e2e"})  # fmt: skip
        assert r.status_code == 200, r.text
        ids.append(r.headers["x-spendgate-request-id"])
    bad = http.post(gw.v1 + "/chat/completions", json={"model": "gpt-4o-mini"})
    assert bad.status_code == 400
    ids.append(bad.headers["x-spendgate-request-id"])
    gw.flush()
    assert isinstance(gw.gateway.store, PostgresLedger)
    rows = {e.request_id: e for e in gw.events()}
    assert set(rows) == set(ids)
    assert all(rows[i].cost_nanos and rows[i].status == 200 for i in ids[:5])
    assert rows[ids[5]].status == 400
    (by_feature,) = gw.reader().spend(["feature"], filters={"feature": "pg-e2e"})
    assert by_feature.calls == 5
    assert by_feature.cost_nanos == sum(rows[i].cost_nanos or 0 for i in ids[:5])
    # The admin reports run on the PostgreSQL store's own GROUP BY queries.
    doc = http.get(gw.url + "/admin/spend?by=feature,model").json()
    (row,) = [r for r in doc["rows"] if r["feature"] == "pg-e2e"]
    assert row["calls"] == 5 and row["model"] == "gpt-4o-mini"
    assert Decimal(row["cost_usd"]) * 10**9 == by_feature.cost_nanos
    metrics = http.get(gw.url + "/metrics").text
    assert "spendgate_ledger_written 6.0" in metrics
    assert "spendgate_ledger_dropped 0.0" in metrics


def test_store_opened_while_postgres_is_away_sets_up_on_first_write(
    proxy: TcpProxy, schema: str, caplog: pytest.LogCaptureFixture
) -> None:
    """No schema in the URL path (search_path names it) and no database at start: the store
    opens anyway, the writer buffers, and the first write that connects creates the schema."""
    proxy.stop()
    caplog.set_level(logging.ERROR, logger="spendgate.ledger")
    url = f"postgresql://postgres@127.0.0.1:{proxy.port}/test?options=-csearch_path%3D{schema}"
    store = PostgresLedger(url)
    assert store.schema is None
    assert any("unreachable at startup" in r.getMessage() for r in caplog.records)
    with pytest.raises(psycopg.OperationalError):
        store.count()  # readers say the database is away, they do not guess
    with pytest.raises(psycopg.OperationalError):
        PostgresLedger(url, create=False)  # a report refuses instead of waiting
    writer = _fast_writer(store, max_batch=10)
    for e in _events("cold", 25):
        writer.submit(e)
    assert writer.flush(timeout=0.5) is False
    proxy.start()
    assert writer.flush(timeout=60)
    writer.close()
    assert store.schema == schema and store.current_version() == 1
    assert store.count() == 25 and writer.stats()["dropped"] == 0
    store.close()


def test_gateway_starts_and_serves_while_postgres_is_away(
    proxy: TcpProxy, schema: str, make_gateway: Callable[..., Harness], http: httpx2.Client
) -> None:
    proxy.stop()
    gw = make_gateway(
        storage={"ledger": f"postgresql://postgres@127.0.0.1:{proxy.port}/test?schema={schema}"}
    )
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
    r = http.post(gw.v1 + "/chat/completions", json=body)
    assert r.status_code == 200, r.text
    assert gw.gateway.writer.flush(timeout=0.5) is False  # held, not lost
    proxy.start()
    (row,) = gw.events()  # Harness.events flushes first
    assert row.request_id == r.headers["x-spendgate-request-id"] and row.cost_nanos
