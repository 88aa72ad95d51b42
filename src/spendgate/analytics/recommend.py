"""`spendgate recommend`: ranked optimizations for *this* ledger, each with its evidence,
its projected monthly saving and the config that turns it on.

Every figure comes from the ledger (no prompt text needed: repeats are measured on prompt
fingerprints). Where a saving needs an assumption, the recommendation states it.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from spendgate.analytics.simulate import DAYS_PER_MONTH, TrafficRecord
from spendgate.call import Usage
from spendgate.pricing import PriceCatalog

__all__ = ["Recommendation", "recommend"]

FRONTIER_INPUT_PER_MTOK = Decimal("2")
"""Models at or above this input price count as frontier for the routing advice."""
CHEAP_MODEL = "gpt-4o-mini"
PROMPT_CACHE_MIN_TOKENS = 1024
PROMPT_CACHE_READ_DISCOUNT = Decimal("0.9")
"""Cache reads cost 10% of input on Anthropic and 50% on OpenAI; 90% is the upper bound."""


@dataclass
class Recommendation:
    technique: str
    feature: str
    monthly_saving_usd: Decimal
    evidence: dict[str, Any]
    how: str
    assumptions: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "technique": self.technique,
            "feature": self.feature,
            "monthly_saving_usd": format(self.monthly_saving_usd.quantize(Decimal("0.01")), "f"),
            "evidence": self.evidence,
            "how": self.how,
            "assumptions": self.assumptions,
        }


def _cost(catalog: PriceCatalog, model: str, i: int, o: int) -> Decimal:
    cost = catalog.cost(model, Usage(input_tokens=i, output_tokens=o))
    return cost.total if cost is not None else Decimal(0)


def _percentile(values: list[int], q: float) -> int:
    if not values:
        return 0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def recommend(
    records: list[TrafficRecord], catalog: PriceCatalog | None = None
) -> list[Recommendation]:
    catalog = catalog or PriceCatalog.default()
    if not records:
        return []
    stamps = [r.ts for r in records if r.ts]
    span_days = (
        max(Decimal(1), Decimal(str(max(stamps) - min(stamps))) / 86_400) if stamps else Decimal(1)
    )
    per_month = Decimal(DAYS_PER_MONTH) / span_days
    by_feature: dict[str, list[TrafficRecord]] = defaultdict(list)
    for r in records:
        by_feature[r.feature].append(r)
    out: list[Recommendation] = []
    for feature, rows in by_feature.items():
        costs = [_cost(catalog, r.model, r.input_tokens, r.output_tokens) for r in rows]
        monthly = sum(costs, Decimal(0)) * per_month
        if monthly <= 0:
            continue
        calls_per_day = Decimal(len(rows)) / span_days
        out += _caching(feature, rows, costs, per_month)
        out += _routing(feature, rows, costs, per_month, catalog)
        out += _prompt_cache(feature, rows, per_month, calls_per_day, catalog)
        out += _output_cap(feature, rows, monthly)
    out.sort(key=lambda r: r.monthly_saving_usd, reverse=True)
    return out


def _caching(
    feature: str, rows: list[TrafficRecord], costs: list[Decimal], per_month: Decimal
) -> list[Recommendation]:
    seen: set[tuple[str, str]] = set()
    repeats = Decimal(0)
    n_repeat = 0
    for r, c in zip(rows, costs, strict=True):
        if not r.fingerprint:
            continue
        key = (r.tenant, r.fingerprint)
        if key in seen:
            repeats += c
            n_repeat += 1
        seen.add(key)
    if n_repeat == 0:
        return []
    return [
        Recommendation(
            technique="cache",
            feature=feature,
            monthly_saving_usd=repeats * per_month,
            evidence={
                "calls": len(rows),
                "exact_repeats": n_repeat,
                "exact_repeat_rate": round(n_repeat / len(rows), 4),
            },
            how=f"cache:\n  features:\n    {feature}: {{exact: true, semantic: true}}",
            assumptions=[
                "exact repeats only (same tenant, same prompt fingerprint); "
                "a semantic cache adds paraphrases on top"
            ],
        )
    ]


def _routing(
    feature: str,
    rows: list[TrafficRecord],
    costs: list[Decimal],
    per_month: Decimal,
    catalog: PriceCatalog,
) -> list[Recommendation]:
    frontier = [
        (r, c)
        for r, c in zip(rows, costs, strict=True)
        if (catalog.unit_prices(r.model).get("input") or Decimal(0)) >= FRONTIER_INPUT_PER_MTOK
        and r.input_tokens <= 400
    ]
    if not frontier:
        return []
    saving = sum(
        (c - _cost(catalog, CHEAP_MODEL, r.input_tokens, r.output_tokens) for r, c in frontier),
        Decimal(0),
    )
    if saving <= 0:
        return []
    return [
        Recommendation(
            technique="routing",
            feature=feature,
            monthly_saving_usd=saving * per_month,
            evidence={
                "short_prompts_on_frontier": len(frontier),
                "calls": len(rows),
                "share": round(len(frontier) / len(rows), 4),
            },
            how=f"routing:\n  features:\n    {feature}: {{router: default, weak: {CHEAP_MODEL}}}",
            assumptions=[
                f"every short (≤ 400 input tokens) frontier call could go to "
                f"{CHEAP_MODEL}; the learned router keeps the hard ones — run it in "
                f"shadow mode first to measure"
            ],
        )
    ]


def _prompt_cache(
    feature: str,
    rows: list[TrafficRecord],
    per_month: Decimal,
    calls_per_day: Decimal,
    catalog: PriceCatalog,
) -> list[Recommendation]:
    long_rows = [r for r in rows if r.input_tokens >= PROMPT_CACHE_MIN_TOKENS]
    if not long_rows or calls_per_day < 50:
        return []
    already = sum(r.cache_read_tokens for r in long_rows)
    total_in = sum(r.input_tokens for r in long_rows)
    if total_in == 0 or already / total_in > 0.5:
        return []
    input_cost = sum((_cost(catalog, r.model, r.input_tokens, 0) for r in long_rows), Decimal(0))
    stable_share = Decimal("0.5")
    saving = input_cost * stable_share * PROMPT_CACHE_READ_DISCOUNT * per_month
    return [
        Recommendation(
            technique="prompt_cache",
            feature=feature,
            monthly_saving_usd=saving,
            evidence={
                "calls_with_1024+_input_tokens": len(long_rows),
                "calls_per_day": float(round(calls_per_day, 1)),
                "cache_read_share": round(already / total_in, 4),
            },
            how=f"prefix:\n  enabled: true\n  features:\n    {feature}: {{ttl: 5m}}",
            assumptions=[
                "half of the input is a stable prefix (system prompt, tools, "
                "documents); reads at 10% of the input price"
            ],
        )
    ]


def _output_cap(feature: str, rows: list[TrafficRecord], monthly: Decimal) -> list[Recommendation]:
    outputs = [r.output_tokens for r in rows]
    p50, p99, top = _percentile(outputs, 0.5), _percentile(outputs, 0.99), max(outputs)
    if p99 == 0 or top <= 2 * p99:
        return []
    return [
        Recommendation(
            technique="output_cap",
            feature=feature,
            monthly_saving_usd=Decimal(0),
            evidence={
                "output_p50": p50,
                "output_p99": p99,
                "output_max": top,
                "monthly_cost_usd": format(monthly.quantize(Decimal("0.01")), "f"),
            },
            how=f"trim:\n  features:\n    {feature}: {{max_tokens: {int(p99 * 1.2)}}}",
            assumptions=[
                "a cap at p99 × 1.2 bounds runaway answers; its saving is the "
                "tail it cuts, not projected here"
            ],
        )
    ]
