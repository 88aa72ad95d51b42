"""`spendgate recommend`: ranked optimizations for *this* ledger, each with its evidence,
its projected monthly saving and the config that turns it on.

Every figure comes from the ledger (no prompt text needed: repeats are measured on prompt
fingerprints; where the ledger holds the request, simplicity is scored by the shipped
router). Where a saving needs an assumption, the recommendation states it. Each `how` is a
YAML snippet for the real config models (`cache:`, `routing:`, `prefix:`, `trim:`); the
tests parse every one with `spendgate.config.parse_settings`.

Techniques: cache (exact repeats), routing (short/simple calls on frontier models),
prompt_cache (long stable prefixes at a high call rate), output_cap (p99 far below the
max), system_prompt (long system prompts, from accounting's `extra.system_tokens`), history
(conversations whose input grows call after call), finetune (features whose volume pays
for a fine-tuned smaller model's training; see `analytics.finetune`), batch (features
whose calls are not latency-bound — none streams, and they come in a nightly burst or
clients already wait many seconds — sent through the deferral lane at the batch price).
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from spendgate.analytics.finetune import DEFAULT_TUNED, FineTune, break_even, catalog_prices
from spendgate.analytics.simulate import (
    DAYS_PER_MONTH,
    Policy,
    TrafficRecord,
    _call_of,
    _fingerprint,
    _RealCode,
)
from spendgate.call import Call, Tags, Usage
from spendgate.pricing import PriceCatalog

__all__ = ["Recommendation", "recommend"]

FRONTIER_INPUT_PER_MTOK = Decimal("2")
"""Models at or above this input price count as frontier for the routing advice."""
CHEAP_MODEL = "gpt-4o-mini"
PROMPT_CACHE_MIN_TOKENS = 1024
PROMPT_CACHE_READ_DISCOUNT = Decimal("0.9")
"""Cache reads cost 10% of input on Anthropic and 50% on OpenAI; 90% is the upper bound."""
LONG_SYSTEM_TOKENS = 500
"""A system prompt this long (on average) is worth reading for cuts."""
SYSTEM_CUT = Decimal("0.30")
"""Share of a long system prompt assumed removable (repeats, few-shot beyond 3, verbose
field descriptions: what `spendgate analyze prompts --file` lints)."""
HISTORY_MIN_RUN = 4
"""Consecutive growing calls of one user before a conversation counts as growing."""
HISTORY_CUT = Decimal("0.5")
"""Share of the accumulated history a window (6 turns kept, older ones summarized) removes
on long conversations."""
FINETUNE_EXAMPLES = 5000
NEAR_DUP_SAMPLE = 2000
"""The semantic check costs a few ms per request (embedding + verifier): the first this many
requests of a feature measure its near-duplicate rate."""
FINETUNE_EPOCHS = 3
FINETUNE_MAX_PAYBACK_MONTHS = Decimal(3)


@dataclass
class Recommendation:
    technique: str
    feature: str
    monthly_saving_usd: Decimal
    evidence: dict[str, Any]
    how: str
    assumptions: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "technique": self.technique,
            "feature": self.feature,
            "monthly_saving_usd": format(self.monthly_saving_usd.quantize(Decimal("0.01")), "f"),
            "evidence": self.evidence,
            "how": self.how,
            "assumptions": self.assumptions,
        }


def _cost(catalog: PriceCatalog, model: str, i: int, o: int) -> Decimal:
    cost = catalog.cost(model, Usage(input_tokens=i, output_tokens=o))
    return cost.total if cost is not None else Decimal(0)


def _percentile(values: list[int], q: float) -> int:
    if not values:
        return 0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def recommend(
    records: list[TrafficRecord], catalog: PriceCatalog | None = None
) -> list[Recommendation]:
    catalog = catalog or PriceCatalog.default()
    if not records:
        return []
    stamps = [r.ts for r in records if r.ts]
    span_days = (
        max(Decimal(1), Decimal(str(max(stamps) - min(stamps))) / 86_400) if stamps else Decimal(1)
    )
    per_month = Decimal(DAYS_PER_MONTH) / span_days
    by_feature: dict[str, list[TrafficRecord]] = defaultdict(list)
    for r in records:
        by_feature[r.feature].append(r)
    out: list[Recommendation] = []
    near = _near_duplicate_cache()
    for feature, rows in by_feature.items():
        costs = [_cost(catalog, r.model, r.input_tokens, r.output_tokens) for r in rows]
        monthly = sum(costs, Decimal(0)) * per_month
        if monthly <= 0:
            continue
        calls_per_day = Decimal(len(rows)) / span_days
        out += _caching(feature, rows, costs, per_month, catalog, near)
        out += _routing(feature, rows, costs, per_month, catalog)
        out += _prompt_cache(feature, rows, per_month, calls_per_day, catalog)
        out += _output_cap(feature, rows, monthly)
        out += _system_prompt(feature, rows, per_month, catalog)
        out += _history(feature, rows, per_month, catalog)
        out += _finetune(feature, rows, per_month, catalog)
        out += _batch(feature, rows, per_month, catalog)
    out.sort(key=lambda r: r.monthly_saving_usd, reverse=True)
    return out


def _caching(
    feature: str,
    rows: list[TrafficRecord],
    costs: list[Decimal],
    per_month: Decimal,
    catalog: PriceCatalog,
    near: Callable[[PriceCatalog], Any],
) -> list[Recommendation]:
    """Exact repeats on prompt fingerprints; near-duplicates (where the ledger holds the
    request) by the semantic tier itself: the shipped embedder and verifier, in the
    request's partition, as `simulate` replays it."""
    seen: set[tuple[str, str]] = set()
    repeats = near_cost = Decimal(0)
    n_repeat = n_near = sampled = 0
    real = None
    for r, c in sorted(zip(rows, costs, strict=True), key=lambda rc: rc[0].ts):
        fp = _fingerprint(r)
        repeat = fp is not None and (r.tenant, fp) in seen
        if fp is not None:
            seen.add((r.tenant, fp))
        if repeat:
            repeats += c
            n_repeat += 1
        body = r.request_body()
        if body is None or sampled >= NEAR_DUP_SAMPLE:
            continue
        sampled += 1
        if real is None:
            real = near(catalog)
        outcome = real.cache(_call_of(r, body), r.ts)
        if outcome == "semantic-hit" and not repeat:
            near_cost += c
            n_near += 1
    if n_repeat + n_near == 0:
        return []
    evidence: dict[str, Any] = {
        "calls": len(rows),
        "exact_repeats": n_repeat,
        "exact_repeat_rate": round(n_repeat / len(rows), 4),
    }
    assumptions = [
        "repeats counted over the whole window (same tenant, same prompt fingerprint); a "
        "shorter ttl_s catches fewer"
    ]
    if real is not None:
        evidence["near_duplicates"] = n_near
        evidence["near_duplicate_rate"] = round(n_near / sampled, 4)
        evidence["near_duplicates_checked"] = sampled
        # The semantic check ran on the first `sampled` requests with a body; its rate is
        # taken to hold for the rest of them.
        with_body = sum(1 for r in rows if r.request_body() is not None)
        near_cost = near_cost * with_body / sampled
        assumptions.append(
            "near-duplicates: the semantic tier's own matcher at its shipped threshold, on "
            "the requests the ledger holds"
        )
    else:
        assumptions.append(
            "exact repeats only (the ledger holds fingerprints, not prompts); a semantic "
            "cache adds paraphrases on top"
        )
    return [
        Recommendation(
            technique="cache",
            feature=feature,
            monthly_saving_usd=(repeats + near_cost) * per_month,
            evidence=evidence,
            how=(
                "cache:\n  features:\n"
                f"    {_key(feature)}: {{enabled: true, semantic: true}}\n"
                "  # or `shadow: true` at the top level first, to measure hits before serving"
            ),
            assumptions=assumptions,
        )
    ]


def _near_duplicate_cache() -> Callable[[PriceCatalog], Any]:
    """One in-process cache for a whole `recommend` run (scoped per tenant and feature, so
    each feature's evidence is its own), built on first use."""
    made: list[Any] = []

    def get(catalog: PriceCatalog) -> Any:
        if not made:
            from spendgate.cache.config import CacheConfig, SemanticConfig

            config = CacheConfig(
                enabled=True,
                ttl_s=365 * 86_400,
                scope="tenant+feature",
                semantic=SemanticConfig(enabled=True),
            )
            made.append(_RealCode(Policy(route=False, trim=False, cache_config=config), catalog))
        return made[0]

    return get


def _key(name: str) -> str:
    """A YAML mapping key / list item for a tag value (quoted unless plain)."""
    return name if re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]*", name) else json.dumps(name)


_ROUTER: Any = None


def _simple(r: TrafficRecord) -> bool:
    """Short and simple: the shipped router at `quality_95` when the ledger holds the
    request, else ≤ 400 input tokens."""
    global _ROUTER
    body = r.request_body()
    if body is None:
        return r.input_tokens <= 400
    if _ROUTER is None:
        from spendgate.routing.routers import get_router

        _ROUTER = get_router("default")
    call = Call(
        endpoint="chat", api="openai", body=body, requested_model=r.model,
        tags=Tags(feature=r.feature, tenant=r.tenant),
    )  # fmt: skip
    return bool(_ROUTER.score(call) < _ROUTER.thresholds.get("quality_95", 0.5))


def _routing(
    feature: str,
    rows: list[TrafficRecord],
    costs: list[Decimal],
    per_month: Decimal,
    catalog: PriceCatalog,
) -> list[Recommendation]:
    frontier = [
        (r, c)
        for r, c in zip(rows, costs, strict=True)
        if (catalog.unit_prices(r.model).get("input") or Decimal(0)) >= FRONTIER_INPUT_PER_MTOK
        and _simple(r)
    ]
    if not frontier:
        return []
    saving = sum(
        (c - _cost(catalog, CHEAP_MODEL, r.input_tokens, r.output_tokens) for r, c in frontier),
        Decimal(0),
    )
    if saving <= 0:
        return []
    counts: dict[str, int] = defaultdict(int)
    for r, _ in frontier:
        counts[r.model] += 1
    strong = max(counts, key=lambda m: counts[m])
    scored = sum(1 for r, _ in frontier if r.request_body() is not None)
    return [
        Recommendation(
            technique="routing",
            feature=feature,
            monthly_saving_usd=saving * per_month,
            evidence={
                "simple_calls_on_frontier": len(frontier),
                "scored_by_router": scored,
                "calls": len(rows),
                "share": round(len(frontier) / len(rows), 4),
            },
            how=(
                "routing:\n  enabled: true\n"
                f"  strong: {_key(strong)}\n  weak: {CHEAP_MODEL}\n"
                f"  apply_to: [{_key(strong)}]\n"
                "  threshold: quality_95\n"
                "  mode: shadow            # measure first, then `active`\n"
                "  overrides:              # this feature only\n"
                f"    - {{feature: {_key(feature)}}}\n"
                "    - {enabled: false}"
            ),
            assumptions=[
                f"every simple frontier call (the shipped router's quality_95 threshold where "
                f"the ledger holds the request, else ≤ 400 input tokens) could go to "
                f"{CHEAP_MODEL} at the same output length; run it in shadow mode first"
            ],
        )
    ]


def _prompt_cache(
    feature: str,
    rows: list[TrafficRecord],
    per_month: Decimal,
    calls_per_day: Decimal,
    catalog: PriceCatalog,
) -> list[Recommendation]:
    long_rows = [r for r in rows if r.input_tokens >= PROMPT_CACHE_MIN_TOKENS]
    if not long_rows or calls_per_day < 50:
        return []
    already = sum(r.cache_read_tokens for r in long_rows)
    total_in = sum(r.input_tokens for r in long_rows)
    if total_in == 0 or already / total_in > 0.5:
        return []
    input_cost = sum((_cost(catalog, r.model, r.input_tokens, 0) for r in long_rows), Decimal(0))
    stable_share = Decimal("0.5")
    saving = input_cost * stable_share * PROMPT_CACHE_READ_DISCOUNT * per_month
    return [
        Recommendation(
            technique="prompt_cache",
            feature=feature,
            monthly_saving_usd=saving,
            evidence={
                "calls_with_1024+_input_tokens": len(long_rows),
                "calls_per_day": float(round(calls_per_day, 1)),
                "cache_read_share": round(already / total_in, 4),
            },
            how=f"prefix:\n  features:\n    {_key(feature)}: {{enabled: true, ttl: 5m}}",
            assumptions=[
                "half of the input is a stable prefix (system prompt, tools, "
                "documents); reads at 10% of the input price"
            ],
        )
    ]


def _output_cap(feature: str, rows: list[TrafficRecord], monthly: Decimal) -> list[Recommendation]:
    outputs = [r.output_tokens for r in rows]
    p50, p99, top = _percentile(outputs, 0.5), _percentile(outputs, 0.99), max(outputs)
    if p99 == 0 or top <= 2 * p99:
        return []
    return [
        Recommendation(
            technique="output_cap",
            feature=feature,
            monthly_saving_usd=Decimal(0),
            evidence={
                "output_p50": p50,
                "output_p99": p99,
                "output_max": top,
                "monthly_cost_usd": format(monthly.quantize(Decimal("0.01")), "f"),
            },
            how=(
                f"trim:\n  output:\n    features: [{_key(feature)}]\n"
                f"    feature_caps: {{{_key(feature)}: {int(p99 * 1.2)}}}\n"
                "    shadow: true          # measure the tail it would cut, then false"
            ),
            assumptions=[
                "a cap at p99 × 1.2 bounds runaway answers; its saving is the "
                "tail it cuts, not projected here"
            ],
        )
    ]


BATCH_MIN_CALLS = 20
BURST_HOURS = 4
BURST_SHARE = 0.6
"""A feature whose calls fall this much into `BURST_HOURS` consecutive hours of the UTC day
runs as a job (a nightly digest, an import), not as a user waiting."""
PATIENT_LATENCY_MS = 10_000.0
"""Clients that already wait this long (median) have long timeouts: not interactive."""


def _burst_share(rows: list[TrafficRecord]) -> float:
    hours = [0] * 24
    for r in rows:
        hours[int(r.ts // 3600) % 24] += 1
    best = max(sum(hours[(h + k) % 24] for k in range(BURST_HOURS)) for h in range(24))
    return best / len(rows)


def _batch(
    feature: str, rows: list[TrafficRecord], per_month: Decimal, catalog: PriceCatalog
) -> list[Recommendation]:
    if len(rows) < BATCH_MIN_CALLS or any(r.stream for r in rows) or all(r.batch for r in rows):
        return []
    live = [r for r in rows if not r.batch]
    share = _burst_share(live)
    waits = sorted(r.latency_ms for r in live if r.latency_ms is not None)
    p50_wait = waits[len(waits) // 2] if waits else None
    bursty = share >= BURST_SHARE
    patient = p50_wait is not None and p50_wait >= PATIENT_LATENCY_MS
    if not (bursty or patient):
        return []
    saved = Decimal(0)
    for r in live:
        usage = Usage(input_tokens=r.input_tokens, output_tokens=r.output_tokens,
                      cache_read_tokens=r.cache_read_tokens)  # fmt: skip
        standard = catalog.cost(r.model, usage)
        batch = catalog.cost(r.model, usage, service_tier="batch")
        if standard is not None and batch is not None:
            saved += standard.total - batch.total
    if saved <= 0:
        return []
    evidence: dict[str, Any] = {
        "calls": len(live),
        "streamed": 0,
        f"share_in_busiest_{BURST_HOURS}h_of_day": round(share, 3),
    }
    if p50_wait is not None:
        evidence["latency_p50_ms"] = round(p50_wait, 1)
    why = "a nightly burst" if bursty else "clients that already wait"
    return [
        Recommendation(
            technique="batch",
            feature=feature,
            monthly_saving_usd=saved * per_month,
            evidence=evidence,
            how=f"features:\n  {_key(feature)}:\n    batchable: true",
            assumptions=[
                f"not latency-bound ({why}, no streaming): the answers may take up to 24 h; "
                "callers must accept 202 and fetch GET /v1/deferred/{id} "
                "(or send x-spendgate-defer: 24h per call instead)",
                "priced at each model's batch rate (genai-prices' batch variants)",
            ],
        )
    ]


def _input_price(catalog: PriceCatalog, model: str) -> Decimal:
    """USD per input token (uncached) of a model, 0 when unknown."""
    unit = catalog.unit_prices(model) or {}
    return (unit.get("input") or Decimal(0)) / Decimal(1_000_000)


def _system_prompt(
    feature: str, rows: list[TrafficRecord], per_month: Decimal, catalog: PriceCatalog
) -> list[Recommendation]:
    with_system = [r for r in rows if r.system_tokens > 0]
    if not with_system:
        return []
    tokens = [min(r.system_tokens, r.input_tokens) for r in with_system]
    avg = sum(tokens) / len(tokens)
    if avg < LONG_SYSTEM_TOKENS:
        return []
    total_in = sum(r.input_tokens for r in with_system)
    spend = sum(
        (t * _input_price(catalog, r.model) for r, t in zip(with_system, tokens, strict=True)),
        Decimal(0),
    )
    saving = spend * SYSTEM_CUT * per_month
    return [
        Recommendation(
            technique="system_prompt",
            feature=feature,
            monthly_saving_usd=saving,
            evidence={
                "calls_with_system_prompt": len(with_system),
                "avg_system_tokens": round(avg),
                "system_share_of_input_tokens": round(sum(tokens) / total_in, 4),
                "system_prompt_monthly_usd": format((spend * per_month).quantize(_CENT), "f"),
            },
            how=(
                "trim:\n  record_system_prompt: true\n  compress:\n"
                f"    features: [{_key(feature)}]\n"
                "    system: true          # compresses <compress>…</compress> spans in it\n"
                f"# then: spendgate analyze prompts --feature {_key(feature)} --file prompt.txt"
            ),
            assumptions=[
                f"{int(SYSTEM_CUT * 100)}% of the system prompt can go (repeats, few-shot "
                "examples beyond 3, verbose field descriptions); `spendgate analyze prompts "
                "--file` finds the actual cuts; prompt caching (prefix:) is the other lever"
            ],
        )
    ]


def _follows(prev: TrafficRecord, nxt: TrafficRecord) -> bool:
    """`nxt` looks like the next turn of `prev`'s conversation: its input carries `prev`'s
    input and answer again (with some slack for tokenization and trimmed whitespace)."""
    return nxt.input_tokens >= prev.input_tokens + max(1, int(prev.output_tokens * 0.8))


def _history(
    feature: str, rows: list[TrafficRecord], per_month: Decimal, catalog: PriceCatalog
) -> list[Recommendation]:
    """Runs of a user's consecutive calls whose input grows call after call: a conversation
    resending its whole history."""
    by_user: dict[tuple[str, str], list[TrafficRecord]] = defaultdict(list)
    for r in sorted(rows, key=lambda r: r.ts):
        by_user[(r.tenant, r.user or "(none)")].append(r)
    growing_calls = 0
    conversations = 0
    history_tokens = Decimal(0)
    spend = Decimal(0)
    longest = 0
    for calls in by_user.values():
        run: list[TrafficRecord] = []
        ended: list[TrafficRecord | None] = [*calls, None]
        for item in ended:
            if item is not None and (not run or _follows(run[-1], item)):
                run.append(item)
                continue
            if len(run) >= HISTORY_MIN_RUN:
                conversations += 1
                longest = max(longest, len(run))
                base = run[0].input_tokens
                for later in run[HISTORY_MIN_RUN - 1 :]:
                    growing_calls += 1
                    extra = later.input_tokens - base
                    history_tokens += extra
                    spend += extra * _input_price(catalog, later.model)
            run = [item] if item is not None else []
    if conversations == 0:
        return []
    saving = spend * HISTORY_CUT * per_month
    return [
        Recommendation(
            technique="history",
            feature=feature,
            monthly_saving_usd=saving,
            evidence={
                "growing_conversations": conversations,
                "calls_deep_in_them": growing_calls,
                "longest_run": longest,
                "avg_history_tokens": round(history_tokens / growing_calls),
                "share_of_calls": round(growing_calls / len(rows), 4),
            },
            how=(
                "trim:\n  history:\n"
                f"    features: [{_key(feature)}]\n"
                "    keep_last_turns: 6\n    summarize_every: 4\n"
                "    shadow: true          # record what it would cut first"
            ),
            assumptions=[
                f"a run of ≥ {HISTORY_MIN_RUN} consecutive calls by one user (tenant, user), "
                "each input carrying the previous input and answer again, is one "
                "conversation; the history is the growth over its "
                f"first call; a 6-turn window with summaries removes "
                f"{int(HISTORY_CUT * 100)}% of it (the summary call is billed separately)"
            ],
        )
    ]


def _finetune(
    feature: str, rows: list[TrafficRecord], per_month: Decimal, catalog: PriceCatalog
) -> list[Recommendation]:
    counts: dict[str, int] = defaultdict(int)
    for r in rows:
        counts[r.model] += 1
    model = max(counts, key=lambda m: counts[m])
    current = catalog_prices(catalog, model)
    tuned = DEFAULT_TUNED["prices"]
    if current is None or current.input * 1_000_000 < FRONTIER_INPUT_PER_MTOK:
        return []
    # The simple calls are routing's (no training needed); a fine-tune is for the rest.
    hard = [r for r in rows if r.model == model and not _simple(r)]
    if not hard:
        return []
    n = Decimal(len(hard))
    avg_in = sum((Decimal(r.input_tokens) for r in hard), Decimal(0)) / n
    avg_out = sum((Decimal(r.output_tokens) for r in hard), Decimal(0)) / n
    training_tokens = (avg_in + avg_out) * FINETUNE_EXAMPLES * FINETUNE_EPOCHS
    training = training_tokens * DEFAULT_TUNED["training_per_1m_tokens"] / 1_000_000
    case = break_even(
        calls_per_month=n * per_month,
        input_tokens=avg_in,
        output_tokens=avg_out,
        current=current,
        tuned=FineTune(prices=tuned, training_cost=training, model=DEFAULT_TUNED["model"]),
        feature=feature,
        current_model=model,
    )
    pay = case.payback_months
    if not case.pays or pay is None or pay > FINETUNE_MAX_PAYBACK_MONTHS:
        return []
    d = case.as_dict()
    return [
        Recommendation(
            technique="finetune",
            feature=feature,
            monthly_saving_usd=case.monthly_net,
            evidence={
                "calls_routing_keeps_strong": len(hard),
                "calls": len(rows),
            }
            | {
                k: d[k]
                for k in (
                    "current_model",
                    "calls_per_month",
                    "cheaper_share",
                    "training_cost_usd",
                    "break_even_calls_per_month",
                    "payback_months",
                )
            },
            how=(
                "# 1. fine-tune on this feature's logged answers; 2. add a deployment that\n"
                "#    serves the tuned model; 3. send the feature to it, in shadow first:\n"
                f"routing:\n  enabled: true\n  strong: {_key(model)}\n"
                f"  weak: {DEFAULT_TUNED['model']}\n  apply_to: [{_key(model)}]\n"
                "  mode: shadow\n  rules:\n"
                f"    - when: {{feature: {_key(feature)}}}\n      route: weak\n"
                f"# check: spendgate analyze finetune --feature {_key(feature)} "
                f"--model {DEFAULT_TUNED['model']} --price-in 0.30 --price-out 1.20 "
                f"--training-cost {d['training_cost_usd']}"
            ),
            assumptions=[
                "priced on the calls the router would keep on the strong model (the simple "
                "ones are routing's, without training); "
                f"fine-tuned gpt-4o-mini at $0.30/$1.20 per 1M tokens; training on "
                f"{FINETUNE_EXAMPLES} examples × {FINETUNE_EPOCHS} epochs at $3 per 1M "
                "training tokens, amortized over 12 months; the tuned model must match "
                "quality on this feature (measure it before switching)"
            ],
        )
    ]


_CENT = Decimal("0.01")
