"""Model prices from the maintained `genai-prices` package, resolved once per model.

genai-prices does the hard, changing part (which model a name like `claude-sonnet-4-20250514`
or `gpt-4o-2024-08-06` is, which price was in force on a date, long-context tiers); we turn
its answer into a `PriceSheet` and cache it, because its own `calc_price` costs ~70 µs and the
gateway prices every call.

Two of its semantics matter when translating (see also `tests/test_pricing_golden.py`, which
keeps `calc_price` as the reference):

* its usage keys are hierarchical: `input_tokens` is the total input and `cache_read_tokens`,
  `cache_write_tokens` are parts of it — like our `Usage` — but its `cache_write_tokens` is
  *all* cache writes with `cache_write_1h_tokens` a part of that, whereas ours is the 5-minute
  writes only;
* where a model has no price for a finer bucket it silently bills it at the parent's price
  (1h writes at the 5m rate, cache reads at the input rate). We don't: a used bucket without
  its own price makes the cost None.

Price variants (batch, flex and priority service tiers) are not applied: a sheet is the
standard on-demand price.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

import genai_prices
from genai_prices import data_snapshot
from genai_prices import types as gp

from spendgate.call import Cost, Usage
from spendgate.pricing.override import PriceOverride
from spendgate.pricing.sheet import BUCKETS, PriceSheet, Rate, Tiered, cost_of

__all__ = ["PriceCatalog", "ResolvedModel"]

_PRICE_KEYS: dict[str, str] = {
    "input": "input_mtok",
    "cache_read": "cache_read_mtok",
    "cache_write": "cache_write_mtok",
    "cache_write_1h": "cache_write_1h_mtok",
    "output": "output_mtok",
    "reasoning": "output_reasoning_mtok",
}

_FIRST_PARTY: tuple[str, ...] = ("openai", "anthropic", "google")

_MAX_CACHED_MISSES = 4096
"""Model names come from clients; don't let a stream of made-up names grow the cache forever."""

_Constraint = gp.StartDateConstraint | gp.TimeOfDateConstraint


@dataclass(frozen=True, slots=True)
class ResolvedModel:
    """What a (model, provider) name resolved to in genai-prices."""

    provider_id: str
    model_id: str
    name: str | None
    sheets: tuple[tuple[_Constraint | None, PriceSheet], ...]
    """Conditional prices, latest first: the first whose constraint holds applies (genai-prices'
    rule); when none holds the oldest does. Usually exactly one, unconstrained."""

    def sheet_at(self, when: datetime | None) -> PriceSheet:
        sheets = self.sheets
        if len(sheets) == 1:
            return sheets[0][1]
        at = when or datetime.now(tz=UTC)
        for constraint, sheet in sheets:
            if constraint is None or constraint.active(at):
                return sheet
        return sheets[-1][1]


def _rate(value: object) -> Rate | None:
    if value is None:
        return None
    if isinstance(value, gp.TieredPrices):
        return Tiered(
            base=value.base.scaleb(-6),
            tiers=tuple((t.start, t.price.scaleb(-6)) for t in value.tiers),
        )
    if isinstance(value, Decimal):
        return value.scaleb(-6)
    raise TypeError(f"unexpected price value {value!r}")


def _sheet(prices: gp.ModelPrice, version: str) -> PriceSheet:
    rates = {name: _rate(getattr(prices, key, None)) for name, key in _PRICE_KEYS.items()}
    kcount = getattr(prices, "requests_kcount", None)
    per_request = kcount / 1000 if isinstance(kcount, Decimal) else None
    return PriceSheet(
        **rates,
        per_request=per_request,
        version=version,
        tiered=any(isinstance(r, Tiered) for r in rates.values()),
    )


class PriceCatalog:
    """Prices by model name; one instance is shared by the whole process."""

    def __init__(self, snapshot: data_snapshot.DataSnapshot | None = None) -> None:
        self._snapshot = snapshot or data_snapshot.get_snapshot()
        version = f"genai-prices {genai_prices.__version__}"
        if self._snapshot.from_auto_update:
            version += f" @{self._snapshot.timestamp:%Y-%m-%dT%H:%M}"
        self._version = version
        self._models: dict[tuple[str, str | None], ResolvedModel | None] = {}

    @classmethod
    def default(cls) -> PriceCatalog:
        return _default()

    @property
    def version(self) -> str:
        return self._version

    def resolve(self, model: str, provider: str | None = None) -> ResolvedModel | None:
        """The genai-prices model a name means, or None. Cached, misses included."""
        key = (model, provider)
        try:
            return self._models[key]
        except KeyError:
            pass
        found = self._lookup(model, provider)
        if found is not None or len(self._models) < _MAX_CACHED_MISSES:
            self._models[key] = found
        return found

    def knows(self, model: str, provider: str | None = None) -> bool:
        return self.resolve(model, provider) is not None

    def cost(
        self,
        model: str,
        usage: Usage,
        *,
        provider: str | None = None,
        override: PriceOverride | None = None,
        when: datetime | None = None,
    ) -> Cost | None:
        """Exact cost, or None when the price is unknown (unknown model, or a used bucket that
        has no price). An override wins over the catalog and needs no known model."""
        if override is not None:
            return cost_of(override.sheet, usage)
        resolved = self.resolve(model, provider)
        if resolved is None:
            return None
        return cost_of(resolved.sheet_at(when), usage)

    def sheet(
        self, model: str, provider: str | None = None, *, when: datetime | None = None
    ) -> PriceSheet | None:
        resolved = self.resolve(model, provider)
        return None if resolved is None else resolved.sheet_at(when)

    def unit_prices(
        self, model: str, provider: str | None = None, *, when: datetime | None = None
    ) -> dict[str, Decimal | None]:
        """USD per million tokens for each bucket (`per_request` in USD per call), base tier
        for tiered models; all None for an unknown model so reports can list it anyway."""
        sheet = self.sheet(model, provider, when=when)
        if sheet is None:
            return dict.fromkeys((*BUCKETS, "reasoning", "per_request"))
        return sheet.per_mtok()

    def _lookup(self, model: str, provider: str | None) -> ResolvedModel | None:
        snap = self._snapshot
        ref = model.strip().lower()
        prov = provider.strip().lower() if provider else None
        if prov is not None and data_snapshot.find_provider_by_id(snap.providers, prov) is None:
            # Our adapter's label ("simulated", "vllm") isn't a genai-prices provider: price by
            # the model name alone rather than not at all.
            prov = None
        attempts: list[tuple[str, str | None]] = [(ref, prov)]
        if "/" in ref:
            # "openai/gpt-4o" (LiteLLM/OpenRouter style): the prefix names the provider when
            # genai-prices knows it; otherwise it's just a namespace.
            prefix, rest = ref.split("/", 1)
            if data_snapshot.find_provider_by_id(snap.providers, prefix) is not None:
                attempts.append((rest, prefix))
            attempts.append((rest, prov))
        if prov is None:
            # genai-prices finds a provider from the name by pattern, and some first-party names
            # (text-embedding-3-small, …) match no pattern. Only first-party providers are
            # tried: their names are distinctive, unlike open models served by many hosts.
            bare = ref.split("/", 1)[1] if "/" in ref else ref
            attempts.extend((bare, p) for p in _FIRST_PARTY)
        for ref_, prov_ in attempts:
            if not ref_:
                continue
            try:
                p, m = snap.find_provider_model(ref_, None, prov_, None)
            except LookupError:
                continue
            return self._resolved(p, m)
        return None

    def _resolved(self, provider: gp.Provider, model: gp.ModelInfo) -> ResolvedModel:
        if isinstance(model.prices, gp.ModelPrice):
            sheets: tuple[tuple[_Constraint | None, PriceSheet], ...] = (
                (None, _sheet(model.prices, self._version)),
            )
        else:
            sheets = tuple(
                (c.constraint, _sheet(c.prices, self._version)) for c in reversed(model.prices)
            )
        return ResolvedModel(
            provider_id=provider.id, model_id=model.id, name=model.name, sheets=sheets
        )


@functools.cache
def _default() -> PriceCatalog:
    return PriceCatalog()
