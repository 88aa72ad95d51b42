"""`spendgate price MODEL --usage JSON [--service-tier T] [--json]`: show how one usage block is
costed.

The point is auditability — anyone can paste the usage block from a provider response and see
each bucket's tokens × price, so a disputed figure is checked in seconds, not argued about.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from spendgate.call import Usage
from spendgate.pricing.catalog import PriceCatalog
from spendgate.pricing.sheet import AUDIO_BUCKETS, PriceSheet, cost_of, rate_at
from spendgate.pricing.tiers import normalize_tier
from spendgate.pricing.usage import merge_anthropic_stream_usage, usage_from_native

__all__ = ["fmt_usd", "price_command"]

_LABELS = {
    "input": "input (uncached)",
    "input_audio": "input audio",
    "cache_read": "cache read",
    "cache_audio_read": "cache read audio",
    "cache_write": "cache write 5m",
    "cache_write_1h": "cache write 1h",
    "output": "output",
    "output_audio": "output audio",
    "reasoning": "  of which reasoning",
}


def fmt_usd(d: Decimal) -> str:
    """Plain notation with no trailing zeros: Decimal's str() turns tiny amounts into '3E-7'."""
    text = format(d.normalize(), "f")
    return "0" if text in ("-0", "0") else text


def _parse(usage_json: str) -> tuple[str, Usage, str | None]:
    """(usage shape, usage, the service tier the pasted JSON names, if any)."""
    try:
        data: Any = json.loads(usage_json)
    except json.JSONDecodeError as e:
        raise ValueError(f"--usage is not valid JSON: {e}") from e
    tier: str | None = None
    if isinstance(data, dict) and isinstance(data.get("usage"), dict):
        tier = data.get("service_tier")  # a whole OpenAI response body was pasted
        data = data["usage"]
    if isinstance(data, dict) and isinstance(data.get("usageMetadata"), dict):
        data = data["usageMetadata"]  # a whole Gemini response
    if isinstance(data, list) and len(data) == 2 and all(isinstance(x, dict) for x in data):
        # [message_start usage, message_delta usage] of an Anthropic stream
        tier = data[0].get("service_tier")
        return "anthropic-stream", merge_anthropic_stream_usage(data[0], data[1]), tier
    if not isinstance(data, dict):
        raise ValueError("--usage must be a JSON object (a provider's usage block)")
    if isinstance(data.get("service_tier"), str):
        tier = data["service_tier"]  # Anthropic reports it inside usage
    shape, usage = usage_from_native(data)
    return shape, usage, tier if isinstance(tier, str) else None


def _counts(usage: Usage, reasoning_priced: bool) -> dict[str, int]:
    return {
        "input": usage.uncached_input_tokens - usage.input_audio_tokens,
        "input_audio": usage.input_audio_tokens,
        "cache_read": usage.cache_read_tokens - usage.cache_audio_read_tokens,
        "cache_audio_read": usage.cache_audio_read_tokens,
        "cache_write": usage.cache_write_tokens,
        "cache_write_1h": usage.cache_write_1h_tokens,
        "output": usage.output_tokens
        - usage.output_audio_tokens
        - (usage.reasoning_tokens if reasoning_priced else 0),
        "output_audio": usage.output_audio_tokens,
        "reasoning": usage.reasoning_tokens,
    }


def _rows(sheet: PriceSheet | None, usage: Usage) -> list[dict[str, Any]]:
    reasoning_priced = sheet is not None and sheet.reasoning is not None
    rows: list[dict[str, Any]] = []
    for bucket, tokens in _counts(usage, reasoning_priced).items():
        rate = None if sheet is None else rate_at(getattr(sheet, bucket), usage.input_tokens)
        if bucket in ("reasoning", *AUDIO_BUCKETS) and not tokens and rate is None:
            continue
        per_mtok = None if rate is None else rate.scaleb(6)
        if bucket == "reasoning" and not reasoning_priced:
            usd: Decimal | None = None  # shown for information; billed inside output
        else:
            usd = Decimal(0) if not tokens else None if rate is None else rate * tokens
        rows.append(
            {
                "bucket": bucket,
                "tokens": tokens,
                "usd_per_mtok": None if per_mtok is None else fmt_usd(per_mtok),
                "usd": None if usd is None else fmt_usd(usd),
                "billed_as_output": bucket == "reasoning" and not reasoning_priced,
            }
        )
    if sheet is not None and sheet.per_request is not None:
        rows.append(
            {
                "bucket": "per_request",
                "tokens": None,
                "usd_per_mtok": None,
                "usd": fmt_usd(sheet.per_request),
                "billed_as_output": False,
            }
        )
    return rows


def price_command(
    model: str,
    usage_json: str,
    *,
    provider: str | None = None,
    as_json: bool = False,
    service_tier: str | None = None,
    catalog: PriceCatalog | None = None,
) -> str:
    """Price one provider-native usage block; ValueError for an unknown model or bad usage.

    The tier is `service_tier` when given, else the one the pasted JSON names (Anthropic's
    `usage.service_tier`, an OpenAI body's `service_tier`), else standard."""
    shape, usage, pasted_tier = _parse(usage_json)
    tier = normalize_tier(service_tier if service_tier is not None else pasted_tier)
    catalog = catalog or PriceCatalog.default()
    resolved = catalog.resolve(model, provider)
    if resolved is None:
        where = f" for provider {provider!r}" if provider else ""
        raise ValueError(f"unknown model {model!r}{where}: no price in {catalog.version}")
    sheet = resolved.sheet_at(None, tier)
    cost = None if sheet is None else cost_of(sheet, usage)
    rows = _rows(sheet, usage)
    alias = resolved.alias
    version = sheet.version if sheet is not None else resolved.standards[0].sheet.version
    unknown_why = (
        f"no `{tier}` price for this model in {version}"
        if sheet is None
        else "a used bucket has no price"
    )
    if as_json:
        doc = {
            "model": model,
            "provider": provider,
            "resolved": {"provider": resolved.provider_id, "model": resolved.model_id},
            "alias": None
            if alias is None
            else {
                "name": alias.name,
                "target": f"{alias.provider}/{alias.target}",
                "source": alias.source,
                "as_of": alias.as_of.isoformat(),
            },
            "service_tier": tier or "standard",
            "usage_shape": shape,
            "cost_usd": None if cost is None else fmt_usd(cost.total),
            "cost_nanos": None if cost is None else cost.total_nanos,
            "unknown_because": None if cost is not None else unknown_why,
            "breakdown": rows,
            "usage": {name: getattr(usage, name) for name in _USAGE_FIELDS},
            "unit_prices_usd_per_mtok": None
            if sheet is None
            else {
                k: None if v is None else fmt_usd(v)
                for k, v in sheet.per_mtok(usage.input_tokens).items()
            },
            "price_version": version,
        }
        return json.dumps(doc, indent=2)
    via = "" if alias is None else f" (alias, as of {alias.as_of})"
    lines = [
        f"{model} → {resolved.provider_id}/{resolved.model_id}{via}  "
        f"({version}, {shape} usage, {tier or 'standard'} tier)"
    ]
    lines.extend(line for row in rows if (line := _row_line(row)) is not None)
    total = f"unknown ({unknown_why})" if cost is None else f"${fmt_usd(cost.total)}"
    lines.append(f"  {'total':<22}{'':>32} = {total}")
    return "\n".join(lines)


_USAGE_FIELDS = (
    "input_tokens",
    "uncached_input_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "cache_write_1h_tokens",
    "output_tokens",
    "reasoning_tokens",
    "input_audio_tokens",
    "cache_audio_read_tokens",
    "output_audio_tokens",
)


def _row_line(row: dict[str, Any]) -> str | None:
    """One bucket of the breakdown as a line, or None for a bucket this model doesn't have
    and the call didn't use."""
    label = _LABELS.get(row["bucket"], row["bucket"])
    if not row["tokens"] and row["usd_per_mtok"] is None and row["bucket"] != "per_request":
        return None
    if row["bucket"] == "per_request":
        return f"  {'per request':<22}{'':>32} = ${row['usd']}"
    price = "no price" if row["usd_per_mtok"] is None else f"${row['usd_per_mtok']}/MTok"
    shown: str
    if row["billed_as_output"]:
        price, shown = "output rate", "(in output)"
    elif row["usd"] is None:
        shown = "UNPRICED" if row["tokens"] else "$0"
    else:
        shown = f"${row['usd']}"
    return f"  {label:<22}{row['tokens']:>12,} tok × {price:<14} = {shown}"
