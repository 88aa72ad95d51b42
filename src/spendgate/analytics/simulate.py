"""What-if: projected monthly cost with and without each optimization, before switching any on.

Two ways in:

- `project_rates(...)`: the arithmetic on stated rates (share of calls cacheable, share simple
  enough for a cheaper model, how much longer prompts are than needed). This is the seed's
  worked example and the fallback when traffic lacks what a technique needs.
- `simulate_traffic(records, policy)`: replays logged traffic record by record. A record that
  carries its request (a JSONL of requests, or a ledger with prompt storage on) goes through
  the gateway's own code, in-process and without upstream calls:
  - cache: `spendgate.cache` — the stage's per-feature policy, `request_skip_reason`, the
    exact key (`exact_key`) and the semantic tier (`query_text`, `partition_key`, the
    `SemanticIndex` in memory with the shipped verifier); TTLs run on the records' clocks;
  - trim: `spendgate.trim` — `compress_as_configured` (marked spans, long tool/user
    messages) and the history window's `plan` (turns that would be summarized; the summary
    is assumed as long as `summary_max_tokens`, and its own call is priced once per
    conversation segment);
  - route: `spendgate.routing` — `RouteStage.decide` (rules, sticky tiers, overrides and the
    learned router with its threshold).
  Output lengths are the log's (no upstream is called). A record with only a fingerprint
  falls back to heuristics: exact repeats per tenant, a length/code rule for routing, the
  stated prompt excess for trimming. The steps say how many records took each path.

Combined savings are not additive: the simulator applies the techniques in the gateway's own
order (cache → trim → route) to each call, so a cached call is neither trimmed nor routed.
Every projection carries the steps it took, so the arithmetic can be read and checked.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from decimal import Decimal
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, Literal, cast

from spendgate.call import Call, Tags, Usage
from spendgate.pricing import PriceCatalog

if TYPE_CHECKING:
    from spendgate.cache.config import CacheConfig
    from spendgate.cache.stage import CacheStage
    from spendgate.routing.config import RoutingConfig
    from spendgate.routing.stage import RouteStage
    from spendgate.trim.config import TrimConfig

__all__ = [
    "DAYS_PER_MONTH",
    "Policy",
    "Projection",
    "TrafficRecord",
    "project_rates",
    "simulate_traffic",
]

DAYS_PER_MONTH = 30
_Q = Decimal("0.01")


@dataclass(frozen=True)
class Policy:
    """Which optimizations to project, and the assumptions where traffic cannot tell.

    `cache_config`, `routing_config` and `trim_config` are the gateway's own config sections
    (the same YAML as `spendgate.yaml`); left None, the simulator uses the defaults below:
    exact + semantic cache with the shipped thresholds, routing `strong_model` → `cheap_model`
    with the shipped router at `route_threshold`, compression and history windows on every
    feature at their default settings.
    """

    cache: bool = True
    route: bool = True
    trim: bool = True
    cheap_model: str = "gpt-4o-mini"
    """Where simple calls go when routed (the routing `weak` tier)."""
    strong_model: str = "gpt-4o"
    """The routing `strong` tier; only calls asking for it are routed (as in the gateway)."""
    route_threshold: float | str = "quality_95"
    semantic: bool = True
    """Use the semantic tier on records that carry their prompt."""
    engine: Literal["auto", "heuristic"] = "auto"
    """`auto`: the real code for records with a prompt, heuristics for the rest;
    `heuristic`: heuristics for every record."""
    simple_max_input_tokens: int = 400
    """Heuristic routing rule (records without a prompt): short prompts without code."""
    prompt_excess: Decimal = Decimal("0.20")
    """Heuristic trimming (records without a prompt): prompts are this much longer than
    needed (0.20 = 20% longer); trimming removes excess/(1+excess) of the input tokens."""
    semantic_extra_hit_rate: Decimal = Decimal(0)
    """Heuristic: hits a semantic cache adds on top of exact fingerprint repeats for records
    without a prompt (measure it with `spendgate eval cache`; 0 unless stated)."""
    cache_config: CacheConfig | None = None
    routing_config: RoutingConfig | None = None
    trim_config: TrimConfig | None = None

    @property
    def trim_fraction(self) -> Decimal:
        return self.prompt_excess / (1 + self.prompt_excess)


@dataclass
class Projection:
    """Monthly cost per scenario (USD, exact decimals), with the steps that produced it."""

    calls_per_day: Decimal
    baseline: Decimal
    alone: dict[str, Decimal] = field(default_factory=dict)
    """Monthly cost with only that technique on."""
    combined: Decimal = Decimal(0)
    steps: list[str] = field(default_factory=list)
    by_feature: dict[str, dict[str, Decimal]] = field(default_factory=dict)
    touched: dict[str, Decimal] = field(default_factory=dict)
    """Share of calls each technique acted on (alone)."""
    assumptions: dict[str, str] = field(default_factory=dict)
    combined_touched: dict[str, Decimal] = field(default_factory=dict)
    """Share of all calls each technique acted on with everything on, in gateway order
    (what a gateway's ledger would show: `cache` hits, `route` decisions to another model)."""
    paths: dict[str, dict[str, int]] = field(default_factory=dict)
    """Technique → {"real": n, "heuristic": m}: how many records each path decided."""
    cache_outcomes: dict[str, int] = field(default_factory=dict)
    """Counts of `hit`, `semantic-hit` (real path) and `fingerprint-repeat` (heuristic)."""

    @property
    def saved_per_month(self) -> Decimal:
        return self.baseline - self.combined

    @property
    def saved_per_year(self) -> Decimal:
        return self.saved_per_month * 12

    @property
    def combined_ratio(self) -> Decimal:
        return self.combined / self.baseline if self.baseline else Decimal(1)

    def scaled(self, calls_per_day: Decimal) -> Projection:
        """The same mix at another volume (e.g. 1 M calls/day)."""
        k = calls_per_day / self.calls_per_day if self.calls_per_day else Decimal(0)
        return Projection(
            calls_per_day=calls_per_day,
            baseline=self.baseline * k,
            alone={t: v * k for t, v in self.alone.items()},
            combined=self.combined * k,
            steps=[*self.steps, f"scaled ×{_fmt(k)} to {_fmt(calls_per_day)} calls/day"],
            by_feature={
                f: {s: v * k for s, v in row.items()} for f, row in self.by_feature.items()
            },
            touched=dict(self.touched),
            assumptions={
                **self.assumptions,
                "volume": f"scaled to {_fmt(calls_per_day)} calls/day with the same mix "
                "(repeat rates measured on the sample; a larger population of users usually "
                "repeats more, so the cache figure is conservative)",
            },
            combined_touched=dict(self.combined_touched),
            paths={t: dict(v) for t, v in self.paths.items()},
            cache_outcomes=dict(self.cache_outcomes),
        )

    def as_dict(self) -> dict[str, Any]:
        money = lambda d: format(d.quantize(_Q), "f")  # noqa: E731
        share = lambda d: format(d.quantize(Decimal("0.0001")), "f")  # noqa: E731
        return {
            "calls_per_day": format(self.calls_per_day, "f"),
            "baseline_monthly_usd": money(self.baseline),
            "alone_monthly_usd": {t: money(v) for t, v in self.alone.items()},
            "combined_monthly_usd": money(self.combined),
            "saved_monthly_usd": money(self.saved_per_month),
            "saved_yearly_usd": money(self.saved_per_year),
            "touched_share": {t: share(v) for t, v in self.touched.items()},
            "combined_touched_share": {t: share(v) for t, v in self.combined_touched.items()},
            "paths": self.paths,
            "cache_outcomes": self.cache_outcomes,
            "by_feature": {
                f: {s: money(v) for s, v in row.items()} for f, row in self.by_feature.items()
            },
            "assumptions": self.assumptions,
            "steps": self.steps,
        }


def _fmt(d: Decimal) -> str:
    if abs(d) >= 1:
        return format(d.quantize(_Q), "f")
    return format(d.quantize(Decimal("0.0001")).normalize(), "f")


def project_rates(
    *,
    calls_per_day: Decimal,
    cost_per_call: Decimal,
    cacheable: Decimal,
    simple: Decimal,
    cheap_cost_ratio: Decimal,
    prompt_excess: Decimal,
    input_cost_share: Decimal,
) -> Projection:
    """Project from rates alone.

    `cheap_cost_ratio` is what a routed call costs relative to the frontier call (1/20 for
    a model 20× cheaper); `input_cost_share` is the part of a call's cost that is input
    tokens, which is all that trimming prompts can reduce.
    """
    month = calls_per_day * DAYS_PER_MONTH
    base = month * cost_per_call
    trim_factor = 1 - input_cost_share * prompt_excess / (1 + prompt_excess)
    route_factor = 1 - simple * (1 - cheap_cost_ratio)
    p = Projection(calls_per_day=calls_per_day, baseline=base)
    p.steps.append(
        f"baseline: {_fmt(calls_per_day)} calls/day × {DAYS_PER_MONTH} days × "
        f"${_fmt(cost_per_call)} = ${_fmt(base)}/month"
    )
    p.alone["cache"] = base * (1 - cacheable)
    p.alone["route"] = base * route_factor
    p.alone["trim"] = base * trim_factor
    after_cache = base * (1 - cacheable)
    p.steps.append(
        f"cache: {_fmt(cacheable * 100)}% of calls answered from cache at $0 → "
        f"${_fmt(base)} × {_fmt(1 - cacheable)} = ${_fmt(after_cache)}"
    )
    after_trim = after_cache * trim_factor
    p.steps.append(
        f"trim: prompts {_fmt(prompt_excess * 100)}% longer than needed → input cut by "
        f"{_fmt(prompt_excess)}/{_fmt(1 + prompt_excess)}; input is "
        f"{_fmt(input_cost_share * 100)}% of cost → × {_fmt(trim_factor)} = ${_fmt(after_trim)}"
    )
    combined = after_trim * route_factor
    p.steps.append(
        f"route: {_fmt(simple * 100)}% of the remaining calls to a model costing "
        f"{_fmt(cheap_cost_ratio)}× as much → × (1 − {_fmt(simple)} × "
        f"(1 − {_fmt(cheap_cost_ratio)})) = × {_fmt(route_factor)} = ${_fmt(combined)}"
    )
    p.combined = combined
    p.steps.append(f"saved ${_fmt(base - combined)}/month = ${_fmt((base - combined) * 12)}/year")
    p.touched = {"cache": cacheable, "route": simple * (1 - cacheable), "trim": 1 - cacheable}
    p.assumptions = {
        "cacheable_share": str(cacheable),
        "simple_share": str(simple),
        "cheap_cost_ratio": str(cheap_cost_ratio),
        "prompt_excess": str(prompt_excess),
        "input_cost_share": str(input_cost_share),
        "days_per_month": str(DAYS_PER_MONTH),
    }
    return p


@dataclass(frozen=True)
class TrafficRecord:
    """One logged call: from the ledger (tokens + fingerprint, and the request when the
    operator stores prompts) or a JSONL of requests."""

    feature: str
    tenant: str
    model: str
    input_tokens: int
    output_tokens: int
    ts: float = 0.0
    fingerprint: str | None = None
    prompt: str | None = None
    """Last user message, when the log has it."""
    cache_read_tokens: int = 0
    body: dict[str, Any] | None = field(default=None, hash=False, compare=False)
    """The request body in `api`'s wire format, when the log has it (JSONL of requests, or a
    ledger with prompt storage on). With a body (or a prompt) the record replays through the
    real cache, router and trimming code."""
    api: str = "openai"
    user: str | None = None
    request_id: str | None = None
    system_tokens: int = 0
    """Tokens of the system prompt, as accounting recorded them (`extra.system_tokens`)."""
    stream: bool = False
    latency_ms: float | None = None
    batch: bool = False
    """Billed at the batch rate already (a Batch API line or a deferred call)."""

    def request_body(self) -> dict[str, Any] | None:
        if self.body is not None:
            return self.body
        if self.prompt is not None:
            return {"model": self.model, "messages": [{"role": "user", "content": self.prompt}]}
        return None


def _fingerprint(r: TrafficRecord) -> str | None:
    if r.fingerprint:
        return r.fingerprint
    if r.prompt is not None:
        return hashlib.blake2b(r.prompt.strip().lower().encode(), digest_size=8).hexdigest()
    return None


def _is_simple(r: TrafficRecord, policy: Policy) -> bool:
    if r.input_tokens > policy.simple_max_input_tokens:
        return False
    text = r.prompt or ""
    return "```" not in text and "def " not in text and "SELECT " not in text.upper()


class _ServesAnything:
    """The model table a `RouteStage` consults for rule targets: in a replay every model
    named by the routing config counts as served."""

    def serving(self, model: str) -> list[str]:
        return [model]


@dataclass
class _Trimmed:
    body: dict[str, Any]
    saved_tokens: int
    segment: str | None = None
    """The history segment whose summary this call needs (priced once per segment)."""
    segment_cost: Decimal = Decimal(0)


class _RealCode:
    """The gateway's own cache, trim and route code, run in-process over one replay."""

    def __init__(self, policy: Policy, catalog: PriceCatalog) -> None:
        from spendgate.cache.config import CacheConfig, SemanticConfig
        from spendgate.routing.config import RoutingConfig
        from spendgate.trim.config import CompressConfig, HistoryConfig, TrimConfig

        self.policy = policy
        self.catalog = catalog
        self.cache_config = policy.cache_config or CacheConfig(
            enabled=True, semantic=SemanticConfig(enabled=policy.semantic)
        )
        self.routing_config = policy.routing_config or RoutingConfig(
            enabled=True,
            strong=policy.strong_model,
            weak=policy.cheap_model,
            threshold=policy.route_threshold,
        )
        self.trim_config = policy.trim_config or TrimConfig(
            compress=CompressConfig(features=["*"]), history=HistoryConfig(features=["*"])
        )
        self._cache_stage: CacheStage | None = None
        self.exact: dict[str, float] = {}
        """Exact key → expiry (record time): the answers the cache holds."""
        self.now = 0.0
        self.route_alone = self._route_stage() if policy.route else None
        self.route_combined = self._route_stage() if policy.route else None
        self.threshold = (
            self.route_alone.threshold(self.routing_config.threshold)
            if self.route_alone is not None
            else None
        )

    # ------------------------------------------------------------------ cache
    @property
    def cache_stage(self) -> CacheStage:
        if self._cache_stage is None:
            from spendgate.cache.stage import CacheStage

            try:
                stage = CacheStage(self.cache_config)
            except FileNotFoundError:
                # A build without the MiniLM verifier file: the static verifier decides.
                sem = self.cache_config.semantic.model_copy(update={"embedder": "static"})
                self.cache_config = self.cache_config.model_copy(update={"semantic": sem})
                stage = CacheStage(self.cache_config)
            if stage.semantic is not None:
                stage.semantic.clock = lambda: self.now  # expiry on the records' clock
            self._cache_stage = stage
        return self._cache_stage

    def cache(self, call: Call, ts: float) -> str | None:
        """'hit', 'semantic-hit' or None (a miss, whose answer is then stored), exactly as
        `CacheStage.handle` decides, on the records' clock."""
        from spendgate.cache.exact import exact_key, request_skip_reason

        stage = self.cache_stage
        pol = stage.policy(call)
        if pol is None or request_skip_reason(call, cache_sampled=pol.cache_sampled):
            return None
        key = exact_key(call, pol.scope)
        question: tuple[str, list[Any]] | None = None
        partition: str | None = None
        if pol.semantic and stage.semantic is not None:
            from spendgate.cache.semantic import partition_key, query_text

            sem = self.cache_config.semantic
            question = query_text(call, sem.max_turns)
            if question is not None and len(question[0]) > sem.max_chars:
                question = None
            partition = partition_key(call, pol.scope, question[1]) if question else None
        self.now = ts
        if self.exact.get(key, float("-inf")) > ts:
            return "hit"
        if question is not None and partition is not None and stage.semantic is not None:
            # The stage's own decision for the best candidate (per-entry thresholds start
            # from the shipped prior; with no answers to compare, nothing is learned here,
            # and no would-be hit is sampled for verification).
            found = stage.semantic.candidate(partition, question[0])
            if found is not None:
                entry, score = found
                decision = stage.decide(entry, score, replace(pol, verify_rate=0.0))
                if decision == "hit" and self.exact.get(entry.answer_key, float("-inf")) > ts:
                    return "semantic-hit"
        # A miss: the answer is stored when it completes (answers are assumed cacheable:
        # no upstream says otherwise here).
        self.exact[key] = ts + pol.ttl_s
        if question is not None and partition is not None and stage.semantic is not None:
            from spendgate.cache.semantic import SemanticEntry

            vector = stage.semantic.matcher.embedder.embed(question[0]).vector
            stage.semantic.insert_lazily(
                SemanticEntry(partition, question[0], vector, key, ts + pol.ttl_s)
            )
        return None

    # ------------------------------------------------------------------ trim
    def trim(self, call: Call) -> _Trimmed:
        """The history window's plan and the compressor, as `TrimStage.handle` applies them
        (shadow settings are projected as if active)."""
        from spendgate.trim.history import HistoryWindow, split_turns, transcript
        from spendgate.trim.spans import compress_as_configured, compression_counter

        tc = self.trim_config
        body = call.body
        out = _Trimmed(body, 0)
        if not tc.enabled or not isinstance(body.get("messages"), list):
            return out
        count, _ = compression_counter(call.model)
        hc = tc.history
        if hc.matches(call.tags):
            head, turns = split_turns(body["messages"])
            cut = HistoryWindow(hc, None, lambda _m, text: count(text)).plan(call.model, turns)
            if cut > 0:
                old = count(transcript(turns[:cut]))
                note = hc.summary_max_tokens
                out.saved_tokens += max(0, old - note)
                out.segment = hashlib.blake2b(
                    repr((call.tags.tenant, transcript(turns[:cut]))).encode(), digest_size=12
                ).hexdigest()
                out.segment_cost = _cost(
                    self.catalog, hc.summary_model, old + count(hc.prompt), note
                ) or Decimal(0)
                body = {**body, "messages": [*head, *[m for t in turns[cut:] for m in t]]}
        cc = tc.compress
        if cc.matches(call.tags):
            body, report = compress_as_configured(body, call.api, cc, count)
            out.saved_tokens += report.saved_tokens
        out.body = body
        return out

    # ------------------------------------------------------------------ route
    def _route_stage(self) -> RouteStage:
        from spendgate.config import ConfigError
        from spendgate.routing.routers import get_router
        from spendgate.routing.stage import RouteStage
        from spendgate.stages import StageContext

        cfg = self.routing_config
        ctx = cast(StageContext, SimpleNamespace(table=_ServesAnything(), run_internal=None))
        stage = RouteStage(cfg, ctx, get_router(cfg.router))
        try:
            stage.threshold(cfg.threshold)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        return stage

    @staticmethod
    def route(stage: RouteStage | None, call: Call) -> str | None:
        """The model `RouteStage.decide` would serve (shadow projected as active), or None
        when the call is not the router's to change."""
        if stage is None:
            return None
        decision = stage.decide(call)
        if decision is None:
            return None
        served = decision.served
        return served if served and served != call.requested_model else None


def _call_of(r: TrafficRecord, body: dict[str, Any]) -> Call:
    return Call(
        endpoint="messages" if r.api == "anthropic" else "chat",
        api="anthropic" if r.api == "anthropic" else "openai",
        body=body,
        requested_model=r.model,
        tags=Tags(feature=r.feature, tenant=r.tenant, user=r.user),
    )


@dataclass
class _Priced:
    """One record's cost with each technique alone and all together, and what touched it."""

    alone: dict[str, Decimal]
    combined: Decimal
    hit: bool
    simple: bool
    cut: bool
    served: str | None


class _Replay:
    """The running state of one replay: the real code's caches (or the heuristics' seen
    fingerprints), summary segments already paid for, and the tallies."""

    def __init__(self, policy: Policy, catalog: PriceCatalog) -> None:
        self.policy = policy
        self.catalog = catalog
        self.real: _RealCode | None = None
        self.seen: set[tuple[str, str, str]] = set()
        self.segments: dict[str, set[str]] = {"alone": set(), "combined": set()}
        self.misses = 0
        rate = policy.semantic_extra_hit_rate
        self.semantic_every = int(1 / rate) if rate > 0 else 0
        self.totals: dict[str, Decimal] = defaultdict(Decimal)
        self.touched: dict[str, int] = defaultdict(int)
        self.together: dict[str, int] = defaultdict(int)
        self.paths: dict[str, dict[str, int]] = {
            t: {"real": 0, "heuristic": 0}
            for t, on in (("cache", policy.cache), ("trim", policy.trim), ("route", policy.route))
            if on
        }
        self.outcomes: dict[str, int] = defaultdict(int)
        self.feats: dict[str, dict[str, Decimal]] = defaultdict(lambda: defaultdict(Decimal))
        self.unpriced = 0

    def price(self, model: str, tokens_in: int, tokens_out: int, fallback: Decimal) -> Decimal:
        cost = _cost(self.catalog, model, tokens_in, tokens_out)
        return fallback if cost is None else cost

    def add(self, r: TrafficRecord) -> None:
        full = _cost(self.catalog, r.model, r.input_tokens, r.output_tokens)
        if full is None:
            self.unpriced += 1
            return
        body = r.request_body() if self.policy.engine == "auto" else None
        path = "real" if body is not None else "heuristic"
        for t in self.paths:
            self.paths[t][path] += 1
        priced = self._real(r, body, full) if body is not None else self._heuristic(r, full)
        self._tally(r, full, priced)

    def _segment_cost(self, trimmed: _Trimmed, which: str) -> Decimal:
        """A history summary is paid for once per segment (per projection)."""
        if trimmed.segment and trimmed.segment not in self.segments[which]:
            self.segments[which].add(trimmed.segment)
            return trimmed.segment_cost
        return Decimal(0)

    def _real(self, r: TrafficRecord, body: dict[str, Any], full: Decimal) -> _Priced:
        policy = self.policy
        if self.real is None:
            self.real = _RealCode(policy, self.catalog)
        real = self.real
        call = _call_of(r, body)
        outcome = real.cache(call, r.ts) if policy.cache else None
        hit = outcome is not None
        if outcome:
            self.outcomes[outcome] += 1
        trimmed = real.trim(call) if policy.trim else _Trimmed(body, 0)
        trimmed_in = max(0, r.input_tokens - trimmed.saved_tokens)
        served_alone = real.route(real.route_alone, call)
        trim_alone = self.price(r.model, trimmed_in, r.output_tokens, full)
        trim_alone += self._segment_cost(trimmed, "alone")
        alone = {
            "cache": Decimal(0) if hit else full,
            "trim": trim_alone,
            "route": self.price(served_alone or r.model, r.input_tokens, r.output_tokens, full),
        }
        served: str | None = None
        if hit:
            combined = Decimal(0)
        else:
            routed_call = _call_of(r, trimmed.body) if trimmed.saved_tokens else call
            served = real.route(real.route_combined, routed_call)
            combined = self.price(served or r.model, trimmed_in, r.output_tokens, full)
            combined += self._segment_cost(trimmed, "combined")
        return _Priced(
            alone, combined, hit, served_alone is not None, trimmed.saved_tokens > 0, served
        )

    def _heuristic(self, r: TrafficRecord, full: Decimal) -> _Priced:
        policy = self.policy
        hit = self._heuristic_hit(r)
        trimmed_in = r.input_tokens
        if policy.trim:
            trimmed_in -= int((Decimal(r.input_tokens) * policy.trim_fraction).to_integral_value())
        simple = policy.route and _is_simple(r, policy)
        cheap = policy.cheap_model
        alone = {
            "cache": Decimal(0) if hit else full,
            "trim": self.price(r.model, trimmed_in, r.output_tokens, full),
            "route": self.price(cheap, r.input_tokens, r.output_tokens, full) if simple else full,
        }
        served = cheap if simple and not hit else None
        combined = (
            Decimal(0) if hit else self.price(served or r.model, trimmed_in, r.output_tokens, full)
        )
        return _Priced(alone, combined, hit, simple, trimmed_in < r.input_tokens, served)

    def _heuristic_hit(self, r: TrafficRecord) -> bool:
        """A repeat of a fingerprint seen before, or every n-th miss (semantic extra rate)."""
        policy = self.policy
        fp = _fingerprint(r)
        key = (r.tenant, r.model, fp or "")
        hit = policy.cache and fp is not None and key in self.seen
        if fp is not None:
            self.seen.add(key)
        if policy.cache and not hit and self.semantic_every:
            self.misses += 1
            hit = self.misses % self.semantic_every == 0
        if hit:
            self.outcomes["fingerprint-repeat"] += 1
        return hit

    def _tally(self, r: TrafficRecord, full: Decimal, priced: _Priced) -> None:
        self.touched["cache"] += priced.hit
        self.touched["route"] += priced.simple
        self.touched["trim"] += priced.cut
        self.together["cache"] += priced.hit
        self.together["route"] += priced.served is not None
        self.together["trim"] += priced.cut and not priced.hit
        self.totals["baseline"] += full
        self.totals["combined"] += priced.combined
        feat = self.feats[r.feature]
        feat["baseline"] += full
        feat["combined"] += priced.combined
        for t, v in priced.alone.items():
            self.totals[t] += v
            feat[t] += v


def simulate_traffic(
    records: Sequence[TrafficRecord],
    policy: Policy,
    catalog: PriceCatalog | None = None,
) -> Projection:
    """Replay records (in time order) through the techniques in gateway order; project to a
    month."""
    catalog = catalog or PriceCatalog.default()
    if not records:
        raise ValueError("no traffic to simulate")
    ordered = sorted(records, key=lambda r: r.ts)
    span_days = _span_days(ordered)
    per_month = Decimal(DAYS_PER_MONTH) / span_days
    replay = _Replay(policy, catalog)
    for r in ordered:
        replay.add(r)
    n = len(ordered) - replay.unpriced
    share = lambda c: Decimal(c) / n if n else Decimal(0)  # noqa: E731
    totals = replay.totals
    p = Projection(
        calls_per_day=Decimal(len(ordered)) / span_days,
        baseline=totals["baseline"] * per_month,
        alone={t: totals[t] * per_month for t in ("cache", "route", "trim")},
        combined=totals["combined"] * per_month,
        by_feature={
            f: {k: v * per_month for k, v in row.items()} for f, row in sorted(replay.feats.items())
        },
        touched={t: share(c) for t, c in replay.touched.items()},
        combined_touched={t: share(c) for t, c in replay.together.items()},
        paths=replay.paths,
        cache_outcomes=dict(replay.outcomes),
    )
    p.steps = _steps(
        p,
        policy,
        catalog,
        len(ordered),
        replay.unpriced,
        span_days,
        per_month,
        replay.outcomes,
        replay.real,
    )
    p.assumptions = _assumptions(policy, replay.real)
    return p


def _steps(
    p: Projection,
    policy: Policy,
    catalog: PriceCatalog,
    count: int,
    unpriced: int,
    span_days: Decimal,
    per_month: Decimal,
    outcomes: dict[str, int],
    real: _RealCode | None,
) -> list[str]:
    pct = lambda t, d=p.touched: _fmt(d.get(t, Decimal(0)) * 100)  # noqa: E731
    path = lambda t: p.paths.get(t, {"real": 0, "heuristic": 0})  # noqa: E731
    steps = [
        f"{count} calls over {_fmt(span_days)} days "
        f"({_fmt(p.calls_per_day)} calls/day); {unpriced} without a known price left out",
        f"priced each call on its model (catalog {catalog.version}); × {_fmt(per_month)} "
        f"to a {DAYS_PER_MONTH}-day month = ${_fmt(p.baseline)}",
    ]
    if policy.cache:
        c = path("cache")
        how = "prompt-fingerprint repeats"
        if real is not None:
            cfg = real.cache_config
            semantic = cfg.semantic.enabled or any(f.semantic for f in cfg.features.values())
            how = f"exact key per {cfg.scope} scope"
            if semantic:
                stage = real._cache_stage
                matcher = stage.semantic.matcher if stage and stage.semantic else None
                cut = matcher.threshold if matcher is not None else cfg.semantic.threshold
                how += (
                    f" + semantic tier, {matcher.name if matcher else cfg.semantic.embedder} "
                    f"verifier at {cut if cut is not None else 'its shipped threshold'}"
                )
        steps.append(
            f"cache: {c['real']} calls through spendgate.cache ({how}), {c['heuristic']} by "
            f"prompt-fingerprint repeats → {outcomes.get('hit', 0)} exact hits, "
            f"{outcomes.get('semantic-hit', 0)} semantic hits, "
            f"{outcomes.get('fingerprint-repeat', 0)} fingerprint repeats = "
            f"{pct('cache')}% of calls at $0"
        )
    if policy.trim:
        t = path("trim")
        steps.append(
            f"trim: {t['real']} calls through spendgate.trim (history window plan + "
            f"compress_body), {t['heuristic']} cut by the stated excess "
            f"({_fmt(policy.trim_fraction * 100)}% of input) → input reduced on "
            f"{pct('trim')}% of calls"
        )
    if policy.route:
        r = path("route")
        threshold = (
            f"{real.routing_config.router} router, threshold {real.routing_config.threshold} "
            f"= {real.threshold}"
            if real is not None
            else "—"
        )
        steps.append(
            f"route: {r['real']} calls through RouteStage.decide ({threshold}; "
            f"only calls asking for {real.routing_config.strong if real else policy.strong_model})"
            f", {r['heuristic']} by the rule ≤ {policy.simple_max_input_tokens} tokens "
            f"without code → {policy.cheap_model}: {pct('route')}% of calls routed"
        )
    steps.append(
        "combined: per call in gateway order — a cached call is neither trimmed nor routed "
        f"(with everything on: {pct('cache', p.combined_touched)}% cached, "
        f"{pct('route', p.combined_touched)}% routed, {pct('trim', p.combined_touched)}% "
        f"trimmed) = ${_fmt(p.combined)}/month, {_fmt(p.combined_ratio * 100)}% of baseline"
    )
    return steps


def _assumptions(policy: Policy, real: _RealCode | None) -> dict[str, str]:
    out = {
        "output_tokens": "as logged (no upstream is called); a routed call is assumed to "
        "answer at the same length",
        "cacheable_answers": "every miss's answer is stored (no refusals, truncations or "
        "errors, which the gateway would not cache)",
        "days_per_month": str(DAYS_PER_MONTH),
    }
    if real is not None:
        out["real_code"] = (
            "cache, trim and route decided by spendgate's own code on records with a prompt; "
            "TTLs on the records' timestamps; history summaries assumed "
            f"{real.trim_config.history.summary_max_tokens} tokens, priced once per segment "
            f"on {real.trim_config.history.summary_model}"
        )
    out["heuristic_fallback"] = (
        f"records without a prompt: exact fingerprint repeats per tenant; routing when ≤ "
        f"{policy.simple_max_input_tokens} input tokens without code → {policy.cheap_model}; "
        f"prompts {_fmt(policy.prompt_excess * 100)}% longer than needed; "
        f"semantic extra hit rate {policy.semantic_extra_hit_rate}"
    )
    return out


def _span_days(records: Iterable[TrafficRecord]) -> Decimal:
    stamps = [r.ts for r in records if r.ts]
    if len(stamps) < 2:
        return Decimal(1)
    seconds = Decimal(str(max(stamps) - min(stamps)))
    return max(Decimal(1), seconds / 86_400)


def _cost(catalog: PriceCatalog, model: str, tokens_in: int, tokens_out: int) -> Decimal | None:
    cost = catalog.cost(model, Usage(input_tokens=tokens_in, output_tokens=tokens_out))
    return cost.total if cost is not None else None
