"""Per-deployment prices from config, for models the catalog can't know (self-hosted) or
prices it mustn't use (negotiated discounts).

An override replaces the catalog's sheet wholesale rather than patching it: a half-merged sheet
would silently bill cache reads at list price for a customer with a negotiated rate. So a
bucket the override leaves out is unpriced, and a call that uses it costs None.
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import replace
from decimal import Decimal

import pydantic

from spendgate.pricing.sheet import PriceSheet
from spendgate.pricing.tiers import normalize_tier

__all__ = ["PriceOverride"]


class PriceOverride(pydantic.BaseModel):
    """Token prices in USD per million tokens, `per_request` in USD per call."""

    model_config = pydantic.ConfigDict(frozen=True, extra="forbid")

    input: Decimal | None = pydantic.Field(default=None, ge=0)
    cache_read: Decimal | None = pydantic.Field(default=None, ge=0)
    cache_write: Decimal | None = pydantic.Field(default=None, ge=0)
    """5-minute (default TTL) cache writes."""
    cache_write_1h: Decimal | None = pydantic.Field(default=None, ge=0)
    output: Decimal | None = pydantic.Field(default=None, ge=0)
    input_audio: Decimal | None = pydantic.Field(default=None, ge=0)
    cache_audio_read: Decimal | None = pydantic.Field(default=None, ge=0)
    output_audio: Decimal | None = pydantic.Field(default=None, ge=0)
    per_request: Decimal | None = pydantic.Field(default=None, ge=0)
    service_tiers: dict[str, PriceOverride] = pydantic.Field(default_factory=dict)
    """Negotiated prices per service tier (`batch`, `flex`, `priority`): a tier not listed
    here is unpriced, so a call billed at it costs null."""

    @functools.cached_property
    def fingerprint(self) -> str:
        """Short stable hash of the prices, so a ledger row says which price it was costed at
        and a config edit shows up as a new version rather than rewriting history."""
        canon = _canonical(self.model_dump(exclude_none=True))
        digest = hashlib.sha256(json.dumps(canon, sort_keys=True).encode()).hexdigest()
        return digest[:12]

    @property
    def version(self) -> str:
        return f"override:{self.fingerprint}"

    @functools.cached_property
    def sheet(self) -> PriceSheet:
        """Built once per override object; the gateway holds overrides in config for its life."""

        def tok(v: Decimal | None) -> Decimal | None:
            return None if v is None else v.scaleb(-6)

        return PriceSheet(
            input=tok(self.input),
            cache_read=tok(self.cache_read),
            cache_write=tok(self.cache_write),
            cache_write_1h=tok(self.cache_write_1h),
            output=tok(self.output),
            input_audio=tok(self.input_audio),
            cache_audio_read=tok(self.cache_audio_read),
            output_audio=tok(self.output_audio),
            per_request=self.per_request,
            version=self.version,
        )

    def sheet_for(self, service_tier: str | None) -> PriceSheet | None:
        """The sheet for a tier: the standard one, a listed tier's, or None (unpriced)."""
        tier = normalize_tier(service_tier)
        if tier is None:
            return self.sheet
        listed = self.service_tiers.get(tier)
        if listed is None:
            return None
        return replace(listed.sheet, version=self.version)


def _canonical(value: object) -> object:
    """Decimals in plain normalized notation (2.50 and 2.5 are one price), empty maps dropped."""
    if isinstance(value, Decimal):
        return format(value.normalize(), "f")
    if isinstance(value, dict):
        return {k: _canonical(v) for k, v in value.items() if v not in (None, {})}
    return value
