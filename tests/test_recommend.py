"""Recommendations: every technique's evidence, and every snippet valid for the real config
models; the fine-tune break-even arithmetic (the seed's example) and `spendgate analyze`."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from spendgate.analytics.finetune import FineTune, Prices, break_even, for_feature
from spendgate.analytics.recommend import recommend
from spendgate.analytics.simulate import TrafficRecord
from spendgate.cli import main
from spendgate.config import parse_settings


def _traffic() -> list[TrafficRecord]:
    rows: list[TrafficRecord] = []
    for i in range(100):  # short, repeated questions on a frontier model
        rows.append(
            TrafficRecord(
                feature="support", tenant="t", model="gpt-4o", input_tokens=300,
                output_tokens=100, ts=i * 300.0, fingerprint=f"fp{i % 10}", user=f"a{i}",
            )
        )  # fmt: skip
    for i in range(150):  # long prompts with a long system prompt
        rows.append(
            TrafficRecord(
                feature="support", tenant="t", model="gpt-4o", input_tokens=1500,
                output_tokens=150, ts=i * 500.0, user=f"b{i}", system_tokens=800,
                fingerprint=f"long{i}",
            )
        )  # fmt: skip
    for k in range(10):  # one conversation resending its history
        rows.append(
            TrafficRecord(
                feature="support", tenant="t", model="gpt-4o", input_tokens=1100 + 300 * k,
                output_tokens=120, ts=40_000.0 + k * 60, user="chatty",
                fingerprint=f"chat{k}",
            )
        )  # fmt: skip
    for i in range(400):  # a high-volume feature of long, hard calls: a fine-tune candidate
        rows.append(
            TrafficRecord(
                feature="bulk", tenant="t", model="gpt-4o", input_tokens=1500,
                output_tokens=150, ts=i * 200.0, user=f"c{i}", fingerprint=f"bulk{i}",
            )
        )  # fmt: skip
    rows.append(  # one runaway answer
        TrafficRecord(
            feature="support", tenant="t", model="gpt-4o", input_tokens=200,
            output_tokens=4000, ts=86_000.0, user="z", fingerprint="runaway",
        )
    )  # fmt: skip
    return rows


SECTION = {
    "cache": "cache",
    "routing": "routing",
    "prompt_cache": "prefix",
    "output_cap": "trim",
    "system_prompt": "trim",
    "history": "trim",
    "finetune": "routing",
}


def test_every_technique_is_recommended_with_a_valid_snippet() -> None:
    recs = recommend(_traffic())
    assert {r.technique for r in recs} == set(SECTION)
    ft = next(r for r in recs if r.technique == "finetune")
    assert ft.feature == "bulk" and ft.evidence["calls_routing_keeps_strong"] == 400
    assert recs == sorted(recs, key=lambda r: r.monthly_saving_usd, reverse=True)
    for r in recs:
        data = yaml.safe_load(r.how)
        assert isinstance(data, dict) and SECTION[r.technique] in data, (r.technique, r.how)
        settings = parse_settings(data)  # validates every section with its real model
        section = getattr(settings, SECTION[r.technique])
        assert section is not None
        assert r.assumptions, r.technique
    by = {r.technique: r for r in recs}
    cache = parse_settings(yaml.safe_load(by["cache"].how)).cache
    assert cache.features["support"].enabled and cache.features["support"].semantic
    routing = parse_settings(yaml.safe_load(by["routing"].how)).routing
    assert routing.strong == "gpt-4o" and routing.overrides[0].feature == "support"
    assert routing.overrides[1].enabled is False
    trim = parse_settings(yaml.safe_load(by["output_cap"].how)).trim
    assert trim.output.feature_caps["support"] > 0 and trim.active
    hist = parse_settings(yaml.safe_load(by["history"].how)).trim
    assert hist.history.features == ["support"]
    prefix = parse_settings(yaml.safe_load(by["prompt_cache"].how)).prefix
    assert prefix.features["support"].enabled


def test_long_system_prompt_evidence() -> None:
    r = next(r for r in recommend(_traffic()) if r.technique == "system_prompt")
    assert r.feature == "support"
    assert r.evidence["avg_system_tokens"] == 800
    assert r.evidence["calls_with_system_prompt"] == 150
    # 150 calls × 800 tokens × $2.50/M × 30% cut × 30 (one day of traffic → a month)
    expected = Decimal(150 * 800) * Decimal("2.5") / 1_000_000 * Decimal("0.3") * 30
    assert abs(r.monthly_saving_usd - expected) < Decimal("0.01")


def test_growing_history_evidence() -> None:
    r = next(r for r in recommend(_traffic()) if r.technique == "history")
    assert r.evidence["growing_conversations"] == 1
    assert r.evidence["longest_run"] == 10
    # Calls 4..10 of the run carry 900..2700 history tokens over the first call.
    assert r.evidence["calls_deep_in_them"] == 7
    assert r.evidence["avg_history_tokens"] == 1800


def test_no_history_advice_without_growth() -> None:
    flat = [
        TrafficRecord(feature="f", tenant="t", model="gpt-4o", input_tokens=500,
                      output_tokens=100, ts=float(i), user="u")
        for i in range(20)
    ]  # fmt: skip
    assert not [r for r in recommend(flat) if r.technique == "history"]


def test_seed_finetune_example() -> None:
    # Seed: fine-tuned GPT-3.5 at $0.008/1K vs GPT-4o at $0.030/1K → "75% cheaper per call".
    case = break_even(
        calls_per_month=Decimal(30_000_000),
        input_tokens=Decimal(50),
        output_tokens=Decimal(50),
        current=Prices.per_1k(Decimal("0.030")),
        tuned=FineTune(
            prices=Prices.per_1k(Decimal("0.008")),
            training_cost=Decimal(5_000),
            model="ft:gpt-3.5-turbo",
        ),
        current_model="gpt-4o",
    )
    # 100 tokens at $0.030/1K = $0.003 a call (the seed's chatbot call); tuned $0.0008.
    assert case.current_cost_per_call == Decimal("0.003")
    assert case.tuned_cost_per_call == Decimal("0.0008")
    assert case.cheaper_share == Decimal(22) / 30  # 73⅓%: the seed rounds to 75%
    assert abs(case.cheaper_share - Decimal("0.75")) < Decimal("0.02")
    # Break-even: $5,000 / 12 months ÷ $0.0022 per call = 189,394 calls/month.
    be = case.break_even_calls_per_month
    assert be is not None and abs(be - Decimal(5000) / 12 / Decimal("0.0022")) < 1
    assert case.pays and case.monthly_saving == Decimal(66_000)
    assert case.payback_months == Decimal(5000) / Decimal(66000)
    # Below break-even it does not pay; with no per-call saving there is no break-even.
    small = break_even(
        calls_per_month=Decimal(100_000), input_tokens=Decimal(50), output_tokens=Decimal(50),
        current=Prices.per_1k(Decimal("0.030")),
        tuned=FineTune(prices=Prices.per_1k(Decimal("0.008")), training_cost=Decimal(5_000)),
    )  # fmt: skip
    assert not small.pays
    worse = break_even(
        calls_per_month=Decimal(1), input_tokens=Decimal(1), output_tokens=Decimal(1),
        current=Prices.per_1k(Decimal("0.001")),
        tuned=FineTune(prices=Prices.per_1k(Decimal("0.002")), training_cost=Decimal(1)),
    )  # fmt: skip
    assert worse.break_even_calls_per_month is None and worse.payback_months is None


def test_finetune_for_a_logged_feature() -> None:
    case = for_feature(
        _traffic(),
        "support",
        FineTune(
            prices=Prices.per_1m(Decimal("0.30"), Decimal("1.20")),
            training_cost=Decimal(50),
            model="ft:gpt-4o-mini",
        ),
    )
    assert case.current_model == "gpt-4o"
    # 261 calls within one day (a span under a day counts as one) → × 30.
    assert case.calls_per_month == Decimal(261 * 30)  # the support rows only
    with pytest.raises(ValueError, match="no calls"):
        for_feature(
            _traffic(),
            "nope",
            FineTune(prices=Prices.per_1m(Decimal(1)), training_cost=Decimal(1), model="x"),
        )


def test_analyze_finetune_cli(tmp_path: Path) -> None:
    stated = [
        "analyze", "finetune", "--feature", "chatbot", "--model", "ft:gpt-3.5-turbo",
        "--price-in", "0.008", "--per", "1k", "--current-price-in", "0.030",
        "--current-model", "gpt-4o", "--calls-per-month", "30000000",
        "--input-tokens", "50", "--output-tokens", "50", "--training-cost", "5000", "--json",
    ]  # fmt: skip
    r = CliRunner().invoke(main, stated)
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert out["cheaper_share"] == "0.7333"
    assert out["break_even_calls_per_month"] == "189394"
    assert out["pays"] is True
    # From logged traffic (a JSONL of requests stands in for the ledger).
    rows = [
        {"ts": 1000.0 + 60 * i, "tags": {"feature": "faq", "tenant": "t"},
         "body": {"model": "gpt-4o", "messages": [{"role": "user", "content": f"q{i}"}]},
         "output_tokens": 200}
        for i in range(50)
    ]  # fmt: skip
    traffic = tmp_path / "t.jsonl"
    traffic.write_text("\n".join(json.dumps(row) for row in rows))
    r = CliRunner().invoke(
        main,
        ["analyze", "finetune", "--feature", "faq", "--model", "ft:gpt-4o-mini",
         "--price-in", "0.30", "--price-out", "1.20", "--training-cost", "20",
         "--ledger", str(traffic)],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "instead of gpt-4o" in r.output and "break-even" in r.output
    r = CliRunner().invoke(
        main, ["analyze", "finetune", "--feature", "faq", "--model", "nope-model",
               "--training-cost", "1", "--ledger", str(traffic)],
    )  # fmt: skip
    assert r.exit_code != 0 and "--price-in" in r.output


def test_analyze_prompts_is_the_trim_command(tmp_path: Path) -> None:
    from spendgate.trim.cli import analyze_prompts

    group = main.commands["analyze"]
    assert group.commands["prompts"].callback is analyze_prompts.callback  # type: ignore[attr-defined]
    ledger = f"sqlite:///{tmp_path / 'ledger.db'}"
    from spendgate.ledger import open_ledger

    open_ledger(ledger).close()
    r = CliRunner().invoke(main, ["analyze", "prompts", "--ledger", ledger, "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["features"] == []


def test_near_duplicates_measured_by_the_semantic_tier_when_prompts_are_logged() -> None:
    def ask(q: str, i: int, tenant: str = "t") -> TrafficRecord:
        return TrafficRecord(
            feature="faq", tenant=tenant, model="gpt-4o", input_tokens=20, output_tokens=80,
            ts=float(i), prompt=q,
        )  # fmt: skip

    rows = [
        ask("How do I reset my password?", 1),
        ask("how do i reset my password", 2),  # same question retyped: the semantic tier
        ask("How do I reset my password?", 3),  # exact repeat (fingerprint)
        ask("how do i reset my password", 4, tenant="u"),  # another tenant: no match
        ask("What are your opening hours?", 5),
    ]
    cache = next(r for r in recommend(rows) if r.technique == "cache")
    assert cache.evidence["exact_repeats"] == 1  # row 3 (fingerprints ignore case only)
    assert cache.evidence["near_duplicates"] == 1  # row 2, by the semantic tier
    assert cache.evidence["near_duplicates_checked"] == 5
    assert cache.monthly_saving_usd > 0


def _job(feature: str, *, stream: bool = False, night: bool = True, latency: float = 800.0,
         days: int = 3) -> list[TrafficRecord]:  # fmt: skip
    rows = []
    for day in range(days):
        for i in range(40):
            # a nightly job between 02:00 and 03:00 UTC, or calls spread over the day
            ts = day * 86_400 + (7_200 + i * 90 if night else i * 2_160)
            rows.append(
                TrafficRecord(
                    feature=feature, tenant="t", model="gpt-4o", input_tokens=2000,
                    output_tokens=400, ts=float(ts), fingerprint=f"{feature}{day}-{i}",
                    stream=stream, latency_ms=latency,
                )
            )  # fmt: skip
    return rows


def test_batch_is_recommended_for_a_nightly_job_at_the_batch_price() -> None:
    recs = [r for r in recommend(_job("digest")) if r.technique == "batch"]
    assert len(recs) == 1
    rec = recs[0]
    assert rec.feature == "digest" and rec.evidence["calls"] == 120
    assert rec.evidence["share_in_busiest_4h_of_day"] == 1.0
    features = parse_settings(yaml.safe_load(rec.how)).features
    assert features.get("digest").batchable
    # gpt-4o at half price over the ledger's 2-day span, projected to a month: the saving is
    # half of what the same calls cost, whatever the span.
    from spendgate.analytics.simulate import DAYS_PER_MONTH
    from spendgate.call import Usage
    from spendgate.pricing import PriceCatalog

    one = PriceCatalog.default().cost("gpt-4o", Usage(input_tokens=2000, output_tokens=400))
    assert one is not None
    span_days = Decimal(2 * 86_400 + 39 * 90) / 86_400
    monthly = one.total * 120 * Decimal(DAYS_PER_MONTH) / span_days
    assert abs(rec.monthly_saving_usd - monthly / 2) < Decimal("0.01")


def test_batch_is_recommended_for_patient_clients_but_never_for_streams() -> None:
    spread_slow = _job("reports", night=False, latency=25_000.0)
    spread_fast = _job("chat", night=False)
    streamed = _job("nightly-stream", stream=True)
    recs = recommend(spread_slow + spread_fast + streamed)
    assert {r.feature for r in recs if r.technique == "batch"} == {"reports"}
