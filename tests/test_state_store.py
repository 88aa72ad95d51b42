"""The state store (stored Responses, batches, deferred calls) on SQLite and PostgreSQL:
owners, expiry, the compare-and-set that lets one replica win, batched writes; and a
gateway whose ledger is PostgreSQL keeps its Responses there."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from spendgate.state import StateStore, open_state, state_url

PG = "postgresql://postgres@127.0.0.1:5432/test"


def _pg_available() -> bool:
    try:
        import psycopg

        with psycopg.connect(PG, connect_timeout=2):
            return True
    except Exception:
        return False


def _drop(schema: str) -> None:
    import psycopg

    with psycopg.connect(PG, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'.encode())


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StateStore]:
    schema = f"sgst_{uuid.uuid4().hex[:10]}"
    if request.param == "postgres":
        if not _pg_available():
            pytest.skip("PostgreSQL not reachable")
        url = f"{PG}?schema={schema}"
    else:
        url = f"sqlite:///{tmp_path / 'state.db'}"
    clock = [1000.0]
    st = open_state(url)
    st.clock = lambda: clock[0]
    st.tick = clock  # type: ignore[attr-defined]
    yield st
    st.close()
    if request.param == "postgres":
        _drop(schema)


def test_put_get_expire_delete(store: StateStore) -> None:
    store.put("response", "a", "t:one", b"x", ttl_s=10)
    store.put("response", "b", "t:two", b"y")
    got = store.get("response", "a")
    assert got is not None and (got.owner, got.value) == ("t:one", b"x")
    store.tick[0] += 11  # type: ignore[attr-defined]
    assert store.get("response", "a") is None  # expired reads as absent
    assert [r.id for r in store.list("response")] == ["b"]
    assert store.sweep() == 1
    assert store.delete("response", "b") and not store.delete("response", "b")


def test_advance_is_a_compare_and_set(store: StateStore) -> None:
    store.put("batch", "x", "o", b"v", status="pending")
    assert store.advance("batch", "x", ["pending"], "recording")
    assert not store.advance("batch", "x", ["pending"], "recording")  # the loser
    # a stale claim can be taken over, a fresh one cannot
    assert not store.advance("batch", "x", ["recording"], "recording", older_than=999.0)
    store.tick[0] += 5  # type: ignore[attr-defined]
    assert store.advance("batch", "x", ["recording"], "recording", older_than=1004.0)
    assert store.advance("batch", "x", ["recording"], "recorded", value=b"done")
    record = store.get("batch", "x")
    assert record is not None and (record.status, record.value) == ("recorded", b"done")
    assert [r.id for r in store.list("batch", statuses=["pending", "recording"])] == []


def test_put_many_and_owners(store: StateStore) -> None:
    store.put_many("response", [(f"r{i}", f"t:{i % 2}", b"v", None) for i in range(50)])
    assert len(store.list("response", owner="t:0")) == 25
    store.put_many("response", [("r0", "t:9", b"new", None)])  # an upsert
    record = store.get("response", "r0")
    assert record is not None and (record.owner, record.value) == ("t:9", b"new")


def test_state_lives_beside_the_ledger() -> None:
    assert state_url("sqlite:////data/spendgate.db") == "sqlite:////data/spendgate-state.db"
    assert state_url("sqlite:///:memory:") == "sqlite:///:memory:"
    assert state_url(PG + "?schema=s") == PG + "?schema=s"
    assert state_url("sqlite:///x.db", "sqlite:///y.db") == "sqlite:///y.db"


def test_a_postgres_ledgers_gateway_keeps_responses_there(make_gateway: Any) -> None:
    if not _pg_available():
        pytest.skip("PostgreSQL not reachable")
    schema = f"sgst_{uuid.uuid4().hex[:10]}"
    url = f"{PG}?schema={schema}"
    try:
        first = make_gateway(storage={"ledger": url})
        with openai.OpenAI(base_url=first.v1, api_key="x", max_retries=0) as c:
            made = c.responses.create(model="gpt-4o-mini", input="Keep me in PostgreSQL.")
        first.close()
        second = make_gateway(storage={"ledger": url})  # another replica, same database
        with openai.OpenAI(base_url=second.v1, api_key="x", max_retries=0) as c:
            assert c.responses.retrieve(made.id).output_text == made.output_text
            follow = c.responses.create(
                model="gpt-4o-mini", input="And then?", previous_response_id=made.id
            )
        assert follow.usage is not None and made.usage is not None
        assert follow.usage.input_tokens > made.usage.input_tokens
        second.close()
    finally:
        _drop(schema)
