"""Budgets under Redis faults (issue 17): three gateway processes share one hard budget
through a redis-server this test starts on a free port; traffic runs until the budget
refuses, with Redis paused (SIGSTOP … SIGCONT) or killed and restarted empty in the middle.

Each case must hold:
- admitted spend ≤ the limit + one reservation per replica;
- every request has exactly one ledger row;
- afterwards the Redis counter equals the sum of the three ledgers, with no reservation and
  no lease left (failed settlements were retried from the outbox; a Redis that came back
  empty was re-seeded from the ledgers).

The scenario itself is `bench/faults.py`'s (the bench runs all four fault × mode cases at
the issue's $0.50; here two, on a smaller budget, to stay fast).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from spendgate.simulated import SimulatedUpstream

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import faultkit
from faults import Ctx, budget_scenario

pytestmark = pytest.mark.skipif(not faultkit.have_redis(), reason="no redis-server binary")


@pytest.mark.parametrize(("fault", "fail_open"), [("pause", True), ("restart", True)])
def test_budget_bound_and_counters_after_redis_fault(
    sim: SimulatedUpstream, tmp_path: Path, fault: str, fail_open: bool
) -> None:
    r = budget_scenario(
        Ctx(sim.url, tmp_path), fault, fail_open, limit_usd="0.03", max_tokens=64, fault_s=1.0
    )
    assert r["store_errors"] > 0, f"the fault was never seen: {r}"
    assert r["rows"] == r["requests"], r
    assert r["refused_429"] > 0, f"the budget never refused: {r}"
    assert r["within_bound"], {k: r[k] for k in ("overshoot_usd", "bound_usd", "admitted_usd")} | r
    assert r["counter_equals_ledger"], r
    assert r["reserved_left"] == 0 and r["leases_left"] == 0, r
    assert r["gateway_exit_codes"] == [0, 0, 0], r
