"""What-if: projected monthly cost with and without each optimization, before switching any on.

Two ways in:

- `project_rates(...)`: the arithmetic on stated rates (share of calls cacheable, share simple
  enough for a cheaper model, how much longer prompts are than needed). This is the seed's
  worked example and the fallback when traffic lacks what a technique needs.
- `simulate_traffic(records, policy)`: replays logged traffic record by record. Each record
  carries its tags, model, token counts and (optionally) the prompt; repeats are measured on
  prompt fingerprints per tenant (exact cache), simplicity by the routing rules or the
  shipped router when the prompt is there, and trimming by the stated excess.

Combined savings are not additive: the simulator applies the techniques in the gateway's own
order (cache → trim → route) to each call, so a cached call is neither trimmed nor routed.
Every projection carries the steps it took, so the arithmetic can be read and checked.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from spendgate.call import Usage
from spendgate.pricing import PriceCatalog

__all__ = [
    "DAYS_PER_MONTH",
    "Policy",
    "Projection",
    "TrafficRecord",
    "project_rates",
    "simulate_traffic",
]

DAYS_PER_MONTH = 30
_Q = Decimal("0.01")


@dataclass(frozen=True)
class Policy:
    """Which optimizations to project, and the assumptions where traffic cannot tell."""

    cache: bool = True
    route: bool = True
    trim: bool = True
    cheap_model: str = "gpt-4o-mini"
    """Where simple calls go when routed."""
    simple_max_input_tokens: int = 400
    """Routing rule used when no learned router is at hand: short prompts without code."""
    prompt_excess: Decimal = Decimal("0.20")
    """Prompts are this much longer than needed (0.20 = 20% longer); trimming removes
    excess/(1+excess) of the input tokens."""
    semantic_extra_hit_rate: Decimal = Decimal(0)
    """Hits the semantic cache adds on top of exact repeats (measure it with
    `spendgate eval cache` on your own paraphrases; 0 unless stated)."""

    @property
    def trim_fraction(self) -> Decimal:
        return self.prompt_excess / (1 + self.prompt_excess)


@dataclass
class Projection:
    """Monthly cost per scenario (USD, exact decimals), with the steps that produced it."""

    calls_per_day: Decimal
    baseline: Decimal
    alone: dict[str, Decimal] = field(default_factory=dict)
    """Monthly cost with only that technique on."""
    combined: Decimal = Decimal(0)
    steps: list[str] = field(default_factory=list)
    by_feature: dict[str, dict[str, Decimal]] = field(default_factory=dict)
    touched: dict[str, Decimal] = field(default_factory=dict)
    """Share of calls each technique acted on (alone)."""
    assumptions: dict[str, str] = field(default_factory=dict)

    @property
    def saved_per_month(self) -> Decimal:
        return self.baseline - self.combined

    @property
    def saved_per_year(self) -> Decimal:
        return self.saved_per_month * 12

    def scaled(self, calls_per_day: Decimal) -> Projection:
        """The same mix at another volume (e.g. 1 M calls/day)."""
        k = calls_per_day / self.calls_per_day if self.calls_per_day else Decimal(0)
        return Projection(
            calls_per_day=calls_per_day,
            baseline=self.baseline * k,
            alone={t: v * k for t, v in self.alone.items()},
            combined=self.combined * k,
            steps=[*self.steps, f"scaled ×{_fmt(k)} to {_fmt(calls_per_day)} calls/day"],
            by_feature={
                f: {s: v * k for s, v in row.items()} for f, row in self.by_feature.items()
            },
            touched=dict(self.touched),
            assumptions=dict(self.assumptions),
        )

    def as_dict(self) -> dict[str, Any]:
        money = lambda d: format(d.quantize(_Q), "f")  # noqa: E731
        return {
            "calls_per_day": format(self.calls_per_day, "f"),
            "baseline_monthly_usd": money(self.baseline),
            "alone_monthly_usd": {t: money(v) for t, v in self.alone.items()},
            "combined_monthly_usd": money(self.combined),
            "saved_monthly_usd": money(self.saved_per_month),
            "saved_yearly_usd": money(self.saved_per_year),
            "touched_share": {
                t: format(v.quantize(Decimal("0.0001")), "f") for t, v in self.touched.items()
            },
            "by_feature": {
                f: {s: money(v) for s, v in row.items()} for f, row in self.by_feature.items()
            },
            "assumptions": self.assumptions,
            "steps": self.steps,
        }


def _fmt(d: Decimal) -> str:
    if abs(d) >= 1:
        return format(d.quantize(_Q), "f")
    return format(d.quantize(Decimal("0.0001")).normalize(), "f")


def project_rates(
    *,
    calls_per_day: Decimal,
    cost_per_call: Decimal,
    cacheable: Decimal,
    simple: Decimal,
    cheap_cost_ratio: Decimal,
    prompt_excess: Decimal,
    input_cost_share: Decimal,
) -> Projection:
    """Project from rates alone.

    `cheap_cost_ratio` is what a routed call costs relative to the frontier call (1/20 for
    a model 20× cheaper); `input_cost_share` is the part of a call's cost that is input
    tokens, which is all that trimming prompts can reduce.
    """
    month = calls_per_day * DAYS_PER_MONTH
    base = month * cost_per_call
    trim_factor = 1 - input_cost_share * prompt_excess / (1 + prompt_excess)
    route_factor = 1 - simple * (1 - cheap_cost_ratio)
    p = Projection(calls_per_day=calls_per_day, baseline=base)
    p.steps.append(
        f"baseline: {_fmt(calls_per_day)} calls/day × {DAYS_PER_MONTH} days × "
        f"${_fmt(cost_per_call)} = ${_fmt(base)}/month"
    )
    p.alone["cache"] = base * (1 - cacheable)
    p.alone["route"] = base * route_factor
    p.alone["trim"] = base * trim_factor
    after_cache = base * (1 - cacheable)
    p.steps.append(
        f"cache: {_fmt(cacheable * 100)}% of calls answered from cache at $0 → "
        f"${_fmt(base)} × {_fmt(1 - cacheable)} = ${_fmt(after_cache)}"
    )
    after_trim = after_cache * trim_factor
    p.steps.append(
        f"trim: prompts {_fmt(prompt_excess * 100)}% longer than needed → input cut by "
        f"{_fmt(prompt_excess)}/{_fmt(1 + prompt_excess)}; input is "
        f"{_fmt(input_cost_share * 100)}% of cost → × {_fmt(trim_factor)} = ${_fmt(after_trim)}"
    )
    combined = after_trim * route_factor
    p.steps.append(
        f"route: {_fmt(simple * 100)}% of the remaining calls to a model costing "
        f"{_fmt(cheap_cost_ratio)}× as much → × (1 − {_fmt(simple)} × "
        f"(1 − {_fmt(cheap_cost_ratio)})) = × {_fmt(route_factor)} = ${_fmt(combined)}"
    )
    p.combined = combined
    p.steps.append(f"saved ${_fmt(base - combined)}/month = ${_fmt((base - combined) * 12)}/year")
    p.touched = {"cache": cacheable, "route": simple * (1 - cacheable), "trim": 1 - cacheable}
    p.assumptions = {
        "cacheable_share": str(cacheable),
        "simple_share": str(simple),
        "cheap_cost_ratio": str(cheap_cost_ratio),
        "prompt_excess": str(prompt_excess),
        "input_cost_share": str(input_cost_share),
        "days_per_month": str(DAYS_PER_MONTH),
    }
    return p


@dataclass(frozen=True)
class TrafficRecord:
    """One logged call: from the ledger (tokens + fingerprint) or a JSONL of requests."""

    feature: str
    tenant: str
    model: str
    input_tokens: int
    output_tokens: int
    ts: float = 0.0
    fingerprint: str | None = None
    prompt: str | None = None
    """Last user message, when the log has it (enables the prompt-aware routing rule)."""
    cache_read_tokens: int = 0


def _fingerprint(r: TrafficRecord) -> str | None:
    if r.fingerprint:
        return r.fingerprint
    if r.prompt is not None:
        return hashlib.blake2b(r.prompt.strip().lower().encode(), digest_size=8).hexdigest()
    return None


def _is_simple(r: TrafficRecord, policy: Policy) -> bool:
    if r.input_tokens > policy.simple_max_input_tokens:
        return False
    text = r.prompt or ""
    return "```" not in text and "def " not in text and "SELECT " not in text.upper()


def simulate_traffic(
    records: Sequence[TrafficRecord],
    policy: Policy,
    catalog: PriceCatalog | None = None,
) -> Projection:
    """Replay records through the techniques in gateway order; project to a month."""
    catalog = catalog or PriceCatalog.default()
    if not records:
        raise ValueError("no traffic to simulate")
    span_days = _span_days(records)
    per_month = Decimal(DAYS_PER_MONTH) / span_days
    seen: set[tuple[str, str, str]] = set()
    totals: dict[str, Decimal] = defaultdict(Decimal)
    touched: dict[str, int] = defaultdict(int)
    feats: dict[str, dict[str, Decimal]] = defaultdict(lambda: defaultdict(Decimal))
    unpriced = 0
    semantic_every = (
        int(1 / policy.semantic_extra_hit_rate) if policy.semantic_extra_hit_rate > 0 else 0
    )
    misses = 0
    for r in records:
        full = _cost(catalog, r.model, r.input_tokens, r.output_tokens)
        if full is None:
            unpriced += 1
            continue
        fp = _fingerprint(r)
        key = (r.tenant, r.model, fp or "")
        hit = fp is not None and key in seen
        if fp is not None:
            seen.add(key)
        if not hit and semantic_every:
            misses += 1
            hit = misses % semantic_every == 0
        trimmed_in = r.input_tokens - int(
            (Decimal(r.input_tokens) * policy.trim_fraction).to_integral_value()
        )
        simple = _is_simple(r, policy)
        trim_cost = _cost(catalog, r.model, trimmed_in, r.output_tokens) or full
        route_cost = (
            _cost(catalog, policy.cheap_model, r.input_tokens, r.output_tokens) or full
            if simple
            else full
        )
        alone = {
            "cache": Decimal(0) if hit and policy.cache else full,
            "trim": trim_cost if policy.trim else full,
            "route": route_cost if policy.route else full,
        }
        if hit and policy.cache:
            combined = Decimal(0)
        else:
            model = policy.cheap_model if (simple and policy.route) else r.model
            tokens_in = trimmed_in if policy.trim else r.input_tokens
            combined = _cost(catalog, model, tokens_in, r.output_tokens) or full
        touched["cache"] += hit and policy.cache
        touched["route"] += simple and policy.route
        touched["trim"] += policy.trim and trimmed_in < r.input_tokens
        totals["baseline"] += full
        totals["combined"] += combined
        feats[r.feature]["baseline"] += full
        feats[r.feature]["combined"] += combined
        for t, v in alone.items():
            totals[t] += v
            feats[r.feature][t] += v
    n = len(records) - unpriced
    p = Projection(
        calls_per_day=Decimal(len(records)) / span_days,
        baseline=totals["baseline"] * per_month,
        alone={t: totals[t] * per_month for t in ("cache", "route", "trim")},
        combined=totals["combined"] * per_month,
        by_feature={
            f: {k: v * per_month for k, v in row.items()} for f, row in sorted(feats.items())
        },
        touched={t: Decimal(c) / n for t, c in touched.items()} if n else {},
    )
    p.steps = [
        f"{len(records)} calls over {_fmt(span_days)} days "
        f"({_fmt(p.calls_per_day)} calls/day); {unpriced} without a known price left out",
        f"priced each call on its model (catalog {catalog.version}); × {_fmt(per_month)} "
        f"to a {DAYS_PER_MONTH}-day month = ${_fmt(p.baseline)}",
        f"cache: exact repeats per (tenant, model, prompt fingerprint) → "
        f"{_fmt(p.touched.get('cache', Decimal(0)) * 100)}% of calls at $0",
        f"trim: input cut by {_fmt(policy.trim_fraction * 100)}% (prompts "
        f"{_fmt(policy.prompt_excess * 100)}% longer than needed)",
        f"route: prompts ≤ {policy.simple_max_input_tokens} tokens without code → "
        f"{policy.cheap_model} ({_fmt(p.touched.get('route', Decimal(0)) * 100)}% of calls)",
        "combined: per call in gateway order — a cached call is neither trimmed nor routed",
    ]
    p.assumptions = {
        "cheap_model": policy.cheap_model,
        "simple_max_input_tokens": str(policy.simple_max_input_tokens),
        "prompt_excess": str(policy.prompt_excess),
        "semantic_extra_hit_rate": str(policy.semantic_extra_hit_rate),
        "output_tokens": "as logged",
        "days_per_month": str(DAYS_PER_MONTH),
    }
    return p


def _span_days(records: Iterable[TrafficRecord]) -> Decimal:
    stamps = [r.ts for r in records if r.ts]
    if len(stamps) < 2:
        return Decimal(1)
    seconds = Decimal(str(max(stamps) - min(stamps)))
    return max(Decimal(1), seconds / 86_400)


def _cost(catalog: PriceCatalog, model: str, tokens_in: int, tokens_out: int) -> Decimal | None:
    cost = catalog.cost(model, Usage(input_tokens=tokens_in, output_tokens=tokens_out))
    return cost.total if cost is not None else None
