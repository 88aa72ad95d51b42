from __future__ import annotations

import json
import random
import warnings
from datetime import UTC, datetime
from decimal import Decimal

import genai_prices
import pytest
from genai_prices import data_snapshot

from spendgate.call import Cost, Usage, from_nanos, to_nanos
from spendgate.pricing import (
    PriceCatalog,
    PriceFile,
    PriceOverride,
    merge_anthropic_stream_usage,
    price_command,
    usage_from_anthropic,
    usage_from_native,
    usage_from_openai,
)

# --- usage parsing -------------------------------------------------------------------------


def test_openai_chat_with_null_details() -> None:
    u = usage_from_openai(
        {
            "prompt_tokens": 12,
            "completion_tokens": 5,
            "total_tokens": 17,
            "prompt_tokens_details": None,
            "completion_tokens_details": None,
        }
    )
    assert u == Usage(input_tokens=12, output_tokens=5)


def test_openai_chat_with_details_and_null_inner_values() -> None:
    u = usage_from_openai(
        {
            "prompt_tokens": 2000,
            "completion_tokens": 300,
            "prompt_tokens_details": {"cached_tokens": 1024, "audio_tokens": None},
            "completion_tokens_details": {"reasoning_tokens": None, "audio_tokens": 0},
        }
    )
    assert u == Usage(input_tokens=2000, output_tokens=300, cache_read_tokens=1024)
    assert u.uncached_input_tokens == 976


def test_openai_responses_api() -> None:
    u = usage_from_openai(
        {
            "input_tokens": 5000,
            "input_tokens_details": {"cached_tokens": 4096},
            "output_tokens": 900,
            "output_tokens_details": {"reasoning_tokens": 640},
            "total_tokens": 5900,
        }
    )
    assert u == Usage(
        input_tokens=5000, output_tokens=900, cache_read_tokens=4096, reasoning_tokens=640
    )


def test_openai_responses_missing_details() -> None:
    u = usage_from_openai({"input_tokens": 7, "output_tokens": 3, "total_tokens": 10})
    assert u == Usage(input_tokens=7, output_tokens=3)


def test_openai_embeddings() -> None:
    assert usage_from_openai({"prompt_tokens": 8, "total_tokens": 8}) == Usage(input_tokens=8)


def test_deepseek_top_level_cache_hits() -> None:
    u = usage_from_openai(
        {
            "prompt_tokens": 100,
            "completion_tokens": 1,
            "prompt_cache_hit_tokens": 64,
            "prompt_cache_miss_tokens": 36,
        }
    )
    assert u.cache_read_tokens == 64 and u.input_tokens == 100


def test_anthropic_without_cache_fields_and_with_nulls() -> None:
    assert usage_from_anthropic({"input_tokens": 10, "output_tokens": 2}) == Usage(
        input_tokens=10, output_tokens=2
    )
    u = usage_from_anthropic(
        {
            "input_tokens": 10,
            "output_tokens": 2,
            "cache_creation_input_tokens": None,
            "cache_read_input_tokens": None,
            "cache_creation": None,
            "server_tool_use": None,
            "service_tier": "standard",
        }
    )
    assert u == Usage(input_tokens=10, output_tokens=2)


def test_anthropic_all_writes_are_5m_without_split() -> None:
    u = usage_from_anthropic(
        {
            "input_tokens": 3,
            "cache_creation_input_tokens": 1000,
            "cache_read_input_tokens": 50,
            "output_tokens": 9,
        }
    )
    assert u == Usage(
        input_tokens=1053, output_tokens=9, cache_read_tokens=50, cache_write_tokens=1000
    )
    assert u.uncached_input_tokens == 3


def test_anthropic_split_decides_ttl() -> None:
    u = usage_from_anthropic(
        {
            "input_tokens": 3,
            "cache_creation_input_tokens": 1000,
            "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 1000},
            "output_tokens": 9,
        }
    )
    assert (u.cache_write_tokens, u.cache_write_1h_tokens, u.input_tokens) == (0, 1000, 1003)


def test_anthropic_stream_merge() -> None:
    start = {
        "input_tokens": 25,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 4000,
        "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0},
        "output_tokens": 1,
    }
    u = merge_anthropic_stream_usage(start, {"output_tokens": 512})
    assert u == Usage(input_tokens=4025, output_tokens=512, cache_read_tokens=4000)
    # no delta seen (stream cut short): the start's counts stand
    assert merge_anthropic_stream_usage(start, None).output_tokens == 1
    # later non-null wins, nulls don't erase
    u2 = merge_anthropic_stream_usage(
        start, {"input_tokens": 30, "cache_read_input_tokens": None, "output_tokens": 7}
    )
    assert (u2.input_tokens, u2.cache_read_tokens, u2.output_tokens) == (4030, 4000, 7)


@pytest.mark.parametrize(
    ("block", "shape"),
    [
        ({"prompt_tokens": 1, "completion_tokens": 1}, "openai"),
        ({"prompt_tokens": 1, "total_tokens": 1}, "openai"),
        ({"input_tokens": 1, "output_tokens": 1, "total_tokens": 2}, "openai"),
        ({"input_tokens": 1, "output_tokens": 1, "input_tokens_details": None}, "openai"),
        ({"input_tokens": 1, "output_tokens": 1, "cache_read_input_tokens": 0}, "anthropic"),
        ({"output_tokens": 15}, "anthropic"),
    ],
)
def test_usage_from_native_detects_shape(block: dict, shape: str) -> None:
    got_shape, _ = usage_from_native(block)
    assert got_shape == shape


def test_native_anthropic_vs_openai_input_semantics() -> None:
    # the same numbers mean different totals: Anthropic excludes cache reads, OpenAI includes
    _, a = usage_from_native(
        {"input_tokens": 100, "cache_read_input_tokens": 900, "output_tokens": 1}
    )
    _, o = usage_from_native(
        {
            "input_tokens": 1000,
            "output_tokens": 1,
            "total_tokens": 1001,
            "input_tokens_details": {"cached_tokens": 900},
        }
    )
    assert a.input_tokens == o.input_tokens == 1000
    assert a.uncached_input_tokens == o.uncached_input_tokens == 100


@pytest.mark.parametrize(
    "block",
    [
        {"prompt_tokens": "12", "completion_tokens": 1},
        {"prompt_tokens": -1, "completion_tokens": 1},
        {"prompt_tokens": True, "completion_tokens": 1},
        {"prompt_tokens": 1.5, "completion_tokens": 1},
        {"prompt_tokens": 10, "prompt_tokens_details": {"cached_tokens": 11}},
        {
            "prompt_tokens": 10,
            "completion_tokens": 1,
            "completion_tokens_details": {"reasoning_tokens": 2},
        },
        {"prompt_tokens": 10, "prompt_tokens_details": [1]},
        {"foo": 1},
    ],
)
def test_bad_usage_raises_value_error(block: dict) -> None:
    with pytest.raises(ValueError):
        usage_from_native(block)


def test_non_dict_usage_raises_value_error() -> None:
    with pytest.raises(ValueError):
        usage_from_native([1, 2])  # type: ignore[arg-type]


# --- catalog -------------------------------------------------------------------------------


def test_decimal_exactness_over_many_calls() -> None:
    catalog = PriceCatalog.default()
    rng = random.Random(7)
    total = Decimal(0)
    nanos = 0
    for _ in range(10_000):
        u = Usage(
            input_tokens=(inp := rng.randint(1, 20_000)),
            cache_read_tokens=rng.randint(0, inp),
            output_tokens=rng.randint(0, 2000),
        )
        cost = catalog.cost("gpt-4o-mini", u)  # $0.15 / $0.075 / $0.60: sub-nano per token
        assert cost is not None
        assert isinstance(cost.total, Decimal)
        total += cost.total
        nanos += cost.total_nanos
        # every gpt-4o-mini cost is a multiple of $0.075/M = 7.5e-8: exact to the half nano
        assert abs(from_nanos(cost.total_nanos) - cost.total) <= Decimal("0.0000000005")
    # the Decimal sum is exact; the nano sum is within half a nano per event of it
    assert abs(from_nanos(nanos) - total) <= Decimal("0.0000000005") * 10_000
    assert to_nanos(total) == pytest.approx(nanos, abs=5_000)
    assert total == total.quantize(Decimal("1e-12"))  # no float noise crept in


def test_zero_usage_costs_zero_not_none() -> None:
    cost = PriceCatalog.default().cost("gpt-4o", Usage())
    assert cost is not None and cost.total == 0


def test_knows_and_unit_prices() -> None:
    c = PriceCatalog.default()
    assert c.knows("claude-sonnet-4-20250514")
    assert c.knows("openai/gpt-4o")
    assert not c.knows("definitely-not-a-model")
    p = c.unit_prices("claude-opus-4-1")
    assert p["input"] == Decimal(15) and p["output"] == Decimal(75)
    assert p["cache_write"] == Decimal("18.75") and p["cache_write_1h"] == Decimal(30)
    assert str(p["cache_write_1h"]) == "30"  # not "3E+1"
    assert c.unit_prices("definitely-not-a-model")["input"] is None


def test_time_aware_prices() -> None:
    # deepseek-chat was cheaper off-peak (16:30–00:30 UTC) until 2025-09-05
    c = PriceCatalog.default()
    u = Usage(input_tokens=1_000_000)
    peak = c.cost("deepseek-chat", u, when=datetime(2025, 6, 1, 12, 0, tzinfo=UTC))
    off = c.cost("deepseek-chat", u, when=datetime(2025, 6, 1, 20, 0, tzinfo=UTC))
    assert peak is not None and off is not None and off.total < peak.total
    for when in (datetime(2025, 6, 1, 12, 0, tzinfo=UTC), datetime(2025, 6, 1, 20, 0, tzinfo=UTC)):
        cost = c.cost("deepseek-chat", u, when=when)
        ref = genai_prices.calc_price(
            genai_prices.Usage(input_tokens=1_000_000),
            "deepseek-chat",
            genai_request_timestamp=when,
        ).total_price
        assert cost is not None and cost.total == ref


def _first_party_models() -> list[tuple[str, str]]:
    snap = data_snapshot.get_snapshot()
    out = []
    for p in snap.providers:
        if p.id in ("openai", "anthropic", "google"):
            out.extend((p.id, m.id) for m in p.models)
    return out


def test_agrees_with_genai_prices_wherever_every_bucket_is_priced() -> None:
    # genai-prices alone: the shipped supplement corrects some of its prices on purpose.
    catalog = PriceCatalog(supplement=PriceFile())
    rng = random.Random(11)
    checked = 0
    for provider, model_id in _first_party_models():
        for _ in range(3):
            inp = rng.choice([0, 50, 5000, 150_000, 250_000, 1_200_000])
            cr = rng.randint(0, inp // 2)
            cw = rng.randint(0, (inp - cr) // 2)
            w1h = rng.randint(0, (inp - cr - cw) // 2)
            out = rng.randint(0, 4000)
            u = Usage(
                input_tokens=inp,
                cache_read_tokens=cr,
                cache_write_tokens=cw,
                cache_write_1h_tokens=w1h,
                output_tokens=out,
                reasoning_tokens=rng.randint(0, out),
            )
            ours = catalog.cost(model_id, u, provider=provider)
            if ours is None:
                continue
            gu = genai_prices.Usage(
                input_tokens=inp,
                cache_read_tokens=cr,
                cache_write_tokens=cw + w1h,
                cache_write_1h_tokens=w1h,
                output_tokens=out,
                output_reasoning_tokens=u.reasoning_tokens,
            )
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ref = genai_prices.calc_price(gu, model_id, provider_id=provider).total_price
            assert ours.total == ref, (provider, model_id, u)
            checked += 1
    assert checked > 150


def test_override_fingerprint_is_stable_and_value_based() -> None:
    a = PriceOverride(input=Decimal("1.0"), output=Decimal(2))
    b = PriceOverride.model_validate({"input": "1", "output": 2.0})
    c = PriceOverride(input=Decimal("1.1"), output=Decimal(2))
    assert a.version == b.version != c.version
    assert a.version.startswith("override:") and len(a.fingerprint) == 12


def test_override_validation() -> None:
    with pytest.raises(ValueError):
        PriceOverride(input=Decimal(-1))
    with pytest.raises(ValueError):
        PriceOverride.model_validate({"inptu": 1})


def test_override_per_request_goes_to_other() -> None:
    ov = PriceOverride(input=Decimal(1), output=Decimal(1), per_request=Decimal("0.002"))
    cost = PriceCatalog.default().cost("x", Usage(input_tokens=1000), override=ov)
    assert cost is not None
    assert cost.other == Decimal("0.002") and cost.total == Decimal("0.003")


def test_catalog_per_request_fee() -> None:
    # perplexity sonar: $1/MTok in and out, $12 per 1000 requests
    cost = PriceCatalog.default().cost(
        "sonar", Usage(input_tokens=1000, output_tokens=1000), provider="perplexity"
    )
    assert cost is not None
    assert cost.other == Decimal("0.012") and cost.total == Decimal("0.014")


def test_cost_is_a_cost() -> None:
    cost = PriceCatalog.default().cost("gpt-4o", Usage(input_tokens=1))
    assert isinstance(cost, Cost) and cost.as_dict()["price_version"].startswith("genai-prices")


# --- price_command -------------------------------------------------------------------------

ANTHROPIC_JSON = json.dumps(
    {
        "input_tokens": 100,
        "cache_creation_input_tokens": 2000,
        "cache_read_input_tokens": 5000,
        "cache_creation": {"ephemeral_5m_input_tokens": 1500, "ephemeral_1h_input_tokens": 500},
        "output_tokens": 300,
    }
)


def test_price_command_text() -> None:
    out = price_command("claude-sonnet-4-20250514", ANTHROPIC_JSON)
    assert "anthropic/claude-sonnet-4-0" in out
    assert "cache write 1h" in out and "500 tok × $6/MTok" in out and "$0.003" in out
    assert "5,000 tok × $0.3/MTok" in out
    assert out.rstrip().endswith("$0.014925")


def test_price_command_json() -> None:
    data = json.loads(price_command("claude-sonnet-4-20250514", ANTHROPIC_JSON, as_json=True))
    assert data["cost_usd"] == "0.014925"
    assert data["cost_nanos"] == 14_925_000
    assert data["usage_shape"] == "anthropic"
    assert data["usage"]["input_tokens"] == 7100  # 100 + 2000 written + 5000 read
    assert data["unit_prices_usd_per_mtok"]["cache_write_1h"] == "6"
    assert data["price_version"].startswith("spendgate-supplement ")  # Sonnet 4 gained its tiers
    rows = {r["bucket"]: r for r in data["breakdown"]}
    assert rows["cache_write"] == {
        "bucket": "cache_write",
        "tokens": 1500,
        "usd_per_mtok": "3.75",
        "usd": "0.005625",
        "billed_as_output": False,
    }


def test_price_command_accepts_whole_response_and_stream_pair() -> None:
    body = json.dumps({"id": "x", "usage": {"prompt_tokens": 1000, "completion_tokens": 10}})
    assert json.loads(price_command("gpt-4o", body, as_json=True))["cost_usd"] == "0.0026"
    pair = json.dumps([{"input_tokens": 100, "output_tokens": 1}, {"output_tokens": 300}])
    data = json.loads(price_command("claude-sonnet-4-20250514", pair, as_json=True))
    # 100×3 + 300×15 = 4,800 → $0.0048
    assert data["cost_usd"] == "0.0048" and data["usage_shape"] == "anthropic-stream"


def test_price_command_reasoning_shown_inside_output() -> None:
    out = price_command(
        "o3-mini",
        '{"prompt_tokens": 1000, "completion_tokens": 2000,'
        ' "completion_tokens_details": {"reasoning_tokens": 1500}}',
    )
    assert "(in output)" in out and out.rstrip().endswith("$0.0099")


def test_price_command_unpriced_bucket_reports_unknown() -> None:
    out = price_command(
        "claude-sonnet-4-20250514", ANTHROPIC_JSON, provider="aws"
    )  # no 1h price on Bedrock's entry
    assert "UNPRICED" in out and "unknown" in out
    data = json.loads(
        price_command("claude-sonnet-4-20250514", ANTHROPIC_JSON, provider="aws", as_json=True)
    )
    assert data["cost_usd"] is None


@pytest.mark.parametrize(
    ("model", "usage_json", "match"),
    [
        ("no-such-model", '{"prompt_tokens": 1}', "unknown model"),
        ("gpt-4o", "{not json", "not valid JSON"),
        ("gpt-4o", "[1, 2, 3]", "JSON object"),
        ("gpt-4o", '{"foo": 1}', "unrecognised usage"),
        ("gpt-4o", '{"prompt_tokens": -5}', "negative"),
    ],
)
def test_price_command_errors(model: str, usage_json: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        price_command(model, usage_json)
