"""Golden costs for the cases gateways get wrong, worked out by hand from published prices.

Each expected figure is written as arithmetic from list prices (USD per million tokens), and
each is also checked against `genai_prices.calc_price` — the reference our cached arithmetic
must agree with wherever every used bucket has its own price.
"""

from __future__ import annotations

import warnings
from decimal import Decimal

import genai_prices
import pytest

from spendgate.call import Usage
from spendgate.pricing import (
    PriceCatalog,
    PriceOverride,
    merge_anthropic_stream_usage,
    usage_from_anthropic,
    usage_from_openai,
)

M = Decimal(1_000_000)


def D(x: str | int) -> Decimal:
    return Decimal(x)


@pytest.fixture(scope="module")
def catalog() -> PriceCatalog:
    return PriceCatalog.default()


def reference(model: str, u: Usage, provider: str | None = None) -> Decimal:
    """genai-prices' own answer. Its `cache_write_tokens` is ALL writes (1h ones included)."""
    gu = genai_prices.Usage(
        input_tokens=u.input_tokens,
        cache_read_tokens=u.cache_read_tokens,
        cache_write_tokens=u.cache_write_tokens + u.cache_write_1h_tokens,
        cache_write_1h_tokens=u.cache_write_1h_tokens,
        output_tokens=u.output_tokens,
        output_reasoning_tokens=u.reasoning_tokens,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return genai_prices.calc_price(gu, model, provider_id=provider).total_price


# claude-sonnet-4: $3/MTok input, $3.75 5m write, $6 1h write, $0.30 read, $15 output
SONNET4 = "claude-sonnet-4-20250514"
ANTHROPIC_BLOCK = {
    "input_tokens": 100,  # Anthropic: EXCLUDES the 2,000 written and 5,000 read
    "cache_creation_input_tokens": 2000,
    "cache_read_input_tokens": 5000,
    "output_tokens": 300,
}
# 100×3 + 2000×3.75 + 5000×0.30 + 300×15 = 300 + 7500 + 1500 + 4500 = 13,800 µ$/M → $0.0138
ANTHROPIC_EXPECTED = (D(100) * 3 + D(2000) * D("3.75") + D(5000) * D("0.3") + D(300) * 15) / M
assert D("0.0138") == ANTHROPIC_EXPECTED


def test_anthropic_cache_read_and_write_non_stream(catalog: PriceCatalog) -> None:
    u = usage_from_anthropic(ANTHROPIC_BLOCK)
    assert u.input_tokens == 7100  # total input, cache parts included
    cost = catalog.cost(SONNET4, u, provider="anthropic")
    assert cost is not None
    assert cost.total == D("0.0138")
    assert cost.input == D("0.0003")  # 100 × $3/M — NOT 7,100 × $3/M
    assert cost.cache_write == D("0.0075")  # 2000 × $3.75/M
    assert cost.cache_read == D("0.0015")  # 5000 × $0.30/M
    assert cost.output == D("0.0045")  # 300 × $15/M
    assert cost.total == reference(SONNET4, u, "anthropic")


def test_anthropic_same_usage_as_stream(catalog: PriceCatalog) -> None:
    start = {**ANTHROPIC_BLOCK, "output_tokens": 1}  # message_start's placeholder output count
    # message_delta: cumulative output; the input fields repeat as nulls (must not zero them)
    delta = {"input_tokens": None, "cache_read_input_tokens": None, "output_tokens": 300}
    u = merge_anthropic_stream_usage(start, delta)
    assert u == usage_from_anthropic(ANTHROPIC_BLOCK)
    cost = catalog.cost(SONNET4, u)
    assert cost is not None and cost.total == D("0.0138")
    # a delta that repeats the real (cumulative) input counts changes nothing either —
    # adding them to the start's counts would double-bill the prompt
    u2 = merge_anthropic_stream_usage(start, {**ANTHROPIC_BLOCK})
    cost2 = catalog.cost(SONNET4, u2)
    assert cost2 is not None and cost2.total == D("0.0138")


def test_anthropic_1h_cache_writes(catalog: PriceCatalog) -> None:
    block = {
        **ANTHROPIC_BLOCK,
        "cache_creation": {"ephemeral_5m_input_tokens": 1500, "ephemeral_1h_input_tokens": 500},
    }
    u = usage_from_anthropic(block)
    assert (u.cache_write_tokens, u.cache_write_1h_tokens) == (1500, 500)
    # 100×3 + 1500×3.75 + 500×6 + 5000×0.30 + 300×15
    # = 300 + 5625 + 3000 + 1500 + 4500 = 14,925 → $0.014925 (not $0.0138: 1h writes cost 2×)
    cost = catalog.cost(SONNET4, u)
    assert cost is not None
    assert cost.cache_write == D("0.008625")  # 0.005625 + 0.003
    assert cost.total == D("0.014925")
    assert cost.total == reference(SONNET4, u)


def test_1h_writes_on_a_sheet_without_a_1h_price_are_unknown(catalog: PriceCatalog) -> None:
    # Bedrock's sonnet-4 entry has no 1h price; genai-prices would bill them at the 5m rate.
    u = usage_from_anthropic(
        {
            **ANTHROPIC_BLOCK,
            "cache_creation": {"ephemeral_5m_input_tokens": 1500, "ephemeral_1h_input_tokens": 500},
        }
    )
    assert catalog.cost(SONNET4, u, provider="aws") is None
    five_min_only = usage_from_anthropic(ANTHROPIC_BLOCK)
    cost = catalog.cost(SONNET4, five_min_only, provider="aws")
    assert cost is not None and cost.total == D("0.0138")


def test_openai_cached_input_gpt_4o(catalog: PriceCatalog) -> None:
    # gpt-4o: $2.50/MTok input, $1.25 cached input, $10 output
    u = usage_from_openai(
        {
            "prompt_tokens": 10_000,  # OpenAI: INCLUDES the 6,000 cached
            "completion_tokens": 500,
            "total_tokens": 10_500,
            "prompt_tokens_details": {"cached_tokens": 6000, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0},
        }
    )
    # 4000×2.50 + 6000×1.25 + 500×10 = 10,000 + 7,500 + 5,000 = 22,500 → $0.0225
    cost = catalog.cost("gpt-4o", u, provider="openai")
    assert cost is not None
    assert (cost.input, cost.cache_read, cost.output) == (D("0.01"), D("0.0075"), D("0.005"))
    assert cost.total == D("0.0225")
    assert cost.total == reference("gpt-4o", u, "openai")


def test_reasoning_tokens_o3_mini_billed_once_as_output(catalog: PriceCatalog) -> None:
    # o3-mini: $1.10/MTok input, $4.40 output; reasoning is inside completion_tokens
    u = usage_from_openai(
        {
            "prompt_tokens": 1000,
            "completion_tokens": 2000,
            "completion_tokens_details": {"reasoning_tokens": 1500},
        }
    )
    assert (u.output_tokens, u.reasoning_tokens) == (2000, 1500)
    # 1000×1.10 + 2000×4.40 = 1,100 + 8,800 = 9,900 → $0.0099  (not (2000+1500)×4.40)
    cost = catalog.cost("o3-mini", u)
    assert cost is not None
    assert cost.output == D("0.0088")
    assert cost.total == D("0.0099")
    assert cost.total == reference("o3-mini", u)


def test_embeddings(catalog: PriceCatalog) -> None:
    # text-embedding-3-small: $0.02/MTok input, no output
    u = usage_from_openai({"prompt_tokens": 5000, "total_tokens": 5000})
    # 5000 × 0.02 = 100 → $0.0001
    for provider in ("openai", None):
        cost = catalog.cost("text-embedding-3-small", u, provider=provider)
        assert cost is not None and cost.total == D("0.0001")
    assert D("0.0001") == reference("text-embedding-3-small", u, "openai")


def test_unknown_model_is_none_not_zero(catalog: PriceCatalog) -> None:
    u = Usage(input_tokens=1000, output_tokens=10)
    assert catalog.cost("my-finetune-that-does-not-exist", u) is None
    assert not catalog.knows("my-finetune-that-does-not-exist")


def test_override_missing_a_used_bucket_is_none(catalog: PriceCatalog) -> None:
    ov = PriceOverride(input=D("0.50"), output=D("1.50"))  # no cache_read price
    with_cache = Usage(input_tokens=1000, cache_read_tokens=400, output_tokens=100)
    assert catalog.cost("llama-self-hosted", with_cache, override=ov) is None
    # without cache reads it is priced: 1000×0.50 + 100×1.50 = 650 → $0.00065
    cost = catalog.cost(
        "llama-self-hosted", Usage(input_tokens=1000, output_tokens=100), override=ov
    )
    assert cost is not None and cost.total == D("0.00065")
    assert cost.price_version.startswith("override:")


def test_override_beats_catalog_for_a_known_model(catalog: PriceCatalog) -> None:
    # negotiated gpt-4o: $2/MTok input, $1 cached, $8 output
    ov = PriceOverride(input=D(2), cache_read=D(1), output=D(8))
    u = Usage(input_tokens=10_000, cache_read_tokens=6000, output_tokens=500)
    # 4000×2 + 6000×1 + 500×8 = 8000 + 6000 + 4000 = 18,000 → $0.018
    cost = catalog.cost("gpt-4o", u, override=ov)
    assert cost is not None and cost.total == D("0.018")


@pytest.mark.parametrize(
    ("name", "provider", "input_per_m", "output_per_m"),
    [
        ("claude-sonnet-4-20250514", None, "3", "15"),
        ("anthropic/claude-sonnet-4-20250514", None, "3", "15"),
        ("gpt-4o-2024-08-06", None, "2.5", "10"),
        ("openai/gpt-4o", None, "2.5", "10"),
        ("GPT-4o", "openai", "2.5", "10"),
        ("gpt-4o", "simulated", "2.5", "10"),  # our adapter label, unknown to genai-prices
        # the first gpt-4o snapshot kept its launch price: a dated name must not collapse
        ("gpt-4o-2024-05-13", None, "5", "15"),
    ],
)
def test_dated_and_prefixed_names(
    catalog: PriceCatalog, name: str, provider: str | None, input_per_m: str, output_per_m: str
) -> None:
    # 100k tokens each: under every long-context tier (Sonnet 4 doubles its input price above
    # 200k), so these are the base list prices, a tenth of the per-million figure.
    u = Usage(input_tokens=100_000, output_tokens=100_000)
    cost = catalog.cost(name, u, provider=provider)
    assert cost is not None
    assert (cost.input * 10, cost.output * 10) == (D(input_per_m), D(output_per_m))


def test_long_context_tier_applies_to_all_tokens(catalog: PriceCatalog) -> None:
    # claude-sonnet-4-5 above 200k input: $6 input, $0.60 read, $22.50 output (cliff: every token)
    u = usage_from_anthropic(
        {"input_tokens": 150_000, "cache_read_input_tokens": 100_000, "output_tokens": 1000}
    )
    # total input 250,000 > 200,000 → 150,000×6 + 100,000×0.60 + 1000×22.50
    # = 900,000 + 60,000 + 22,500 = 982,500 → $0.9825
    cost = catalog.cost("claude-sonnet-4-5", u)
    assert cost is not None and cost.total == D("0.9825")
    assert cost.total == reference("claude-sonnet-4-5", u)
    # at exactly 200,000 the base price holds: 100,000×3 + 100,000×0.30 + 1000×15 = 345,000
    u_base = usage_from_anthropic(
        {"input_tokens": 100_000, "cache_read_input_tokens": 100_000, "output_tokens": 1000}
    )
    cost_base = catalog.cost("claude-sonnet-4-5", u_base)
    assert cost_base is not None and cost_base.total == D("0.345")


def test_estimated_and_version_carried(catalog: PriceCatalog) -> None:
    u = Usage(input_tokens=10, output_tokens=1, estimated=True)
    cost = catalog.cost("gpt-4o", u)
    assert cost is not None and cost.estimated
    assert cost.price_version == catalog.version == f"genai-prices {genai_prices.__version__}"
