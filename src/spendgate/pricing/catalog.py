"""Model prices, resolved once per model: genai-prices, corrected by price files.

genai-prices does the hard, changing part (which model a name like `claude-sonnet-4-20250514`
or `gpt-4o-2024-08-06` is, which price was in force on a date, long-context tiers, service
tier and batch variants); the shipped supplement and an operator's `pricing.overrides` file
(`spendgate.pricing.pricefile`) correct or complete it, entry by entry, first-match:

    overrides file  →  shipped supplement  →  genai-prices

We turn the answer into `PriceSheet`s and cache them, because genai-prices' own `calc_price`
costs ~70 µs and the gateway prices every call.

Semantics that matter (`tests/test_pricing_golden.py` keeps `calc_price` as the reference):

* usage keys are hierarchical: `input_tokens` is the total input and the cache and audio
  buckets are parts of it, like our `Usage`;
* where a model has no price for a finer bucket genai-prices silently bills the parent's
  price (1h writes at the 5m rate, audio at the text rate, a batch call's cached tokens at the
  standard cache rate). We don't: a used bucket without its own price makes the cost None;
* a service tier or batch (`service_tier=`) prices from the model's variant for that request
  context, and only from it: a tier the data doesn't price for the model makes the cost None.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Protocol

import genai_prices
from genai_prices import data_snapshot
from genai_prices import types as gp

from spendgate.call import Cost, Usage
from spendgate.pricing.override import PriceOverride
from spendgate.pricing.pricefile import AliasEntry, ModelEntry, PriceFile, shipped_supplement
from spendgate.pricing.sheet import AUDIO_BUCKETS, BUCKETS, PriceSheet, Rate, Tiered, cost_of
from spendgate.pricing.tiers import tier_context

__all__ = ["PriceCatalog", "ResolvedModel"]

_PRICE_KEYS: dict[str, str] = {
    "input": "input_mtok",
    "cache_read": "cache_read_mtok",
    "cache_write": "cache_write_mtok",
    "cache_write_1h": "cache_write_1h_mtok",
    "output": "output_mtok",
    "reasoning": "output_reasoning_mtok",
    "input_audio": "input_audio_mtok",
    "cache_audio_read": "cache_audio_read_mtok",
    "output_audio": "output_audio_mtok",
}

_FIRST_PARTY: tuple[str, ...] = ("openai", "anthropic", "google")

_MAX_CACHED_MISSES = 4096
"""Model names come from clients; don't let a stream of made-up names grow the cache forever."""


class _Constraint(Protocol):
    def active(self, request_timestamp: datetime) -> bool: ...


@dataclass(frozen=True, slots=True)
class _From:
    """A price file entry's `effective_from`, as a constraint like genai-prices' own."""

    start: datetime

    def active(self, request_timestamp: datetime) -> bool:
        return request_timestamp >= self.start


@dataclass(frozen=True, slots=True)
class _Variant:
    when: tuple[tuple[str, str], ...]
    constraint: _Constraint | None
    rates: Mapping[str, Rate]
    per_request: Decimal | None


@dataclass(frozen=True, slots=True)
class _Standard:
    """One standard price and the request-context variants that go with it."""

    constraint: _Constraint | None
    sheet: PriceSheet
    variants: tuple[_Variant, ...]


@dataclass(frozen=True, slots=True)
class ResolvedModel:
    """What a (model, provider) name resolved to."""

    provider_id: str
    model_id: str
    name: str | None
    standards: tuple[_Standard, ...]
    """Conditional prices, latest first: the first whose constraint holds applies; when none
    holds the oldest does. Usually exactly one, unconstrained."""
    alias: AliasEntry | None = None
    """The alias the asked-for name went through, shown by `spendgate price`."""

    @property
    def sheets(self) -> tuple[tuple[_Constraint | None, PriceSheet], ...]:
        return tuple((s.constraint, s.sheet) for s in self.standards)

    def _standard(self, at: datetime) -> _Standard:
        for standard in self.standards:
            if standard.constraint is None or standard.constraint.active(at):
                return standard
        return self.standards[-1]

    def sheet_at(self, when: datetime | None, service_tier: str | None = None) -> PriceSheet | None:
        """The sheet for a call at `when` on `service_tier`; None when that tier is unpriced."""
        if len(self.standards) == 1 and service_tier is None:
            return self.standards[0].sheet
        at = when or datetime.now(tz=UTC)
        standard = self._standard(at)
        context = tier_context(service_tier)
        if context is None:
            return standard.sheet
        rates: dict[str, Rate] = {}
        per_request: Decimal | None = None
        matched = False
        for variant in standard.variants:
            if variant.when != context:
                continue
            if variant.constraint is not None and not variant.constraint.active(at):
                continue
            matched = True
            for key, rate in variant.rates.items():
                rates.setdefault(key, rate)  # earlier variants win, key by key (genai-prices)
            if per_request is None:
                per_request = variant.per_request
        if not matched:
            return None
        return PriceSheet(
            **rates,
            per_request=per_request,
            version=standard.sheet.version,
            tiered=any(isinstance(r, Tiered) for r in rates.values()),
        )


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


def _genai_rates(prices: gp.ModelPrice) -> dict[str, Rate]:
    rates = {name: _rate(getattr(prices, key, None)) for name, key in _PRICE_KEYS.items()}
    return {name: rate for name, rate in rates.items() if rate is not None}


def _per_request(prices: gp.ModelPrice) -> Decimal | None:
    kcount = getattr(prices, "requests_kcount", None)
    return kcount / 1000 if isinstance(kcount, Decimal) else None


def _genai_sheet(prices: gp.ModelPrice, version: str) -> PriceSheet:
    rates = _genai_rates(prices)
    return PriceSheet(
        **rates,
        per_request=_per_request(prices),
        version=version,
        tiered=any(isinstance(r, Tiered) for r in rates.values()),
    )


def _genai_variants(model: gp.ModelInfo) -> tuple[_Variant, ...]:
    return tuple(
        _Variant(
            when=tuple(sorted(v.when.items())),
            constraint=v.constraint,
            rates=_genai_rates(v.prices),
            per_request=_per_request(v.prices),
        )
        for v in model.price_variants or ()
    )


def _entry_standard(entry: ModelEntry, version: str) -> _Standard:
    return _Standard(
        constraint=_From(entry.effective_from) if entry.effective_from else None,
        sheet=entry.prices.sheet(version),
        variants=tuple(
            _Variant(
                when=tuple(sorted(v.when.items())),
                constraint=None,
                rates=v.prices.rates(),
                per_request=v.prices.per_request,
            )
            for v in entry.variants
        ),
    )


class PriceCatalog:
    """Prices by model name; one instance is shared by the whole process."""

    def __init__(
        self,
        snapshot: data_snapshot.DataSnapshot | None = None,
        *,
        overrides: PriceFile | None = None,
        supplement: PriceFile | None = None,
    ) -> None:
        self._snapshot = snapshot or data_snapshot.get_snapshot()
        version = f"genai-prices {genai_prices.__version__}"
        if self._snapshot.from_auto_update:
            version += f" @{self._snapshot.timestamp:%Y-%m-%dT%H:%M}"
        self._version = version
        supplement = shipped_supplement() if supplement is None else supplement
        self.files: list[tuple[str, PriceFile]] = []
        """(version label, file), first wins: the operator's overrides, then the supplement."""
        if overrides is not None:
            self.files.append((f"overrides:{overrides.digest}", overrides))
        reviewed = f"{supplement.reviewed}" if supplement.reviewed else supplement.digest
        self.files.append((f"spendgate-supplement {reviewed}", supplement))
        self._models: dict[tuple[str, str | None], ResolvedModel | None] = {}

    @classmethod
    def default(cls) -> PriceCatalog:
        return _default()

    @property
    def version(self) -> str:
        return self._version

    @property
    def snapshot(self) -> data_snapshot.DataSnapshot:
        return self._snapshot

    def resolve(self, model: str, provider: str | None = None) -> ResolvedModel | None:
        """The model a name means, or None. Cached, misses included."""
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
        service_tier: str | None = None,
    ) -> Cost | None:
        """Exact cost, or None when the price is unknown (unknown model, a used bucket that
        has no price, or a service tier the model's data doesn't price). An override wins over
        the catalog and needs no known model."""
        sheet = self.sheet(model, provider, when=when, service_tier=service_tier, override=override)
        return None if sheet is None else cost_of(sheet, usage)

    def sheet(
        self,
        model: str,
        provider: str | None = None,
        *,
        when: datetime | None = None,
        service_tier: str | None = None,
        override: PriceOverride | None = None,
    ) -> PriceSheet | None:
        if override is not None:
            return override.sheet_for(service_tier)
        resolved = self.resolve(model, provider)
        return None if resolved is None else resolved.sheet_at(when, service_tier)

    def unit_prices(
        self,
        model: str,
        provider: str | None = None,
        *,
        when: datetime | None = None,
        service_tier: str | None = None,
    ) -> dict[str, Decimal | None]:
        """USD per million tokens for each bucket (`per_request` in USD per call), base tier
        for tiered models; all None for an unknown model so reports can list it anyway."""
        sheet = self.sheet(model, provider, when=when, service_tier=service_tier)
        if sheet is None:
            return dict.fromkeys((*BUCKETS, "reasoning", *AUDIO_BUCKETS, "per_request"))
        return sheet.per_mtok()

    # ------------------------------------------------------------------ lookup
    def _alias(self, ref: str) -> AliasEntry | None:
        for _, file in self.files:
            for alias in file.aliases:
                if alias.name.lower() == ref:
                    return alias
        return None

    def _entries(self, provider_id: str, model_id: str) -> list[tuple[str, ModelEntry]]:
        """Price file entries for a model, the first file's first; each file's entries latest
        effective date first."""
        found: list[tuple[str, ModelEntry]] = []
        for label, file in self.files:
            mine = [m for m in file.models if m.provider == provider_id and m.id == model_id]
            oldest = datetime.min.replace(tzinfo=UTC)
            mine.sort(key=lambda m: m.effective_from or oldest, reverse=True)
            found.extend((label, m) for m in mine)
        return found

    def _named(self, ref: str, provider: str | None) -> ModelEntry | None:
        for _, file in self.files:
            for entry in file.models:
                if provider not in (None, entry.provider):
                    continue
                if ref == entry.id.lower() or ref in (n.lower() for n in entry.names):
                    return entry
        return None

    def _lookup(self, model: str, provider: str | None) -> ResolvedModel | None:
        ref = model.strip().lower()
        prov = provider.strip().lower() if provider else None
        bare = ref.split("/", 1)[1] if "/" in ref else ref
        alias = self._alias(ref) or self._alias(bare)
        if alias is not None:
            ref, prov, bare = alias.target.lower(), alias.provider, alias.target.lower()
        entry = self._named(bare, prov)
        if entry is not None:
            found = self._from_genai(entry.id, entry.provider) or self._resolved(
                entry.provider, entry.id, None, None
            )
        else:
            found = self._from_genai(ref, prov)
        if found is None:
            return None
        if alias is not None:
            return ResolvedModel(
                found.provider_id, found.model_id, found.name, found.standards, alias=alias
            )
        return found

    def _from_genai(self, ref: str, prov: str | None) -> ResolvedModel | None:
        snap = self._snapshot
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
            return self._resolved(p.id, m.id, m.name, m)
        return None

    def _resolved(
        self, provider_id: str, model_id: str, name: str | None, model: gp.ModelInfo | None
    ) -> ResolvedModel | None:
        standards = [
            _entry_standard(entry, label) for label, entry in self._entries(provider_id, model_id)
        ]
        if model is not None:
            variants = _genai_variants(model)
            if isinstance(model.prices, gp.ModelPrice):
                standards.append(
                    _Standard(None, _genai_sheet(model.prices, self._version), variants)
                )
            else:
                standards.extend(
                    _Standard(c.constraint, _genai_sheet(c.prices, self._version), variants)
                    for c in reversed(model.prices)
                )
        if not standards:
            return None
        return ResolvedModel(
            provider_id=provider_id, model_id=model_id, name=name, standards=tuple(standards)
        )


@functools.cache
def _default() -> PriceCatalog:
    return PriceCatalog()
