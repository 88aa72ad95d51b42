"""Fine-tune break-even: when does a fine-tuned smaller model pay for its training?

A feature sends `calls_per_month` calls with an average token mix (input, output) to its
current model. A fine-tuned model answers the same calls at its own prices; training costs
a one-off amount (and some providers bill hosting per month). The fine-tune pays for itself
when the monthly saving covers the training cost, amortized over `amortize_months`, plus
hosting:

    saving per call     = current cost per call − tuned cost per call
    break-even volume   = (training_cost / amortize_months + hosting_per_month)
                          / saving per call                          [calls per month]
    payback             = training_cost / (volume × saving per call − hosting)  [months]

The seed's example: fine-tuned GPT-3.5 at $0.008 per 1K tokens against GPT-4o at $0.030 per
1K is 1 − 8/30 = 73⅓% cheaper per call (the seed rounds it to "75% cheaper").

Quality is not modelled here: a fine-tune is a candidate when the numbers work; whether
it answers well enough is measured with `spendgate eval` on the feature's own traffic.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from spendgate.analytics.simulate import DAYS_PER_MONTH, TrafficRecord
from spendgate.pricing import PriceCatalog

__all__ = [
    "DEFAULT_TUNED",
    "FineTune",
    "FineTuneCase",
    "Prices",
    "break_even",
    "feature_mix",
    "for_feature",
]

_K = Decimal(1000)
_M = Decimal(1_000_000)


@dataclass(frozen=True)
class Prices:
    """USD per token (use `per_1k` / `per_1m` to build from published figures)."""

    input: Decimal
    output: Decimal

    @classmethod
    def per_1k(cls, input_usd: Decimal, output_usd: Decimal | None = None) -> Prices:
        return cls(input_usd / _K, (input_usd if output_usd is None else output_usd) / _K)

    @classmethod
    def per_1m(cls, input_usd: Decimal, output_usd: Decimal | None = None) -> Prices:
        return cls(input_usd / _M, (input_usd if output_usd is None else output_usd) / _M)

    def call(self, input_tokens: Decimal, output_tokens: Decimal) -> Decimal:
        return input_tokens * self.input + output_tokens * self.output


DEFAULT_TUNED: dict[str, Any] = {
    "model": "ft:gpt-4o-mini",
    "prices": Prices.per_1m(Decimal("0.30"), Decimal("1.20")),
    "training_per_1m_tokens": Decimal("3.00"),
}
"""OpenAI's published fine-tuned gpt-4o-mini prices (inference $0.30/$1.20 per 1M tokens,
training $3 per 1M training tokens): the candidate the recommendations price."""


@dataclass(frozen=True, slots=True, kw_only=True)
class FineTune:
    """The fine-tuned model on offer: its prices per call and what it costs to have, the
    terms every break-even of it shares (one value, not the same five keywords)."""

    prices: Prices
    training_cost: Decimal
    """One-off, USD; amortized over `amortize_months`."""
    model: str = "fine-tuned"
    """A label for reports."""
    hosting_per_month: Decimal = Decimal(0)
    amortize_months: int = 12


@dataclass
class FineTuneCase:
    feature: str
    current_model: str
    tuned_model: str
    calls_per_month: Decimal
    input_tokens: Decimal
    """Average per call."""
    output_tokens: Decimal
    current_cost_per_call: Decimal
    tuned_cost_per_call: Decimal
    training_cost: Decimal
    hosting_per_month: Decimal
    amortize_months: int

    @property
    def saving_per_call(self) -> Decimal:
        return self.current_cost_per_call - self.tuned_cost_per_call

    @property
    def cheaper_share(self) -> Decimal:
        """How much cheaper a call is on the fine-tuned model (0.7333 = 73.33% cheaper)."""
        if self.current_cost_per_call <= 0:
            return Decimal(0)
        return self.saving_per_call / self.current_cost_per_call

    @property
    def monthly_saving(self) -> Decimal:
        """At the feature's volume, after hosting, before the training cost."""
        return self.calls_per_month * self.saving_per_call - self.hosting_per_month

    @property
    def monthly_net(self) -> Decimal:
        """Monthly saving with the training cost amortized over `amortize_months`."""
        return self.monthly_saving - self.training_cost / self.amortize_months

    @property
    def break_even_calls_per_month(self) -> Decimal | None:
        """The monthly volume at which the saving covers amortized training + hosting
        (None: a fine-tuned call is not cheaper, so no volume pays)."""
        if self.saving_per_call <= 0:
            return None
        fixed = self.training_cost / self.amortize_months + self.hosting_per_month
        return fixed / self.saving_per_call

    @property
    def payback_months(self) -> Decimal | None:
        """Months until the training cost is earned back at the feature's volume."""
        if self.monthly_saving <= 0:
            return None
        return self.training_cost / self.monthly_saving

    @property
    def pays(self) -> bool:
        be = self.break_even_calls_per_month
        return be is not None and self.calls_per_month >= be

    def steps(self) -> list[str]:
        f = _fmt
        out = [
            f"per call on {self.current_model}: {f(self.input_tokens, 1)} input + "
            f"{f(self.output_tokens, 1)} output tokens = ${f(self.current_cost_per_call, 6)}",
            f"per call on {self.tuned_model}: ${f(self.tuned_cost_per_call, 6)} → "
            f"{f(self.cheaper_share * 100)}% cheaper, saving ${f(self.saving_per_call, 6)}",
        ]
        be = self.break_even_calls_per_month
        if be is None:
            out.append("no break-even: the fine-tuned model is not cheaper per call")
            return out
        out.append(
            f"break-even: (${f(self.training_cost)} training / {self.amortize_months} months "
            f"+ ${f(self.hosting_per_month)} hosting/month) ÷ ${f(self.saving_per_call, 6)} "
            f"= {f(be, 0)} calls/month"
        )
        pay = self.payback_months
        out.append(
            f"at {f(self.calls_per_month, 0)} calls/month: saves ${f(self.monthly_saving)}"
            f"/month; training paid back in " + (f"{f(pay)} months" if pay is not None else "never")
        )
        return out

    def as_dict(self) -> dict[str, Any]:
        be = self.break_even_calls_per_month
        pay = self.payback_months
        return {
            "feature": self.feature,
            "current_model": self.current_model,
            "tuned_model": self.tuned_model,
            "calls_per_month": _fmt(self.calls_per_month, 0),
            "avg_input_tokens": _fmt(self.input_tokens, 1),
            "avg_output_tokens": _fmt(self.output_tokens, 1),
            "current_cost_per_call_usd": _fmt(self.current_cost_per_call, 8),
            "tuned_cost_per_call_usd": _fmt(self.tuned_cost_per_call, 8),
            "cheaper_share": _fmt(self.cheaper_share, 4),
            "training_cost_usd": _fmt(self.training_cost),
            "hosting_per_month_usd": _fmt(self.hosting_per_month),
            "amortize_months": self.amortize_months,
            "monthly_saving_usd": _fmt(self.monthly_saving),
            "break_even_calls_per_month": None if be is None else _fmt(be, 0),
            "payback_months": None if pay is None else _fmt(pay),
            "pays": self.pays,
            "steps": self.steps(),
        }


def _fmt(d: Decimal, places: int = 2) -> str:
    return format(d.quantize(Decimal(1).scaleb(-places)), "f")


def break_even(
    *,
    calls_per_month: Decimal,
    input_tokens: Decimal,
    output_tokens: Decimal,
    current: Prices,
    tuned: FineTune,
    feature: str = "(none)",
    current_model: str = "current",
) -> FineTuneCase:
    if tuned.amortize_months < 1:
        raise ValueError("amortize_months must be at least 1")
    return FineTuneCase(
        feature=feature,
        current_model=current_model,
        tuned_model=tuned.model,
        calls_per_month=calls_per_month,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        current_cost_per_call=current.call(input_tokens, output_tokens),
        tuned_cost_per_call=tuned.prices.call(input_tokens, output_tokens),
        training_cost=tuned.training_cost,
        hosting_per_month=tuned.hosting_per_month,
        amortize_months=tuned.amortize_months,
    )


@dataclass(frozen=True)
class FeatureMix:
    feature: str
    model: str
    """The feature's most-used requested model."""
    calls_per_month: Decimal
    input_tokens: Decimal
    output_tokens: Decimal


def feature_mix(records: Sequence[TrafficRecord], feature: str) -> FeatureMix:
    """A feature's logged monthly volume and average token mix."""
    rows = [r for r in records if r.feature == feature]
    if not rows:
        raise ValueError(f"no calls for feature {feature!r} in the traffic")
    stamps = [r.ts for r in records if r.ts]
    span = (
        max(Decimal(1), Decimal(str(max(stamps) - min(stamps))) / 86_400)
        if len(stamps) > 1
        else Decimal(1)
    )
    n = Decimal(len(rows))
    models: dict[str, int] = {}
    for r in rows:
        models[r.model] = models.get(r.model, 0) + 1
    return FeatureMix(
        feature=feature,
        model=max(models, key=lambda m: models[m]),
        calls_per_month=n / span * DAYS_PER_MONTH,
        input_tokens=sum((Decimal(r.input_tokens) for r in rows), Decimal(0)) / n,
        output_tokens=sum((Decimal(r.output_tokens) for r in rows), Decimal(0)) / n,
    )


def catalog_prices(catalog: PriceCatalog, model: str) -> Prices | None:
    """A model's uncached input and output prices per token from the catalog."""
    unit = catalog.unit_prices(model) or {}
    price_in, price_out = unit.get("input"), unit.get("output")
    if price_in is None or price_out is None:
        return None
    return Prices.per_1m(Decimal(price_in), Decimal(price_out))


def for_feature(
    records: Sequence[TrafficRecord],
    feature: str,
    tuned: FineTune,
    *,
    current: Prices | None = None,
    catalog: PriceCatalog | None = None,
) -> FineTuneCase:
    """Break-even for one feature of the logged traffic, priced on its current model."""
    mix = feature_mix(records, feature)
    if current is None:
        current = catalog_prices(catalog or PriceCatalog.default(), mix.model)
        if current is None:
            raise ValueError(f"no catalog price for {mix.model!r}; give the current prices")
    return break_even(
        calls_per_month=mix.calls_per_month,
        input_tokens=mix.input_tokens,
        output_tokens=mix.output_tokens,
        current=current,
        tuned=tuned,
        feature=feature,
        current_model=mix.model,
    )
