"""A resolved price sheet and the cost arithmetic on it.

Every call is priced, so the hot path is plain Decimal multiplication on prices resolved once
per model: `genai_prices.calc_price` re-validates the unit registry and rebuilds its usage
object per call (~70 µs); multiplying five cached per-token Decimals takes a few µs. The rules
are TensorZero's: each price maps to one usage bucket, and a bucket with tokens but no price
makes the whole cost unknown (None) rather than silently zero or billed at another bucket's
rate.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import cast

from spendgate.call import Cost, Usage

__all__ = [
    "AUDIO_BUCKETS",
    "BUCKETS",
    "MTOK",
    "PriceSheet",
    "Rate",
    "Tiered",
    "cost_of",
    "rate_at",
]

MTOK = 1_000_000

BUCKETS: tuple[str, ...] = ("input", "cache_read", "cache_write", "cache_write_1h", "output")
"""Token buckets a sheet prices, in display order (`Usage` field for each: uncached input,
cache_read_tokens, cache_write_tokens, cache_write_1h_tokens, output_tokens)."""

AUDIO_BUCKETS: tuple[str, ...] = ("input_audio", "cache_audio_read", "output_audio")
"""Audio parts of input, cache reads and output (`Usage.input_audio_tokens`, …), priced apart;
only sheets of audio-capable models have them."""

_ZERO = Decimal(0)


@dataclass(frozen=True, slots=True)
class Tiered:
    """A "cliff" tier as genai-prices models it: once the call's *total* input tokens exceed a
    tier's start, that tier's price applies to every token of the bucket, not just the excess
    (Anthropic's and Google's long-context pricing works this way)."""

    base: Decimal
    tiers: tuple[tuple[int, Decimal], ...]
    """(start, price) ascending by start; prices per token like `base`."""

    def at(self, total_input_tokens: int) -> Decimal:
        for start, price in reversed(self.tiers):
            if total_input_tokens > start:
                return price
        return self.base


Rate = Decimal | Tiered
"""USD per single token (not per million: scaling once at resolve time keeps the hot path to
one multiplication, and `scaleb(-6)` is exact)."""


def rate_at(rate: Rate | None, total_input_tokens: int) -> Decimal | None:
    if rate is None or isinstance(rate, Decimal):
        return rate
    return rate.at(total_input_tokens)


@dataclass(frozen=True, slots=True)
class PriceSheet:
    """One model's prices at one point in time, per token, ready for arithmetic."""

    input: Rate | None = None
    cache_read: Rate | None = None
    cache_write: Rate | None = None
    """5-minute (default TTL) cache writes."""
    cache_write_1h: Rate | None = None
    output: Rate | None = None
    reasoning: Rate | None = None
    """Only when a sheet prices reasoning apart from output (a few Perplexity models); otherwise
    reasoning tokens are output tokens and bill at the output rate."""
    input_audio: Rate | None = None
    cache_audio_read: Rate | None = None
    output_audio: Rate | None = None
    per_request: Decimal | None = None
    """USD per call, billed whatever the tokens (Perplexity's request fees, overrides)."""
    version: str = ""
    tiered: bool = False

    def per_mtok(self, total_input_tokens: int = 0) -> dict[str, Decimal | None]:
        """USD per million tokens per bucket (plus `per_request` in USD per call), as people
        read prices; tiered prices at the tier `total_input_tokens` selects (0 = base)."""
        out: dict[str, Decimal | None] = {}
        for name in (*BUCKETS, "reasoning", *AUDIO_BUCKETS):
            r = rate_at(getattr(self, name), total_input_tokens)
            out[name] = None if r is None else _plain(r.scaleb(6))
        out["per_request"] = self.per_request
        return out


def _plain(d: Decimal) -> Decimal:
    """Drop trailing zeros without turning 30 into 3E+1."""
    n = d.normalize()
    return n.quantize(Decimal(1)) if n.as_tuple().exponent > 0 else n  # type: ignore[operator]


def _part(rate: Decimal | None, tokens: int) -> Decimal | None:
    """`rate × tokens`, zero for no tokens, None (unknown) for tokens without a rate."""
    if not tokens:
        return _ZERO
    return None if rate is None else rate * tokens


def cost_of(sheet: PriceSheet, usage: Usage) -> Cost | None:
    """Exact cost of `usage` under `sheet`, or None if a bucket with tokens has no price."""
    total_in = usage.input_tokens
    if sheet.tiered:
        r_in = rate_at(sheet.input, total_in)
        r_cr = rate_at(sheet.cache_read, total_in)
        r_cw = rate_at(sheet.cache_write, total_in)
        r_1h = rate_at(sheet.cache_write_1h, total_in)
        r_out = rate_at(sheet.output, total_in)
        r_rs = rate_at(sheet.reasoning, total_in)
    else:
        # Non-tiered sheets only ever hold Decimals; the isinstance-free path is the fast one.
        r_in, r_cr, r_cw, r_1h, r_out, r_rs = cast(
            "tuple[Decimal | None, ...]",
            (
                sheet.input,
                sheet.cache_read,
                sheet.cache_write,
                sheet.cache_write_1h,
                sheet.output,
                sheet.reasoning,
            ),
        )

    cr = usage.cache_read_tokens
    cw = usage.cache_write_tokens
    cw1h = usage.cache_write_1h_tokens
    uncached = total_in - cr - cw - cw1h
    if uncached < 0:
        uncached = 0
    out_tokens = usage.output_tokens
    reasoning = usage.reasoning_tokens if r_rs is not None else 0
    plain_out = out_tokens - reasoning
    if plain_out < 0:
        plain_out = 0
    audio = usage.input_audio_tokens or usage.cache_audio_read_tokens or usage.output_audio_tokens
    if audio:
        return _with_audio(sheet, usage, total_in, uncached, cr, cw, cw1h, plain_out, reasoning)

    if uncached:
        if r_in is None:
            return None
        c_in = r_in * uncached
    else:
        c_in = _ZERO
    if cr:
        if r_cr is None:
            return None
        c_cr = r_cr * cr
    else:
        c_cr = _ZERO
    c_cw = _ZERO
    if cw:
        if r_cw is None:
            return None
        c_cw = r_cw * cw
    if cw1h:
        if r_1h is None:
            return None
        c_cw = c_cw + r_1h * cw1h
    if plain_out:
        if r_out is None:
            return None
        c_out = r_out * plain_out
    else:
        c_out = _ZERO
    if reasoning and r_rs is not None:
        c_out = c_out + r_rs * reasoning

    return Cost(
        input=c_in,
        cache_read=c_cr,
        cache_write=c_cw,
        output=c_out,
        other=sheet.per_request if sheet.per_request is not None else _ZERO,
        estimated=usage.estimated,
        price_version=sheet.version,
    )


def _with_audio(
    sheet: PriceSheet,
    usage: Usage,
    total_in: int,
    uncached: int,
    cr: int,
    cw: int,
    cw1h: int,
    plain_out: int,
    reasoning: int,
) -> Cost | None:
    """The same arithmetic with the audio parts split out of input, cache reads and output,
    each at its own rate (the slow path: only audio calls take it)."""

    def at(name: str) -> Decimal | None:
        return rate_at(getattr(sheet, name), total_in)

    a_in = min(usage.input_audio_tokens, uncached)
    a_cr = min(usage.cache_audio_read_tokens, cr)
    a_out = min(usage.output_audio_tokens, plain_out)
    parts = {
        "input": (_part(at("input"), uncached - a_in), _part(at("input_audio"), a_in)),
        "cache_read": (_part(at("cache_read"), cr - a_cr), _part(at("cache_audio_read"), a_cr)),
        "cache_write": (_part(at("cache_write"), cw), _part(at("cache_write_1h"), cw1h)),
        "output": (
            _part(at("output"), plain_out - a_out),
            _part(at("output_audio"), a_out),
            _part(at("reasoning"), reasoning),
        ),
    }
    sums: dict[str, Decimal] = {}
    for name, values in parts.items():
        if any(v is None for v in values):
            return None
        sums[name] = sum((v for v in values if v is not None), _ZERO)
    return Cost(
        **sums,
        other=sheet.per_request if sheet.per_request is not None else _ZERO,
        estimated=usage.estimated,
        price_version=sheet.version,
    )
