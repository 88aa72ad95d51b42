"""Price files: the shipped supplement and an operator's `pricing.overrides`.

genai-prices is the main source. A price file corrects or completes it, one cited entry at a
time, in the same vocabulary: per-million-token prices per usage bucket, optional long-context
tiers, request-context variants (`{processing: batch}`, `{service_tier: flex}`), an
`effective_from` date, and aliases (`mistral-large-latest` → the model it means today).

An entry replaces genai-prices' prices for its model wholesale while it is in effect: a bucket
it leaves out is unpriced (a call that uses it costs null), never taken from elsewhere. The
shipped supplement (`spendgate/data/price_supplement.yaml`) is reviewed by hand and dated;
`spendgate prices check` lists entries older than a limit. An operator's file (a path or an
https URL, `pricing.overrides:`) is read at start-up and wins over both.
"""

from __future__ import annotations

import functools
import hashlib
from datetime import UTC, date, datetime
from decimal import Decimal
from importlib import resources
from pathlib import Path
from typing import Any

import httpx2
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from spendgate.errors import SpendgateError
from spendgate.pricing.sheet import PriceSheet, Rate, Tiered
from spendgate.yamlfile import load_yaml, parse_yaml

__all__ = [
    "AliasEntry",
    "ModelEntry",
    "PriceFile",
    "PriceFileError",
    "PriceSpec",
    "load_price_file",
    "shipped_supplement",
]


class PriceFileError(SpendgateError, ValueError):
    """A price file that can't be read or doesn't validate; the message names the key."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TieredSpec(_Strict):
    """Long-context pricing: above `start` total input tokens, `price` applies to every token
    of the bucket (the "cliff" rule Anthropic and Google publish)."""

    base: Decimal = Field(ge=0)
    tiers: list[tuple[int, Decimal]]


Price = Decimal | TieredSpec


class PriceSpec(_Strict):
    """USD per million tokens per usage bucket; `per_request` in USD per call."""

    input: Price | None = None
    cache_read: Price | None = None
    cache_write: Price | None = None
    cache_write_1h: Price | None = None
    output: Price | None = None
    reasoning: Price | None = None
    input_audio: Price | None = None
    cache_audio_read: Price | None = None
    output_audio: Price | None = None
    per_request: Decimal | None = Field(default=None, ge=0)

    def rates(self) -> dict[str, Rate]:
        """Per-token rates of the buckets this spec prices (the others are absent)."""
        out: dict[str, Rate] = {}
        for name, value in self:
            if value is None or name == "per_request":
                continue
            if isinstance(value, TieredSpec):
                out[name] = Tiered(
                    base=value.base.scaleb(-6),
                    tiers=tuple((start, price.scaleb(-6)) for start, price in value.tiers),
                )
            else:
                out[name] = value.scaleb(-6)
        return out

    def sheet(self, version: str) -> PriceSheet:
        rates = self.rates()
        return PriceSheet(
            **rates,
            per_request=self.per_request,
            version=version,
            tiered=any(isinstance(r, Tiered) for r in rates.values()),
        )


class VariantEntry(_Strict):
    """Prices that apply when the request context matches `when` exactly, e.g.
    `{processing: batch}` or `{service_tier: priority}` (genai-prices' keys)."""

    when: dict[str, str]
    prices: PriceSpec


class ModelEntry(_Strict):
    provider: str
    id: str
    """The model id, as genai-prices names it when it knows the model."""
    names: list[str] = []
    """More names that mean this model (matched exactly, case-insensitively)."""
    prices: PriceSpec
    variants: list[VariantEntry] = []
    effective_from: datetime | None = None
    """From when these prices apply (UTC); earlier calls keep genai-prices' history."""
    source: str
    as_of: date
    """When the cited page published this price."""
    checked: date | None = None
    """When the price was last confirmed against a source (staleness counts from here;
    `as_of` when absent)."""
    note: str = ""

    @field_validator("effective_from")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value


class AliasEntry(_Strict):
    name: str
    """A moving name (`…-latest`) as clients send it."""
    provider: str
    target: str
    """The model id it means as of `as_of`."""
    source: str
    as_of: date
    checked: date | None = None
    note: str = ""


class PriceFile(_Strict):
    reviewed: date | None = None
    models: list[ModelEntry] = []
    aliases: list[AliasEntry] = []

    @functools.cached_property
    def digest(self) -> str:
        return hashlib.sha256(self.model_dump_json().encode()).hexdigest()[:12]


def _parse(data: Any, where: str) -> PriceFile:
    try:
        return PriceFile.model_validate(data or {})
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(file)'}: {e['msg']}" for e in exc.errors()
        )
        raise PriceFileError(f"price file {where} is invalid: {problems}") from None


def load_price_file(location: str) -> PriceFile:
    """A price file from a path or an http(s) URL (YAML or JSON)."""

    def invalid(exc: yaml.YAMLError) -> PriceFileError:
        return PriceFileError(f"price file {location} is not YAML or JSON: {exc}")

    if location.startswith(("http://", "https://")):
        try:
            response = httpx2.get(location, timeout=10, follow_redirects=True)
            response.raise_for_status()
        except httpx2.HTTPError as exc:
            raise PriceFileError(f"price file {location} could not be fetched: {exc}") from None
        return _parse(parse_yaml(response.text, invalid), location)
    data = load_yaml(
        Path(location),
        unreadable=lambda exc: PriceFileError(f"price file {location} could not be read: {exc}"),
        invalid=invalid,
    )
    return _parse(data, location)


@functools.cache
def shipped_supplement() -> PriceFile:
    text = (resources.files("spendgate") / "data" / "price_supplement.yaml").read_text("utf-8")
    return _parse(yaml.safe_load(text), "spendgate/data/price_supplement.yaml")
