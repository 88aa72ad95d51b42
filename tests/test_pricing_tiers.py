"""Money is never silently wrong: service tiers, batch, audio, long-context tiers, aliases.

Golden cases are worked by hand from the providers' published pages (cited per case); the
property test holds every catalogued model to one rule: our cost equals the published-rate
computation (genai-prices' own arithmetic on the applicable prices), or it is null — null
exactly when a used bucket, tier or service tier has no price.
"""

from __future__ import annotations

import json
import random
import warnings
from decimal import Decimal as D
from typing import Any

import pytest
from genai_prices import data_snapshot
from genai_prices import types as gp

from spendgate.call import Usage
from spendgate.pricing import (
    PriceCatalog,
    PriceFile,
    PriceOverride,
    price_command,
    usage_from_gemini,
    usage_from_openai,
)
from spendgate.pricing.pricefile import load_price_file, shipped_supplement
from spendgate.pricing.tiers import tier_context

M = D(1_000_000)


def _priced(model: str, usage: dict[str, Any], tier: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(
        price_command(model, json.dumps(usage), as_json=True, service_tier=tier)
    )
    return out


# ------------------------------------------------------------------ golden cases, by hand


def test_flex_o3_is_half_price() -> None:
    # platform.openai.com/docs/pricing (Flex): o3 $1 input, $0.25 cached, $4 output per M
    # (standard: $2 / $0.50 / $8).
    usage = {"prompt_tokens": 10_000, "completion_tokens": 2_000,
             "prompt_tokens_details": {"cached_tokens": 4_000},
             "completion_tokens_details": {"reasoning_tokens": 1_500}}  # fmt: skip
    want = (6_000 * D(1) + 4_000 * D("0.25") + 2_000 * D(4)) / M
    assert D(_priced("o3", usage, "flex")["cost_usd"]) == want == D("0.015")
    standard = (6_000 * D(2) + 4_000 * D("0.5") + 2_000 * D(8)) / M
    assert D(_priced("o3", usage)["cost_usd"]) == standard == 2 * want


def test_priority_gpt5_is_2x() -> None:
    # Priority: gpt-5 $2.50 input, $0.25 cached, $20 output per M (standard $1.25/$0.125/$10).
    usage = {"prompt_tokens": 3_000, "completion_tokens": 700}
    want = (3_000 * D("2.5") + 700 * D(20)) / M
    data = _priced("gpt-5", usage, "priority")
    assert D(data["cost_usd"]) == want == D("0.0215")
    assert data["service_tier"] == "priority"


def test_batch_gpt4o_mini_is_half_price() -> None:
    # Batch API: gpt-4o-mini $0.075 input, $0.30 output per M.
    usage = {"prompt_tokens": 40_000, "completion_tokens": 1_000}
    want = (40_000 * D("0.075") + 1_000 * D("0.3")) / M
    assert D(_priced("gpt-4o-mini", usage, "batch")["cost_usd"]) == want == D("0.0033")


def test_batch_claude_sonnet_4_from_its_usage_block() -> None:
    # Message Batches: 50 % of standard, caching multipliers stack: $1.50 input, $0.15 cache
    # read, $1.875 5-minute write, $7.50 output per M. The tier is read from usage.
    usage = {"input_tokens": 1_000, "cache_read_input_tokens": 8_000,
             "cache_creation_input_tokens": 2_000, "output_tokens": 500,
             "service_tier": "batch"}  # fmt: skip
    want = (1_000 * D("1.5") + 8_000 * D("0.15") + 2_000 * D("1.875") + 500 * D("7.5")) / M
    data = _priced("claude-sonnet-4-20250514", usage)
    assert data["service_tier"] == "batch" and D(data["cost_usd"]) == want == D("0.0102")


def test_gpt4o_audio_preview_bills_audio_at_audio_rates() -> None:
    # gpt-4o-audio-preview: text $2.50/$10, audio $40/$80 per M. Audio counts are parts of
    # prompt_tokens / completion_tokens.
    usage = {"prompt_tokens": 1_200, "completion_tokens": 900,
             "prompt_tokens_details": {"audio_tokens": 1_000},
             "completion_tokens_details": {"audio_tokens": 800}}  # fmt: skip
    want = (200 * D("2.5") + 1_000 * D(40) + 100 * D(10) + 800 * D(80)) / M
    assert D(_priced("gpt-4o-audio-preview", usage)["cost_usd"]) == want == D("0.1055")
    text_rate = (1_200 * D("2.5") + 900 * D(10)) / M
    assert want / text_rate > 8  # what it was under-billed by when audio paid the text rate


def test_claude_sonnet_4_above_200k_input_is_long_context() -> None:
    # Sonnet 4 above 200k input tokens: $6 input, $22.50 output per M, on every token.
    usage = {"input_tokens": 250_000, "output_tokens": 2_000}
    want = (250_000 * D(6) + 2_000 * D("22.5")) / M
    assert D(_priced("claude-sonnet-4", usage)["cost_usd"]) == want == D("1.545")
    under = (199_000 * D(3) + 2_000 * D(15)) / M
    assert D(_priced("claude-sonnet-4", {**usage, "input_tokens": 199_000})["cost_usd"]) == under


def test_mistral_large_latest_is_an_explicit_alias() -> None:
    data = _priced("mistral-large-latest", {"prompt_tokens": 1_000_000, "completion_tokens": 0})
    assert data["resolved"] == {"provider": "mistral", "model": "mistral-large-2512"}
    assert data["alias"]["target"] == "mistral/mistral-large-2512"
    assert D(data["cost_usd"]) == D("0.5")
    text = price_command("mistral-large-latest", '{"prompt_tokens": 10, "completion_tokens": 1}')
    assert "(alias, as of 2025-12-02)" in text.splitlines()[0]


def test_deepseek_night_discount_ended() -> None:
    from datetime import UTC, datetime

    catalog = PriceCatalog.default()
    u = Usage(input_tokens=1_000_000, output_tokens=1_000_000)
    night = datetime(2026, 11, 1, 20, 0, tzinfo=UTC)
    day = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
    a, b = catalog.cost("deepseek-chat", u, when=night), catalog.cost("deepseek-chat", u, when=day)
    assert a is not None and b is not None and a.total == b.total == D("0.28") + D("0.42")
    before_v32 = catalog.cost("deepseek-chat", u, when=datetime(2025, 9, 10, 20, 0, tzinfo=UTC))
    assert before_v32 is not None and before_v32.total == D("0.56") + D("1.68")


# ------------------------------------------------------------------ unknown, never neighbouring


@pytest.mark.parametrize(
    ("model", "usage", "tier", "why"),
    [
        # a tier the model has no price for
        ("gpt-4o-mini", {"prompt_tokens": 10, "completion_tokens": 1}, "flex", "flex"),
        ("claude-sonnet-4", {"input_tokens": 10, "output_tokens": 1}, "priority", "priority"),
        ("gpt-4o", {"prompt_tokens": 10, "completion_tokens": 1}, "scale", "scale"),
        # a bucket the tier's variant doesn't price (batch gpt-4o-mini lists no cached rate)
        ("gpt-4o-mini", {"prompt_tokens": 10, "completion_tokens": 1,
                         "prompt_tokens_details": {"cached_tokens": 5}}, "batch", "bucket"),
        # audio on a model with no audio price
        ("gpt-4o", {"prompt_tokens": 10, "completion_tokens": 1,
                    "prompt_tokens_details": {"audio_tokens": 5}}, None, "bucket"),
        ("gpt-4o", {"prompt_tokens": 10, "completion_tokens": 8,
                    "completion_tokens_details": {"audio_tokens": 5}}, None, "bucket"),
        # cached audio where only uncached audio is priced
        ("gemini-2.0-flash", {"promptTokenCount": 100, "cachedContentTokenCount": 50,
                              "cacheTokensDetails": [{"modality": "AUDIO", "tokenCount": 10}],
                              "promptTokensDetails": [{"modality": "AUDIO", "tokenCount": 20}],
                              "candidatesTokenCount": 1}, "batch", "batch"),
        # a 1-hour write on a model with no 1-hour price
        ("gpt-4o", {"prompt_tokens": 10, "completion_tokens": 1}, "flex", "flex"),
    ],
)  # fmt: skip
def test_every_unpriced_kind_is_null(
    model: str, usage: dict[str, Any], tier: str | None, why: str
) -> None:
    data = _priced(model, usage, tier)
    assert data["cost_usd"] is None and data["cost_nanos"] is None, data
    assert why in data["unknown_because"] or (
        why == "bucket" and "bucket" in data["unknown_because"]
    )


def test_override_tiers_are_explicit() -> None:
    catalog = PriceCatalog.default()
    u = Usage(input_tokens=1_000, output_tokens=100)
    negotiated = PriceOverride(
        input=D(2), output=D(8), service_tiers={"batch": PriceOverride(input=D(1), output=D(4))}
    )
    batch = catalog.cost("anything", u, override=negotiated, service_tier="batch")
    assert batch is not None and batch.total == (1_000 * D(1) + 100 * D(4)) / M
    assert catalog.cost("anything", u, override=negotiated, service_tier="flex") is None
    standard = catalog.cost("anything", u, override=negotiated, service_tier="default")
    assert standard is not None and standard.total == (1_000 * D(2) + 100 * D(8)) / M


# ------------------------------------------------------------------ usage parsing


def test_openai_audio_and_cached_audio_are_parts() -> None:
    u = usage_from_openai({"input_tokens": 100, "output_tokens": 50,
                           "input_token_details": {"cached_tokens": 30, "audio_tokens": 60,
                                                   "cached_tokens_details": {"audio_tokens": 20}},
                           "output_token_details": {"audio_tokens": 40}})  # fmt: skip
    assert (u.input_audio_tokens, u.cache_audio_read_tokens, u.output_audio_tokens) == (40, 20, 40)
    with pytest.raises(ValueError, match="audio"):
        usage_from_openai({"prompt_tokens": 10, "completion_tokens": 1,
                           "prompt_tokens_details": {"audio_tokens": 11}})  # fmt: skip


def test_gemini_usage_metadata() -> None:
    details = [{"modality": "AUDIO", "tokenCount": 600}, {"modality": "TEXT", "tokenCount": 400}]
    u = usage_from_gemini({"promptTokenCount": 1000, "candidatesTokenCount": 100,
                           "thoughtsTokenCount": 50, "cachedContentTokenCount": 200,
                           "promptTokensDetails": details})  # fmt: skip
    assert (u.input_tokens, u.output_tokens, u.reasoning_tokens) == (1000, 150, 50)
    assert (u.cache_read_tokens, u.input_audio_tokens) == (200, 600)
    # gemini-2.0-flash: text $0.10, audio $0.70, cache read $0.025, output $0.40 per M
    data = _priced("gemini-2.0-flash", {"promptTokenCount": 1000, "candidatesTokenCount": 100,
                   "promptTokensDetails": [{"modality": "AUDIO", "tokenCount": 600}]})  # fmt: skip
    want = (400 * D("0.1") + 600 * D("0.7") + 100 * D("0.4")) / M
    assert D(data["cost_usd"]) == want


# ------------------------------------------------------------------ price files


def test_supplement_cites_every_entry() -> None:
    supplement = shipped_supplement()
    assert supplement.models and supplement.aliases
    for entry in [*supplement.models, *supplement.aliases]:
        assert entry.source.startswith("https://"), entry
        assert entry.as_of.year >= 2025


def test_operator_override_file_wins(tmp_path: Any) -> None:
    path = tmp_path / "prices.yaml"
    path.write_text(
        "models:\n"
        "  - {provider: openai, id: gpt-4o-mini, prices: {input: '0.10', output: '0.40'},\n"
        "     source: 'https://example.com/our-contract', as_of: 2026-12-01}\n"
    )
    catalog = PriceCatalog(overrides=load_price_file(str(path)))
    cost = catalog.cost("gpt-4o-mini", Usage(input_tokens=1_000_000))
    assert cost is not None and cost.total == D("0.10")
    assert cost.price_version.startswith("overrides:")
    # a bucket the override leaves out is unpriced, not taken from genai-prices
    assert catalog.cost("gpt-4o-mini", Usage(input_tokens=10, cache_read_tokens=5)) is None
    bad = tmp_path / "bad.yaml"
    bad.write_text("models: [{provider: openai}]\n")
    with pytest.raises(ValueError, match=r"models\.0\.id"):
        load_price_file(str(bad))


# ------------------------------------------------------------------ the property


_BUCKET_KEYS = {
    "input_tokens": "input_mtok",
    "cache_read_tokens": "cache_read_mtok",
    "cache_write_tokens": "cache_write_mtok",
    "cache_write_1h_tokens": "cache_write_1h_mtok",
    "output_tokens": "output_mtok",
    "input_audio_tokens": "input_audio_mtok",
    "cache_audio_read_tokens": "cache_audio_read_mtok",
    "output_audio_tokens": "output_audio_mtok",
}


def _reference_prices(model: gp.ModelInfo, tier: str | None, when: Any) -> dict[str, Any] | None:
    """The published prices that apply, from genai-prices' raw data: the active standard
    price, or for a tier only what its variants list (None when none matches)."""
    standard = model.get_prices(when)
    context = tier_context(tier)
    if context is None:
        return {k: v for k, v in standard.__dict__.items() if v is not None}
    found: dict[str, Any] = {}
    matched = False
    for variant in model.price_variants or ():
        if tuple(sorted(variant.when.items())) != context:
            continue
        if variant.constraint is not None and not variant.constraint.active(when):
            continue
        matched = True
        for key, value in variant.prices.__dict__.items():
            if value is not None:
                found.setdefault(key, value)
    return found if matched else None


def _random_usage(rng: random.Random) -> Usage:
    inp = rng.choice([0, 40, 3_000, 120_000, 260_000])
    cr = rng.choice([0, 0, 0, inp // 3])
    cw = rng.choice([0, 0, 0, 0, (inp - cr) // 4])
    w1h = rng.choice([0, 0, 0, (inp - cr - cw) // 4])
    audio_in = rng.choice([0, 0, 0, 0, 0, (inp - cr - cw - w1h) // 2])
    audio_cr = rng.choice([0, 0, 0, 0, 0, cr // 2])
    out = rng.choice([0, 1, 900])
    return Usage(
        input_tokens=inp, cache_read_tokens=cr, cache_write_tokens=cw,
        cache_write_1h_tokens=w1h, output_tokens=out,
        reasoning_tokens=rng.choice([0, out // 2]),
        input_audio_tokens=audio_in, cache_audio_read_tokens=audio_cr,
        output_audio_tokens=rng.choice([0, 0, 0, 0, 0, out // 3]),
    )  # fmt: skip


def _reference_cost(prices: dict[str, Any], u: Usage) -> D | None:
    """genai-prices' own arithmetic on exactly these prices, or None when a used bucket has
    no price of its own (where genai-prices would bill a neighbouring one)."""
    counts = {
        "input_tokens": u.uncached_input_tokens - u.input_audio_tokens,
        "cache_read_tokens": u.cache_read_tokens - u.cache_audio_read_tokens,
        "cache_write_tokens": u.cache_write_tokens,
        "cache_write_1h_tokens": u.cache_write_1h_tokens,
        "output_tokens": u.output_tokens
        - u.output_audio_tokens
        - (u.reasoning_tokens if prices.get("output_reasoning_mtok") is not None else 0),
        "input_audio_tokens": u.input_audio_tokens,
        "cache_audio_read_tokens": u.cache_audio_read_tokens,
        "output_audio_tokens": u.output_audio_tokens,
    }
    for bucket, tokens in counts.items():
        if tokens and prices.get(_BUCKET_KEYS[bucket]) is None:
            return None
    priced_keys = {*_BUCKET_KEYS.values(), "output_reasoning_mtok", "requests_kcount"}
    token_prices = {k: v for k, v in prices.items() if k in priced_keys}
    usage = gp.Usage(
        input_tokens=u.input_tokens,
        cache_read_tokens=u.cache_read_tokens,
        cache_write_tokens=u.cache_write_tokens + u.cache_write_1h_tokens,
        cache_write_1h_tokens=u.cache_write_1h_tokens,
        output_tokens=u.output_tokens,
        input_audio_tokens=u.input_audio_tokens + u.cache_audio_read_tokens,
        cache_audio_read_tokens=u.cache_audio_read_tokens,
        output_audio_tokens=u.output_audio_tokens,
        output_reasoning_tokens=u.reasoning_tokens,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return gp.ModelPrice(**token_prices).calc_price(usage)["total_price"]


def test_every_catalogued_model_is_published_rate_or_null() -> None:
    """genai-prices' models (the supplement off, so its data is the published record) at
    random usage and tiers: equal to the published-rate computation, or null — and null
    exactly when the rule says so."""
    from datetime import UTC, datetime

    catalog = PriceCatalog(supplement=PriceFile())
    when = datetime.now(UTC)
    rng = random.Random(20261205)
    tiers = [None, None, None, None, "flex", "priority", "batch"]
    checked = nulls = 0
    for provider in data_snapshot.get_snapshot().providers:
        for model in provider.models:
            for _ in range(3):
                u, tier = _random_usage(rng), rng.choice(tiers)
                ours = catalog.cost(model.id, u, provider=provider.id, service_tier=tier)
                resolved = catalog.resolve(model.id, provider.id)
                if resolved is None or resolved.model_id != model.id:
                    continue  # a name another model of the provider also matches first
                prices = _reference_prices(model, tier, when)
                want = None if prices is None else _reference_cost(prices, u)
                if want is None:
                    assert ours is None, (provider.id, model.id, tier, u)
                    nulls += 1
                else:
                    assert ours is not None and ours.total == want, (provider.id, model.id, tier)
                    checked += 1
    assert checked > 1_500 and nulls > 500, (checked, nulls)


def test_supplement_models_are_published_rate_or_null() -> None:
    """The same rule for the supplement's own entries, with their cited prices."""
    catalog = PriceCatalog.default()
    rng = random.Random(7)
    checked = 0
    for entry in shipped_supplement().models:
        if entry.effective_from is not None:
            continue  # dated entries: covered by the DeepSeek test above
        for tier in (None, "batch", "flex"):
            spec = (
                entry.prices
                if tier is None
                else next(
                    (
                        v.prices
                        for v in entry.variants
                        if tier_context(tier) == tuple(v.when.items())
                    ),
                    None,
                )
            )
            for _ in range(20):
                u = _random_usage(rng)
                ours = catalog.cost(entry.id, u, provider=entry.provider, service_tier=tier)
                if spec is None:
                    assert ours is None
                    continue
                prices = {f"{k}_mtok": _genai_price(v) for k, v in spec if v is not None}
                want = _reference_cost(prices, u)
                assert (ours.total if ours else None) == want, (entry.id, tier, u)
                checked += 1
    assert checked > 40


def _genai_price(value: Any) -> Any:
    if isinstance(value, D):
        return value
    return gp.TieredPrices(
        base=value.base, tiers=[gp.Tier(start=s, price=p) for s, p in value.tiers]
    )


def test_prices_check_flags_stale_entries_moved_aliases_and_unpriced_models(
    tmp_path: Any,
) -> None:
    from click.testing import CliRunner

    from spendgate.cli import main

    config = tmp_path / "spendgate.yaml"
    config.write_text(
        "deployments:\n"
        "  - {name: local, provider: openai, base_url: 'http://127.0.0.1:9/v1',\n"
        "     models: [gpt-4o-mini, mistral-large-latest, our-finetune-7b]}\n"
    )
    runner = CliRunner()
    result = runner.invoke(main, ["prices", "check", "--config", str(config), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    alias = next(a for a in report["aliases"] if a["name"] == "mistral-large-latest")
    assert alias["flagged"] and alias["genai_prices_target"] == "mistral-large"
    assert "mistral-large-4" in alias["same_family"]
    served = {s["model"]: s for s in report["served_models"]}
    assert served["mistral-large-latest"]["alias"] == "mistral-large-latest"
    assert served["our-finetune-7b"]["resolved"] is None
    assert served["gpt-4o-mini"]["source"].startswith("genai-prices")
    history = [e for e in report["entries"] if e["superseded"]]
    assert history and not any(e["stale"] for e in history)
    strict = runner.invoke(main, ["prices", "check", "--max-age-days", "0", "--strict"])
    assert strict.exit_code == 1 and "STALE" in strict.output
