"""The what-if simulator: the seed's worked example, traffic replay, recommendations."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest
from click.testing import CliRunner

from spendgate.analytics.recommend import recommend
from spendgate.analytics.simulate import Policy, TrafficRecord, project_rates, simulate_traffic
from spendgate.analytics.traffic import generate_traffic, load_traffic
from spendgate.call import Usage
from spendgate.cli import main
from spendgate.pricing import PriceCatalog

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


def test_seed_worked_example_by_hand() -> None:
    # The seed: 1 M calls/day at $0.003 = $90,000/month; 30% cacheable, 40% simple enough
    # for a model 10–50× cheaper (we take 30×), prompts 20% longer than needed (input is
    # half of a call's cost) → "about $35,000/month, ~$660,000/year saved".
    p = project_rates(
        calls_per_day=Decimal(1_000_000),
        cost_per_call=Decimal("0.003"),
        cacheable=Decimal("0.30"),
        simple=Decimal("0.40"),
        cheap_cost_ratio=Decimal(1) / 30,
        prompt_excess=Decimal("0.20"),
        input_cost_share=Decimal("0.50"),
    )
    assert p.baseline == Decimal(90_000)
    # By hand: 90,000 × 0.7 = 63,000 (cache); × (1 − 0.5 × 0.2/1.2) = 57,750 (trim);
    # × (1 − 0.4 × 29/30) = 57,750 × 0.61333… = 35,420 (route).
    by_hand = Decimal(57_750) * (1 - Decimal("0.4") * Decimal(29) / 30)
    assert abs(p.combined - by_hand) < Decimal("0.01")
    assert abs(p.combined - 35_000) / 35_000 < Decimal("0.02")
    assert abs(p.saved_per_year - 660_000) / 660_000 < Decimal("0.01")
    # Not additive: the sum of the single-technique savings overstates the combined one.
    single = sum((p.baseline - v for v in p.alone.values()), Decimal(0))
    assert single > p.saved_per_month
    assert any("57750.00" in step for step in p.steps)


def test_scaling_keeps_the_mix() -> None:
    p = project_rates(
        calls_per_day=Decimal(1000),
        cost_per_call=Decimal("0.01"),
        cacheable=Decimal("0.1"),
        simple=Decimal("0.2"),
        cheap_cost_ratio=Decimal("0.1"),
        prompt_excess=Decimal(0),
        input_cost_share=Decimal("0.5"),
    )
    big = p.scaled(Decimal(1_000_000))
    assert big.baseline == p.baseline * 1000
    assert big.combined / big.baseline == p.combined / p.baseline


def _rec(
    prompt: str, tenant: str = "t1", model: str = "gpt-4o", ts: float = 0.0, tokens: int = 100
) -> TrafficRecord:
    return TrafficRecord(
        feature="f",
        tenant=tenant,
        model=model,
        input_tokens=tokens,
        output_tokens=200,
        ts=ts,
        prompt=prompt,
    )


def test_traffic_replay_cache_is_per_tenant_and_not_additive() -> None:
    catalog = PriceCatalog.default()
    day = 86_400.0
    records = [
        _rec("what is our refund policy", "t1", ts=0),
        _rec("what is our refund policy", "t1", ts=day / 2),  # repeat: cached
        _rec("what is our refund policy", "t2", ts=day / 2),  # other tenant: not cached
        _rec("```python\nprint(1)\n``` why does this fail", "t1", ts=day),  # code: not simple
    ]
    # The heuristic path (what a ledger with fingerprints only gets).
    p = simulate_traffic(records, Policy(prompt_excess=Decimal(0), engine="heuristic"), catalog)
    assert p.paths["cache"] == {"real": 0, "heuristic": 4}
    one = catalog.cost("gpt-4o", _usage(100, 200))
    cheap = catalog.cost("gpt-4o-mini", _usage(100, 200))
    assert one is not None and cheap is not None
    # Two of four calls are short prose → routed; one is a repeat → cached.
    assert p.touched["cache"] == Decimal(1) / 4
    assert p.touched["route"] == Decimal(3) / 4
    per_month = Decimal(30)  # the four calls span one day
    assert p.baseline == 4 * one.total * per_month
    # Combined, per call: cached → 0; two simple → cheap; the code call stays on gpt-4o.
    assert p.combined == (2 * cheap.total + one.total) * per_month


def _usage(i: int, o: int) -> Usage:

    return Usage(input_tokens=i, output_tokens=o)


def test_recommend_ranks_caching_when_traffic_repeats() -> None:
    records = [
        TrafficRecord(
            feature="faq",
            tenant="t",
            model="gpt-4o",
            input_tokens=80,
            output_tokens=150,
            ts=float(i),
            fingerprint=f"fp{i % 5}",
        )
        for i in range(100)
    ]
    recs = recommend(records)
    techniques = [r.technique for r in recs]
    assert "cache" in techniques and "routing" in techniques
    cache = next(r for r in recs if r.technique == "cache")
    assert cache.evidence["exact_repeats"] == 95
    assert cache.monthly_saving_usd > 0
    assert recs == sorted(recs, key=lambda r: r.monthly_saving_usd, reverse=True)


@pytest.mark.skipif(not (SHARED / "data").is_dir(), reason="shared data not present")
def test_generated_traffic_through_cli(tmp_path: Path) -> None:
    rows = generate_traffic(SHARED, calls=400, days=2)
    path = tmp_path / "traffic.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    assert len({r["tags"]["tenant"] for r in rows}) >= 5
    records = load_traffic(str(path))
    assert len(records) == 400
    result = CliRunner().invoke(main, ["simulate", str(path), "--json", "--volume", "1000000"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert Decimal(out["calls_per_day"]) == 1_000_000
    assert Decimal(out["combined_monthly_usd"]) < Decimal(out["baseline_monthly_usd"])
    assert Decimal(out["touched_share"]["cache"]) > 0


def test_rates_cli_prints_the_arithmetic() -> None:
    result = CliRunner().invoke(
        main, ["simulate", "--calls-per-day", "1000000", "--cost-per-call", "0.003"]
    )
    assert result.exit_code == 0, result.output
    assert "$90000.00/month" in result.output
    assert "cache: 30.00% of calls" in result.output
