"""The ledger spool: events queued but not stored survive the process.

- unit: a writer whose store is down closes within its timeout and leaves its events in the
  spool; the next writer on that directory recovers them (a torn last line is skipped), and
  a live process's segments are never taken;
- SIGKILL: a gateway process holding every event in its buffer is killed; the next start
  recovers all of them (one row per answered request, no duplicates);
- SIGTERM with PostgreSQL down (a cluster this test starts with initdb/pg_ctl): the gateway
  exits within `ledger.shutdown_grace_s`, and the next start writes what it spooled.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx2
import pytest

from spendgate.ledger import BatchingWriter, UsageEvent, open_ledger
from spendgate.ledger.spool import Spool
from spendgate.simulated import SimulatedUpstream

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import faultkit


def _event(i: int, feature: str = "spool") -> UsageEvent:
    return UsageEvent(
        request_id=f"sp-{uuid.uuid4().hex}-{i}",
        ts=time.time(),
        endpoint="chat",
        api="openai",
        requested_model="gpt-4o-mini",
        status=200,
        latency_ms=1.0,
        feature=feature,
        cost_nanos=1000 + i,
        extra={"decisions": {"budget": {"reserved_nanos": 5}}},
    )


class _DownStore:
    """A store that is away (raises like a dropped connection) until `up` is set."""

    def __init__(self) -> None:
        self.calls = 0

    def write_batch(self, events: Sequence[UsageEvent]) -> None:
        self.calls += 1
        raise ConnectionError("store is down")


def test_unwritten_events_survive_in_the_spool(tmp_path: Path) -> None:
    spool_dir = tmp_path / "spool"
    down = _DownStore()
    writer = BatchingWriter(down, flush_interval=0.01, spool=Spool(spool_dir))  # type: ignore[arg-type]
    events = [_event(i) for i in range(50)]
    for e in events:
        writer.submit(e)
    started = time.monotonic()
    assert writer.close(timeout=0.3) is False  # the store never came back
    assert time.monotonic() - started < 5
    assert down.calls >= 1
    segments = list(spool_dir.glob("*.spool"))
    assert segments
    with segments[-1].open("ab") as f:
        f.write(b'{"request_id": "torn')  # a crash mid-write leaves half a line

    store = open_ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    again = BatchingWriter(store, spool=Spool(spool_dir))
    assert again.stats()["recovered"] == 50
    # replaying twice is harmless: the store dedupes by request id
    for e in events[:10]:
        again.submit(e)
    assert again.close(timeout=10)
    rows = {e.request_id: e for e in store.events(filters={"feature": "spool"})}
    assert set(rows) == {e.request_id for e in events}
    assert rows[events[7].request_id].cost_nanos == events[7].cost_nanos
    assert rows[events[7].request_id].extra == events[7].extra
    assert not list(spool_dir.glob("*.spool")), "a clean close leaves no segment"
    store.close()


def test_live_segments_are_not_recovered(tmp_path: Path) -> None:
    live = Spool(tmp_path)
    live.append(_event(1))
    other = Spool(tmp_path)
    events, paths = other.take_orphans()
    assert events == [] and paths == []
    live.close(keep=True)  # its process "died": now the segment is an orphan
    events, paths = other.take_orphans()
    assert len(events) == 1 and len(paths) == 1
    other.close(keep=False)


async def _fire(url: str, n: int, feature: str) -> list[str]:
    async with httpx2.AsyncClient(timeout=60) as client:

        async def one(i: int) -> str:
            body: dict[str, Any] = {
                "model": "gpt-4o-mini",
                "max_tokens": 8,
                "messages": [{"role": "user", "content": f"spool {i}"}],
            }
            r = await client.post(
                url + "/v1/chat/completions", json=body, headers={"x-spendgate-feature": feature}
            )
            assert r.status_code == 200, r.text
            return str(r.headers["x-spendgate-request-id"])

        return list(await asyncio.gather(*(one(i) for i in range(n))))


def test_sigkill_loses_no_acknowledged_event(sim: SimulatedUpstream, tmp_path: Path) -> None:
    feature = f"kill-{uuid.uuid4().hex[:8]}"
    # every event stays in the buffer until shutdown: a kill used to lose them all
    config = faultkit.gateway_config(
        tmp_path, sim.url, ledger={"flush_interval_s": 600, "max_batch": 100_000}
    )
    gw = faultkit.GatewayProcess(config)
    ids = asyncio.run(_fire(gw.url, 120, feature))
    gw.kill()
    store = open_ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    assert store.count() == 0, "nothing was written before the kill"
    store.close()

    again = faultkit.GatewayProcess(config)
    assert again.stop() == 0, again.log()
    store = open_ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    rows = [e.request_id for e in store.events(filters={"feature": feature})]
    store.close()
    assert sorted(rows) == sorted(ids)
    assert "recovered 120 unwritten event" in again.log()


@pytest.mark.skipif(not faultkit.have_postgres(), reason="no PostgreSQL binaries")
def test_sigterm_with_postgres_down_exits_within_grace(
    sim: SimulatedUpstream, tmp_path: Path
) -> None:
    pg = faultkit.PostgresServer()
    try:
        feature = f"pgdown-{uuid.uuid4().hex[:8]}"
        grace = 2.0
        config = faultkit.gateway_config(
            tmp_path,
            sim.url,
            storage={"ledger": pg.url},
            ledger={"spool": str(tmp_path / "spool"), "shutdown_grace_s": grace},
        )
        gw = faultkit.GatewayProcess(config)
        before = asyncio.run(_fire(gw.url, 30, feature))
        pg.stop("fast")
        during = asyncio.run(_fire(gw.url, 30, feature))  # answered while the ledger is away
        t0 = time.monotonic()
        gw.signal(signal.SIGTERM)
        code = gw.wait(timeout=60)
        took = time.monotonic() - t0
        assert code == 0, gw.log()
        assert took < grace + 5, f"shutdown took {took:.1f}s"
        assert "stay in the spool" in gw.log()

        pg.start()
        again = faultkit.GatewayProcess(config)
        assert again.stop() == 0, again.log()
        store = open_ledger(pg.url)
        rows = [e.request_id for e in store.events(filters={"feature": feature})]
        store.close()
        assert sorted(rows) == sorted(before + during)
    finally:
        pg.destroy()
