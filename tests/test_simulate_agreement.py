"""The simulator's projection against what a real gateway measures on the same traffic.

400 generated requests (real prompts, real paraphrases, repeats; features, tenants, a daily
cycle) are projected by `simulate_traffic` and then sent, in time order, through a real
gateway (SimulatedUpstream, SQLite ledger) with the same `cache:` and `routing:` sections.
The ledger's cache hits, route decisions and actual/baseline cost are compared with the
projection. Margins (docs/simulator.md): cache, semantic and routed shares within 5
percentage points; the combined/baseline cost ratio within 10% (relative) when the
projection uses the ledger's output lengths, 15% with the generator's own.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx2
import pytest

from conftest import Harness
from spendgate.analytics.simulate import Policy, Projection, simulate_traffic
from spendgate.analytics.traffic import generate_traffic, record_from_request
from spendgate.cache.config import CacheConfig
from spendgate.cache.verifier import MINILM_MODEL_PATH
from spendgate.ledger import UsageEvent
from spendgate.routing.config import RoutingConfig

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
CALLS = 300
SHARE_MARGIN = Decimal("0.05")
RATIO_MARGIN = Decimal("0.10")
RAW_RATIO_MARGIN = Decimal("0.15")
"""With the generator's output lengths (the upstream writes answers of its own lengths)."""

pytestmark = pytest.mark.skipif(not (SHARED / "data").is_dir(), reason="shared data not present")


def _sections(
    embedder: str | None, threshold: float | None
) -> tuple[dict[str, Any], dict[str, Any]]:
    if embedder == "minilm" and not MINILM_MODEL_PATH.exists():
        pytest.skip("this build has no MiniLM verifier")
    semantic: dict[str, Any] = {"enabled": True, "threshold": threshold}
    if embedder is not None:
        semantic.update(embedder=embedder, verifier="features")
    if threshold is not None:
        semantic["delta"] = None  # one static bar, not per-entry thresholds
    # A TTL longer than the traffic's two days: the gateway replays it in seconds, the
    # simulator on the records' clock, so a 1-hour TTL would expire only in the simulator.
    cache = {
        "enabled": True,
        "ttl_s": 7 * 86_400,
        "semantic": semantic,
    }
    routing = {"enabled": True, "strong": "gpt-4o", "weak": "gpt-4o-mini"}
    return cache, routing


def _replay(gw: Harness, rows: list[dict[str, Any]]) -> dict[str, UsageEvent]:
    ids: list[str] = []
    with httpx2.Client(timeout=30) as client:
        for row in rows:
            tags = row["tags"]
            r = client.post(
                gw.v1 + "/chat/completions",
                json=row["body"],
                headers={
                    "x-spendgate-feature": tags["feature"],
                    "x-spendgate-tenant": tags["tenant"],
                },
            )
            assert r.status_code == 200, r.text
            ids.append(r.headers["x-spendgate-request-id"])
    events = {e.request_id: e for e in gw.events()}
    assert len(events) == len(rows)
    return {f"row-{i}": events[rid] for i, rid in enumerate(ids)}


def _measured(events: list[UsageEvent]) -> dict[str, Decimal]:
    n = Decimal(len(events))
    hits = sum(e.cache in ("hit", "semantic-hit") for e in events)
    routed = sum(1 for e in events if e.route and e.route.get("served") != e.route.get("requested"))
    cost = sum(e.cost_nanos or 0 for e in events)
    base = sum(e.baseline_nanos or 0 for e in events)
    return {
        "cache": hits / n,
        "route": routed / n,
        "ratio": Decimal(cost) / Decimal(base),
        "semantic": sum(e.cache == "semantic-hit" for e in events) / n,
    }


def _figures(p: Projection) -> dict[str, Decimal]:
    return {
        "cache": p.combined_touched["cache"],
        "semantic": Decimal(p.cache_outcomes.get("semantic-hit", 0))
        / sum(p.paths["cache"].values()),
        "route": p.combined_touched["route"],
        "ratio": p.combined_ratio,
    }


@pytest.mark.parametrize(
    ("calls", "embedder", "threshold"),
    [
        # The shipped defaults: embedder, verifier threshold, router at quality_95.
        pytest.param(CALLS, None, None, id="default-config"),
        # The MiniLM cascade. The shipped thresholds keep precision high and these QQP
        # paraphrases mostly score below them; a looser bar exercises semantic hits on both
        # sides.
        pytest.param(200, "minilm", 0.6, id="semantic-threshold-0.6"),
    ],
)
def test_simulator_agrees_with_the_gateway(
    make_gateway: Callable[..., Harness],
    calls: int,
    embedder: str | None,
    threshold: float | None,
) -> None:
    rows = sorted(generate_traffic(SHARED, calls=calls, days=2, seed=11), key=lambda r: r["ts"])
    cache, routing = _sections(embedder, threshold)
    policy = Policy(
        trim=False,
        cache_config=CacheConfig.model_validate(cache),
        routing_config=RoutingConfig.model_validate(routing),
    )
    records = [record_from_request(r, 250) for r in rows]
    projected = simulate_traffic(records, policy)
    assert projected.paths["cache"] == {"real": calls, "heuristic": 0}
    assert projected.paths["route"] == {"real": calls, "heuristic": 0}

    gw = make_gateway(cache=cache, routing=routing)
    by_row = _replay(gw, rows)
    measured = _measured(list(by_row.values()))

    # The same projection with each request's output length taken from the ledger (the
    # simulated upstream writes its own answers): for a hit, the output of the first answer
    # to the same (tenant, prompt); for a semantic hit (another prompt's answer), the
    # median answer length the ledger shows for that model.
    first: dict[tuple[str, str], int] = {}
    lengths: dict[str, list[int]] = {}
    for i, r in enumerate(records):
        e = by_row[f"row-{i}"]
        if e.cache not in ("hit", "semantic-hit"):
            first.setdefault((r.tenant, r.prompt or ""), e.output_tokens)
            lengths.setdefault(r.model, []).append(e.output_tokens)
    median = {m: sorted(v)[len(v) // 2] for m, v in lengths.items()}
    aligned = []
    for i, r in enumerate(records):
        e = by_row[f"row-{i}"]
        hit = e.cache in ("hit", "semantic-hit")
        fallback = median.get(r.model, r.output_tokens)
        out = first.get((r.tenant, r.prompt or ""), fallback) if hit else e.output_tokens
        aligned.append(record_from_request({**rows[i], "output_tokens": out}, 250))
    projected_aligned = simulate_traffic(aligned, policy)

    sim, sim_aligned = _figures(projected), _figures(projected_aligned)
    report = {
        "calls": calls,
        "embedder": policy.cache_config.semantic.embedder if policy.cache_config else None,
        "semantic_threshold": threshold,
        "simulated": {k: str(v.quantize(Decimal("0.0001"))) for k, v in sim.items()},
        "simulated_ledger_outputs": {
            k: str(v.quantize(Decimal("0.0001"))) for k, v in sim_aligned.items()
        },
        "measured": {k: str(v.quantize(Decimal("0.0001"))) for k, v in measured.items()},
    }
    print(json.dumps(report, indent=2))
    dest = os.environ.get("SPENDGATE_AGREEMENT_OUT")
    if dest:
        Path(f"{dest}.{embedder or 'default'}-{threshold or 'default'}.json").write_text(
            json.dumps(report, indent=2)
        )
    assert measured["cache"] > 0 and measured["route"] > 0
    assert abs(sim["cache"] - measured["cache"]) <= SHARE_MARGIN, report
    assert abs(sim["route"] - measured["route"]) <= SHARE_MARGIN, report
    assert abs(sim["semantic"] - measured["semantic"]) <= SHARE_MARGIN, report
    if threshold is not None:
        assert measured["semantic"] > 0, report
    assert abs(sim_aligned["ratio"] - measured["ratio"]) / measured["ratio"] <= RATIO_MARGIN, report
    assert abs(sim["ratio"] - measured["ratio"]) / measured["ratio"] <= RAW_RATIO_MARGIN, report
