"""`spendgate price MODEL --usage JSON [--json]`: show how one usage block is costed.

The point is auditability — anyone can paste the usage block from a provider response and see
each bucket's tokens × price, so a disputed figure is checked in seconds, not argued about.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from spendgate.call import Usage
from spendgate.pricing.catalog import PriceCatalog
from spendgate.pricing.sheet import rate_at
from spendgate.pricing.usage import merge_anthropic_stream_usage, usage_from_native

__all__ = ["fmt_usd", "price_command"]

_LABELS = {
    "input": "input (uncached)",
    "cache_read": "cache read",
    "cache_write": "cache write 5m",
    "cache_write_1h": "cache write 1h",
    "output": "output",
    "reasoning": "  of which reasoning",
}


def fmt_usd(d: Decimal) -> str:
    """Plain notation with no trailing zeros: Decimal's str() turns tiny amounts into '3E-7'."""
    text = format(d.normalize(), "f")
    return "0" if text in ("-0", "0") else text


def _parse(usage_json: str) -> tuple[str, Usage]:
    try:
        data: Any = json.loads(usage_json)
    except json.JSONDecodeError as e:
        raise ValueError(f"--usage is not valid JSON: {e}") from e
    if isinstance(data, dict) and isinstance(data.get("usage"), dict):
        data = data["usage"]  # a whole response body was pasted
    if isinstance(data, list) and len(data) == 2 and all(isinstance(x, dict) for x in data):
        # [message_start usage, message_delta usage] of an Anthropic stream
        return "anthropic-stream", merge_anthropic_stream_usage(data[0], data[1])
    if not isinstance(data, dict):
        raise ValueError("--usage must be a JSON object (a provider's usage block)")
    return usage_from_native(data)


def price_command(
    model: str, usage_json: str, *, provider: str | None = None, as_json: bool = False
) -> str:
    """Price one provider-native usage block; ValueError for an unknown model or bad usage."""
    shape, usage = _parse(usage_json)
    catalog = PriceCatalog.default()
    resolved = catalog.resolve(model, provider)
    if resolved is None:
        where = f" for provider {provider!r}" if provider else ""
        raise ValueError(f"unknown model {model!r}{where}: no price in {catalog.version}")
    sheet = resolved.sheet_at(None)
    total_in = usage.input_tokens
    reasoning_priced = sheet.reasoning is not None
    counts = {
        "input": usage.uncached_input_tokens,
        "cache_read": usage.cache_read_tokens,
        "cache_write": usage.cache_write_tokens,
        "cache_write_1h": usage.cache_write_1h_tokens,
        "output": usage.output_tokens - (usage.reasoning_tokens if reasoning_priced else 0),
        "reasoning": usage.reasoning_tokens,
    }
    cost = catalog.cost(model, usage, provider=provider)
    rows: list[dict[str, Any]] = []
    for bucket, tokens in counts.items():
        if bucket == "reasoning" and not (reasoning_priced or tokens):
            continue
        rate = rate_at(getattr(sheet, bucket), total_in)
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
    if sheet.per_request is not None:
        rows.append(
            {
                "bucket": "per_request",
                "tokens": None,
                "usd_per_mtok": None,
                "usd": fmt_usd(sheet.per_request),
                "billed_as_output": False,
            }
        )

    if as_json:
        return json.dumps(
            {
                "model": model,
                "provider": provider,
                "resolved": {"provider": resolved.provider_id, "model": resolved.model_id},
                "usage_shape": shape,
                "cost_usd": None if cost is None else fmt_usd(cost.total),
                "cost_nanos": None if cost is None else cost.total_nanos,
                "breakdown": rows,
                "usage": {
                    "input_tokens": usage.input_tokens,
                    "uncached_input_tokens": usage.uncached_input_tokens,
                    "cache_read_tokens": usage.cache_read_tokens,
                    "cache_write_tokens": usage.cache_write_tokens,
                    "cache_write_1h_tokens": usage.cache_write_1h_tokens,
                    "output_tokens": usage.output_tokens,
                    "reasoning_tokens": usage.reasoning_tokens,
                },
                "unit_prices_usd_per_mtok": {
                    k: None if v is None else fmt_usd(v)
                    for k, v in sheet.per_mtok(total_in).items()
                },
                "price_version": catalog.version,
            },
            indent=2,
        )

    lines = [
        f"{model} → {resolved.provider_id}/{resolved.model_id}  ({catalog.version}, {shape} usage)"
    ]
    for row in rows:
        label = _LABELS.get(row["bucket"], row["bucket"])
        if not row["tokens"] and row["usd_per_mtok"] is None and row["bucket"] != "per_request":
            continue  # a bucket this model doesn't have and the call didn't use
        if row["bucket"] == "per_request":
            lines.append(f"  {'per request':<22}{'':>32} = ${row['usd']}")
            continue
        price = "no price" if row["usd_per_mtok"] is None else f"${row['usd_per_mtok']}/MTok"
        shown: str
        if row["billed_as_output"]:
            price, shown = "output rate", "(in output)"
        elif row["usd"] is None:
            shown = "UNPRICED" if row["tokens"] else "$0"
        else:
            shown = f"${row['usd']}"
        lines.append(f"  {label:<22}{row['tokens']:>12,} tok × {price:<14} = {shown}")
    total = "unknown (a used bucket has no price)" if cost is None else f"${fmt_usd(cost.total)}"
    lines.append(f"  {'total':<22}{'':>32} = {total}")
    return "\n".join(lines)
