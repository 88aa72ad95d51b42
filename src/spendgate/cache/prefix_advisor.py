"""Prompt-cache hit ratio and advisor, per feature, from the ledger.

Why: prompt caching pays only where a feature resends the same long prefix within the
cache's lifetime. The ledger already holds, per call, input and cache-read/-write tokens
(so the hit ratio is a ratio of sums), and — when the prefix stage runs, in shadow mode or
for real — a fingerprint and token estimate of the call's stable prefix (tools + system).
From those the advisor tells, per feature, how much of the input sits in a prefix seen
again within the TTL, and what caching it would save at the model's published prices:
each repeat reads the prefix (input − cache-read price), each first sight writes it
(cache-write − input price; 0 for OpenAI, whose writes are free).

`spendgate prompt-cache [--since 7d] [--json]` prints it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import click

from spendgate.cli_support import config_option, json_option, ledger_option, window_options
from spendgate.ledger import LedgerStore
from spendgate.ledger.spend import NONE_LABEL as NONE
from spendgate.pricing import PriceCatalog

__all__ = [
    "PromptCacheRow",
    "commands",
    "prompt_cache_hit_ratio",
    "prompt_cache_report",
]

_MTOK = Decimal(1_000_000)


@dataclass(slots=True)
class PromptCacheRow:
    feature: str
    calls: int = 0
    input_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    """Both TTLs."""
    observed_calls: int = 0
    """Calls the prefix stage fingerprinted (the advisor's evidence)."""
    stable_prefix_tokens: int = 0
    """Input tokens in a prefix this feature sent before within the TTL."""
    prefix_variants: int = 0
    saved_usd: Decimal = Decimal(0)
    """Prompt-cache savings already credited in the ledger."""
    projected_usd: Decimal = Decimal(0)
    """What caching every stable prefix would save (reads minus write premiums)."""
    unpriced_calls: int = 0

    @property
    def hit_ratio(self) -> float:
        return self.cache_read_tokens / self.input_tokens if self.input_tokens else 0.0

    @property
    def stable_share(self) -> float:
        return self.stable_prefix_tokens / self.input_tokens if self.input_tokens else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "feature": self.feature,
            "calls": self.calls,
            "input_tokens": self.input_tokens,
            "cache_read_tokens": self.cache_read_tokens,
            "cache_write_tokens": self.cache_write_tokens,
            "hit_ratio": round(self.hit_ratio, 6),
            "observed_calls": self.observed_calls,
            "stable_prefix_tokens": self.stable_prefix_tokens,
            "stable_share": round(self.stable_share, 6),
            "prefix_variants": self.prefix_variants,
            "saved_usd": format(self.saved_usd, "f"),
            "projected_usd": format(self.projected_usd, "f"),
            "unpriced_calls": self.unpriced_calls,
        }


def prompt_cache_hit_ratio(
    store: LedgerStore, *, since: datetime | None = None, until: datetime | None = None
) -> dict[str, float]:
    """Feature → cache-read tokens / input tokens over the period (a ratio of sums)."""
    out: dict[str, float] = {}
    for row in store.spend(["feature"], since=since, until=until):
        feature = row.keys.get("feature") or NONE
        out[feature] = row.cache_read_tokens / row.input_tokens if row.input_tokens else 0.0
    return out


_Unit = tuple[Decimal, Decimal, Decimal]


def _prices(catalog: PriceCatalog, model: str, cache: dict[str, _Unit | None]) -> _Unit | None:
    """(input, cache read, cache write) USD per MTok; a missing cache price means the
    provider does not discount (read = input) or does not charge extra (write = input)."""
    if model not in cache:
        unit = catalog.unit_prices(model)
        inp = unit.get("input")
        if inp is None:
            cache[model] = None
        else:
            read = unit.get("cache_read")
            write = unit.get("cache_write")
            cache[model] = (
                inp,
                inp if read is None else read,
                inp if write is None else max(write, inp),
            )
    return cache[model]


def prompt_cache_report(
    store: LedgerStore,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    ttl_s: float = 300.0,
    catalog: PriceCatalog | None = None,
) -> list[PromptCacheRow]:
    """Per feature: hit ratio, stable-prefix share and projected saving, biggest first."""
    catalog = catalog or PriceCatalog.default()
    rows: dict[str, PromptCacheRow] = {}
    observed: list[tuple[float, str, str, str, int]] = []
    for event in store.events(since=since, until=until):
        feature = event.feature or NONE
        row = rows.get(feature)
        if row is None:
            row = rows[feature] = PromptCacheRow(feature)
        row.calls += 1
        row.input_tokens += event.input_tokens
        row.cache_read_tokens += event.cache_read_tokens
        row.cache_write_tokens += event.cache_write_tokens + event.cache_write_1h_tokens
        saved = (event.savings or {}).get("prompt_cache")
        if saved:
            row.saved_usd += Decimal(saved) / 1_000_000_000
        decisions = (event.extra or {}).get("decisions") or {}
        prefix = decisions.get("prefix") if isinstance(decisions, dict) else None
        if event.status == 200 and isinstance(prefix, dict) and prefix.get("prefix_fp"):
            model = event.served_model or event.requested_model
            tokens = min(int(prefix.get("prefix_tokens") or 0), event.input_tokens)
            observed.append((event.ts, feature, model, str(prefix["prefix_fp"]), tokens))
    observed.sort()
    last_seen: dict[tuple[str, str, str], float] = {}
    variants: dict[str, set[str]] = {}
    prices: dict[str, _Unit | None] = {}
    for ts, feature, model, fp, tokens in observed:
        row = rows[feature]
        row.observed_calls += 1
        variants.setdefault(feature, set()).add(fp)
        key = (feature, model, fp)
        repeat = key in last_seen and ts - last_seen[key] <= ttl_s
        last_seen[key] = ts
        if repeat:
            row.stable_prefix_tokens += tokens
        unit = _prices(catalog, model, prices)
        if unit is None:
            row.unpriced_calls += 1
            continue
        inp, read, write = unit
        if repeat:
            row.projected_usd += tokens * (inp - read) / _MTOK
        else:
            row.projected_usd -= tokens * (write - inp) / _MTOK
    for feature, fps in variants.items():
        rows[feature].prefix_variants = len(fps)
    return sorted(rows.values(), key=lambda r: (-r.projected_usd, r.feature))


def _render(rows: list[PromptCacheRow]) -> str:
    head = (
        f"{'feature':<24} {'calls':>7} {'hit ratio':>9} {'stable':>7} {'variants':>8} "
        f"{'saved $':>12} {'projected $':>12}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r.feature[:24]:<24} {r.calls:>7} {r.hit_ratio:>9.1%} {r.stable_share:>7.1%} "
            f"{r.prefix_variants:>8} {r.saved_usd:>12.6f} {r.projected_usd:>12.6f}"
        )
    lines.append(
        "stable = share of input tokens in a tools+system prefix resent within the TTL "
        "(needs the prefix stage on, or in shadow mode); projected = saving if those "
        "prefixes were cached, at list prices."
    )
    return "\n".join(lines)


@click.command("prompt-cache")
@config_option(help="YAML settings.")
@ledger_option()
@window_options
@click.option("--ttl", "ttl_s", type=float, default=300.0, show_default=True,
              help="Cache lifetime to assume, seconds (300 = 5 min, 3600 = 1 h).")  # fmt: skip
@json_option()
def prompt_cache_command(
    config_path: str | None,
    ledger_url: str | None,
    since: str | None,
    until: str | None,
    ttl_s: float,
    as_json: bool,
) -> None:
    """Prompt-cache hit ratio per feature, and what caching stable prefixes would save."""
    from spendgate.config import ConfigError, Settings, load_settings
    from spendgate.ledger import open_ledger, parse_when

    try:
        settings = load_settings(config_path) if config_path else Settings()
        store = open_ledger(ledger_url or settings.storage.ledger, create=False, read_only=True)
        rows = prompt_cache_report(
            store,
            since=parse_when(since) if since else None,
            until=parse_when(until, end=True) if until else None,
            ttl_s=ttl_s,
        )
        store.close()
    except (ConfigError, ValueError, OSError) as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        click.echo(json.dumps({"ttl_s": ttl_s, "features": [r.as_dict() for r in rows]}))
    else:
        click.echo(_render(rows))


commands = [prompt_cache_command]
