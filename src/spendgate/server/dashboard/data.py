"""What the dashboard shows, computed from the ledger store alone.

Totals, series and top lists come from `LedgerStore.spend()` grouped queries. Model tiers,
savings by technique and feature economics reuse `spendgate.analytics` (the same code as
`/admin/trends`, `/admin/savings` and `/admin/features/economics`), so the page and the
reports API never disagree. Cache outcomes and the routing share are not spend figures: on
a SQLite ledger they come from its outcome rollup (`SQLiteLedger.outcomes`, exact over the
range); where that cannot answer (a tenant or user filter, a rollup still being backfilled,
another store), from one pass over the range's events capped at `SCAN_CAP` (the answer
says `partial` when the cap was hit).

The system-prompts panel takes its system tokens, share of input spend and system-prompt
spend from `analytics.reports.system_prompt_report` (the code behind
`/admin/system-prompt?by=feature`). The per-call average and the prompt-caching estimate
need per-call figures (which calls were measured; which system prompts are long enough to
cache), so they come from the same source as the cache outcomes.

Money leaves here as exact decimal strings of USD; the page parses them only to draw.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import partial
from typing import Any

from spendgate.analytics.config import FeaturesConfig
from spendgate.analytics.reports import (
    LedgerQuery,
    Window,
    feature_economics,
    system_prompt_report,
)
from spendgate.analytics.tiers import TierClassifier
from spendgate.call import from_nanos
from spendgate.ledger import NONE_LABEL, LedgerStore, SpendRow, total
from spendgate.ledger.rollups import CACHE_MIN_TOKENS
from spendgate.pricing import PriceCatalog

__all__ = [
    "CACHE_MIN_TOKENS",
    "FILTER_DIMENSIONS",
    "SCAN_CAP",
    "TECHNIQUES",
    "Query",
    "summary",
]

FILTER_DIMENSIONS: tuple[str, ...] = ("feature", "use_case", "team", "tenant", "user", "model")
"""Tags (and the model) the page can filter on."""

TOP_DIMENSIONS: tuple[str, ...] = ("feature", "team", "tenant", "user")
TOP_N = 10
OPTIONS_N = 200
SCAN_CAP = 200_000
HOURLY_MAX = timedelta(hours=48)
"""Ranges up to this long are drawn per hour, longer ones per day."""

TECHNIQUES: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("cache", "Cache", ("cache", "exact_cache", "semantic_cache")),
    ("routing", "Routing", ("routing", "route")),
    ("trimming", "Trimming", ("trimming", "trim", "history", "compression", "output_cap")),
    ("prompt_caching", "Prompt caching", ("prompt_cache", "prompt_caching", "prefix")),
    ("batch", "Batch (deferral lane)", ("batch",)),
)
"""The techniques always shown (zero until their stage acts), and the savings keys each one
gathers. Any other key found in events is shown under its own name."""


@dataclass(frozen=True)
class Query:
    """A dashboard view: time range [since, until) and tag filters."""

    since: datetime | None
    until: datetime
    filters: dict[str, str] = field(default_factory=dict)

    @property
    def hourly(self) -> bool:
        return self.since is not None and self.until - self.since <= HOURLY_MAX


def _usd(nanos: int) -> str:
    return format(from_nanos(nanos).normalize(), "f") if nanos else "0"


def _ratio_usd(nanos: int, n: int) -> str | None:
    if n <= 0:
        return None
    return format((from_nanos(nanos) / n).quantize(Decimal("0.000000001")).normalize(), "f")


def _row(row: SpendRow, dim: str) -> dict[str, Any]:
    return {
        "name": row.keys.get(dim, NONE_LABEL),
        "cost_usd": _usd(row.cost_nanos),
        "calls": row.calls,
        "errors": row.errors,
        "cost_per_call_usd": _ratio_usd(row.cost_nanos, row.calls),
        "savings_usd": _usd(row.savings_nanos),
        "baseline_usd": _usd(row.baseline_nanos),
        "savings_share": round(row.savings_nanos / row.baseline_nanos, 4)
        if row.baseline_nanos
        else None,
        "unknown_cost_calls": row.unknown_cost_calls,
    }


def _floor_hour(when: datetime) -> datetime:
    return when.replace(minute=0, second=0, microsecond=0)


def _series(store: LedgerStore, q: Query) -> tuple[str, list[str], dict[str, dict[str, int]]]:
    """(bucket unit, bucket labels, model → nanos per bucket label)."""
    by_model: dict[str, dict[str, int]] = {}
    if q.hourly:
        assert q.since is not None
        labels = []
        start = _floor_hour(q.since)
        while start < q.until:
            end = start + timedelta(hours=1)
            label = start.strftime("%Y-%m-%dT%H:00Z")
            labels.append(label)
            lo = max(start, q.since)
            for row in store.spend(["model"], lo, min(end, q.until), q.filters):
                by_model.setdefault(row.keys["model"], {})[label] = row.cost_nanos
            start = end
        return "hour", labels, by_model
    rows = store.spend(["day", "model"], q.since, q.until, q.filters)
    days = sorted({r.keys["day"] for r in rows})
    if days:
        # Fill the gaps so quiet days show as zero rather than vanish.
        first = datetime.fromisoformat(days[0]).replace(tzinfo=UTC)
        if q.since is not None:
            first = max(first, q.since.replace(hour=0, minute=0, second=0, microsecond=0))
        last = datetime.fromisoformat(days[-1]).replace(tzinfo=UTC)
        last = max(
            last,
            (q.until - timedelta(microseconds=1)).replace(
                hour=0, minute=0, second=0, microsecond=0
            ),
        )
        n = (last - first).days + 1
        days = [(first + timedelta(days=i)).strftime("%Y-%m-%d") for i in range(min(n, 400))]
    for row in rows:
        by_model.setdefault(row.keys["model"], {})[row.keys["day"]] = row.cost_nanos
    return "day", days, by_model


@dataclass
class _Scan:
    cache: dict[str, int] = field(default_factory=dict)
    routed: int = 0
    """Calls the route stage sent to another model than the one asked for (active mode)."""
    answered: int = 0
    events: int = 0
    capped: bool = False
    """The Python fallback stopped at `SCAN_CAP` events: the figures cover only those."""
    system: dict[tuple[str, str], list[int]] = field(default_factory=dict)
    """(feature, model) → [measured calls, system tokens, cacheable uncached system tokens]:
    calls whose system prompt accounting measured (`extra.input_cost_nanos` set), and of
    their system prompts those ≥ `CACHE_MIN_TOKENS`, minus what the call already read from
    the provider's cache."""

    def add_system(self, feature: str, model: str, system: int, cache_read: int) -> None:
        slot = self.system.setdefault((feature, model), [0, 0, 0])
        slot[0] += 1
        slot[1] += system
        if system >= CACHE_MIN_TOKENS:
            slot[2] += max(system - cache_read, 0)


def _scan(store: LedgerStore, q: Query) -> _Scan:
    """Cache outcomes and routing decisions (neither is a spend dimension): from the
    SQLite ledger's outcome rollup when it can answer (exact over the whole range), else
    from its `SCAN_CAP` most recent events in SQL, else from one pass over the range's
    events in Python, bounded by `SCAN_CAP`."""
    exact = _scan_rollup(store, q)
    if exact is not None:
        return exact
    fast = _scan_recent(store, q)
    if fast is not None:
        return fast
    out = _Scan()
    for event in store.events(SCAN_CAP, since=q.since, until=q.until, filters=q.filters or None):
        out.events += 1
        if event.cache:
            out.cache[event.cache] = out.cache.get(event.cache, 0) + 1
        if event.status < 400:
            out.answered += 1
            route = event.route
            if (
                route
                and route.get("mode") != "shadow"
                and route.get("served") not in (None, route.get("requested", event.requested_model))
            ):
                out.routed += 1
        extra = event.extra or {}
        cost, system = extra.get("input_cost_nanos"), extra.get("system_tokens") or 0
        if cost is not None and event.input_tokens > 0 and type(system) is int:
            out.add_system(event.feature or NONE_LABEL, event.model,
                           min(system, event.input_tokens), event.cache_read_tokens)  # fmt: skip
    out.capped = out.events >= SCAN_CAP
    return out


def _scan_rollup(store: LedgerStore, q: Query) -> _Scan | None:
    """The figures from `SQLiteLedger.outcomes` (the outcome rollup plus raw edges and
    unfolded events): exact, uncapped. None when it cannot answer (a tenant or user
    filter, an outcome rollup still being backfilled, another store)."""
    outcomes = getattr(store, "outcomes", None)
    if outcomes is None:
        return None
    rows = outcomes(q.since, q.until, q.filters or None)
    return None if rows is None else _from_outcomes(rows)


def _scan_recent(store: LedgerStore, q: Query) -> _Scan | None:
    """The same figures from a SQLite ledger's `SCAN_CAP` most recent events in the range
    (`SQLiteLedger.recent_outcomes`, the outcome rollup's own per-event sums): 200k events
    take well under a second where `events()` in Python took ~6 s."""
    recent = getattr(store, "recent_outcomes", None)
    if recent is None:
        return None
    try:
        rows = recent(q.since, q.until, q.filters or None, SCAN_CAP)
    except sqlite3.Error:
        return None  # e.g. a SQLite without JSON functions: fall back to the Python pass
    out = _from_outcomes(rows)
    out.capped = out.events >= SCAN_CAP
    return out


def _from_outcomes(rows: list[tuple[str | None, str, str, dict[str, int]]]) -> _Scan:
    out = _Scan()
    for cache, feature, model, agg in rows:
        out.events += agg["calls"]
        out.answered += agg["answered"]
        out.routed += agg["routed"]
        if cache:
            out.cache[cache] = out.cache.get(cache, 0) + agg["calls"]
        if agg["measured"]:
            slot = out.system.setdefault((feature, model), [0, 0, 0])
            slot[0] += agg["measured"]
            slot[1] += agg["measured_system_tokens"]
            slot[2] += agg["cacheable_system_tokens"]
    return out


def _techniques(found: Mapping[str, int]) -> list[dict[str, Any]]:
    out = []
    left = dict(found)
    for key, label, aliases in TECHNIQUES:
        nanos = sum(left.pop(a, 0) for a in aliases)
        out.append({"technique": key, "label": label, "savings_usd": _usd(nanos)})
    for key, nanos in sorted(left.items()):
        out.append({"technique": key, "label": key, "savings_usd": _usd(nanos)})
    return out


def _observed_days(q: Query, unit: str, series: Mapping[str, Mapping[str, int]]) -> float | None:
    """Days the range covers with data, for projecting to a month: the whole range when it
    is drawn per hour, else from the later of `since` and the first day with calls (so a
    30-day view of a ledger two weeks old projects from two weeks, and "all time" works)."""
    if unit == "hour":
        assert q.since is not None
        start = q.since
    else:
        days = [day for values in series.values() for day in values]
        if not days:
            return None
        start = datetime.fromisoformat(min(days)).replace(tzinfo=UTC)
        if q.since is not None:
            start = max(start, q.since)
    span = (q.until - start).total_seconds() / 86400
    return span if span > 0 else None


def _money(value: Decimal) -> str:
    return format(value.quantize(Decimal("0.000000001")).normalize(), "f") if value else "0"


def _prices(catalog: PriceCatalog, model: str) -> tuple[Decimal, Decimal] | None:
    """(input, cache read) USD per MTok; no cache-read price means no discount."""
    unit = catalog.unit_prices(model)
    inp = unit.get("input")
    if inp is None:
        return None
    read = unit.get("cache_read")
    return inp, inp if read is None else min(read, inp)


def _system_prompts(
    report: Mapping[str, Any],
    scan: _Scan,
    catalog: PriceCatalog,
    days: float | None,
) -> dict[str, Any]:
    """Per feature: system-prompt tokens per call, share of input spend, system-prompt spend
    per month, and what prompt caching the system prompt would save per month. `report` is
    `system_prompt_report` by feature over the view."""
    scale = None if not days or days < 1 else Decimal(30) / Decimal(str(round(days, 6)))
    measured: dict[str, list[int]] = {}
    caching: dict[str, Decimal] = {}
    unpriced: dict[str, int] = {}
    for (feature, model), (n, system, cacheable) in scan.system.items():
        m = measured.setdefault(feature, [0, 0])
        m[0] += n
        m[1] += system
        if cacheable:
            prices = _prices(catalog, model)
            if prices is None:
                unpriced[feature] = unpriced.get(feature, 0) + n
                continue
            inp, read = prices
            caching[feature] = caching.get(feature, Decimal(0)) + cacheable * (inp - read) / 10**6

    def row(name: str | None, r: Mapping[str, Any]) -> dict[str, Any]:
        if name is None:
            n, system = (sum(v[i] for v in measured.values()) for i in (0, 1))
            saving = sum(caching.values(), Decimal(0))
        else:
            n, system = measured.get(name, [0, 0])
            saving = caching.get(name, Decimal(0))
        avg = system / n if n else None
        spend = Decimal(r["system_input_cost_usd"])
        return {
            **({} if name is None else {"feature": name}),
            "calls": r["calls"],
            "measured_calls": n,
            "avg_system_tokens": None if avg is None else round(avg, 1),
            "system_tokens": r["system_tokens"],
            "system_input_cost_usd": _money(spend),
            "system_input_cost_share": r["system_input_cost_share"],
            "system_usd_month": None if scale is None else _money(spend * scale),
            "caching_saving_usd": _money(saving),
            "caching_saving_usd_month": None if scale is None else _money(saving * scale),
            # Averages under the minimum and no call reached it: nothing providers would cache.
            "too_short_to_cache": name is not None
            and avg is not None
            and 0 < avg < CACHE_MIN_TOKENS
            and not saving,
            "unpriced_calls": 0 if name is None else unpriced.get(name, 0),
        }

    # Caching cannot save more than the system prompt cost (guards events whose recorded
    # cost disagrees with today's list prices).
    for r in report["rows"]:
        if r["feature"] in caching:
            caching[r["feature"]] = min(caching[r["feature"]], Decimal(r["system_input_cost_usd"]))
    # A feature whose measured calls carried no system prompt has nothing to show: listing
    # it would fill the panel with zeros.
    rows = [row(r["feature"], r) for r in report["rows"]
            if r["system_tokens"] or measured.get(r["feature"], [0, 0])[1]]  # fmt: skip
    measured_calls = sum(v[0] for v in measured.values())
    return {
        "measured_calls": measured_calls,
        "rows": rows[:TOP_N],
        "more": max(0, len(rows) - TOP_N),
        "totals": row(None, report["totals"]),
        "days": None if days is None else round(days, 6),
        "projected": scale is not None,
        "saving_basis": "prompt_caching",
        "cache_min_tokens": CACHE_MIN_TOKENS,
        "partial": scan.capped,
    }


READ_WORKERS = 3
"""Threads one dashboard view reads the ledger with, on a store whose reads run in
parallel. SQLite runs a query with the GIL released, so on 2 cores two queries overlap;
the third keeps a core busy while another thread builds rows in Python."""


def _gather(store: LedgerStore, jobs: Mapping[str, Callable[[], Any]]) -> dict[str, Any]:
    """Run a view's independent queries: at once on a store that says its reads run in
    parallel (`parallel_reads`: each thread gets its own connection), else in turn."""
    if not getattr(store, "parallel_reads", False):
        return {name: job() for name, job in jobs.items()}
    with ThreadPoolExecutor(READ_WORKERS, thread_name_prefix="spendgate-dashboard") as pool:
        futures = {name: pool.submit(job) for name, job in jobs.items()}
        return {name: future.result() for name, future in futures.items()}


def summary(
    store: LedgerStore,
    tiers_of: TierClassifier,
    q: Query,
    *,
    budgets: list[dict[str, Any]] | None = None,
    features: FeaturesConfig | None = None,
    catalog: PriceCatalog | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Everything one dashboard view draws, as JSON-ready data."""
    f = q.filters or None
    window = Window(q.since, q.until)
    dims = list(dict.fromkeys((*TOP_DIMENSIONS, *FILTER_DIMENSIONS)))
    # Slowest first, so they start first when the store reads in parallel: per-user
    # spend (20,000 rows at 10 M events) and the bounded event scan.
    dims.sort(key=lambda d: d != "user")
    jobs: dict[str, Callable[[], Any]] = {}
    for dim in dims:
        jobs[f"spend:{dim}"] = partial(store.spend, [dim], q.since, q.until, f)
    jobs["scan"] = lambda: _scan(store, q)
    if f is not None:
        # Filter choices ignore the filters (so a chosen value's siblings stay offered).
        for dim in dims:
            if dim in FILTER_DIMENSIONS:
                jobs[f"options:{dim}"] = partial(store.spend, [dim], q.since, q.until)
    jobs["series"] = lambda: _series(store, q)
    jobs["savings"] = lambda: LedgerQuery(store).savings([], window, q.filters)
    jobs["system"] = lambda: system_prompt_report(store, ["feature"], window, q.filters)
    if features is not None and features.root:
        jobs["economics"] = lambda: feature_economics(
            store, features, None, q.filters, now=now or q.until
        )
    got = _gather(store, jobs)

    grouped = {dim: got[f"spend:{dim}"] for dim in dims}
    by_model = grouped["model"]
    grand = total(by_model)
    users = [r for r in grouped["user"] if r.keys["user"] != NONE_LABEL]
    top = {dim: [_row(r, dim) for r in grouped[dim][:TOP_N]] for dim in TOP_DIMENSIONS}
    # Unfiltered, the filter choices are the same queries' answers.
    unfiltered = grouped if f is None else {
        dim: got[f"options:{dim}"] for dim in FILTER_DIMENSIONS}  # fmt: skip
    options = {dim: [r.keys[dim] for r in unfiltered[dim][:OPTIONS_N]]
               for dim in FILTER_DIMENSIONS}  # fmt: skip
    unit, labels, series = got["series"]
    tiers = {model: tiers_of(model) for model in {*series, *(r.keys["model"] for r in by_model)}}
    savings: dict[str, int] = {}
    for _keys, technique, _count, nanos in got["savings"]:
        savings[technique] = savings.get(technique, 0) + nanos
    scan = got["scan"]
    cache = scan.cache
    looked_up = sum(cache.values()) - cache.get("bypass", 0)
    hits = sum(v for k, v in cache.items() if "hit" in k)

    span_days: float | None = None
    if q.since is not None:
        span_days = (q.until - q.since).total_seconds() / 86400
    per_user = _ratio_usd(grand.cost_nanos, len(users))
    per_user_month = None
    if per_user is not None and span_days and span_days >= 1:
        per_user_month = format(
            (Decimal(per_user) * Decimal(30) / Decimal(str(round(span_days, 6))))
            .quantize(Decimal("0.000001"))
            .normalize(),
            "f",
        )

    econ = got.get("economics")
    if econ is not None and "feature" in q.filters:
        # The month's economics per feature; a feature filter shows only that feature.
        econ = {**econ, "rows": [r for r in econ["rows"] if r["feature"] == q.filters["feature"]]}
    days = _observed_days(q, unit, series)
    system = _system_prompts(got["system"], scan, catalog or PriceCatalog.default(), days)

    return {
        "range": {
            "since": q.since.isoformat() if q.since else None,
            "until": q.until.isoformat(),
            "unit": unit,
        },
        "filters": q.filters,
        "totals": {
            "cost_usd": _usd(grand.cost_nanos),
            "baseline_usd": _usd(grand.baseline_nanos),
            "savings_usd": _usd(grand.savings_nanos),
            "calls": grand.calls,
            "errors": grand.errors,
            "unknown_cost_calls": grand.unknown_cost_calls,
            "input_tokens": grand.input_tokens,
            "output_tokens": grand.output_tokens,
            "cost_per_call_usd": _ratio_usd(grand.cost_nanos, grand.calls),
            "active_users": len(users),
            "cost_per_active_user_usd": per_user,
            "cost_per_active_user_month_usd": per_user_month,
            "cache_hit_rate": (hits / looked_up) if looked_up else None,
            "cache_lookups": looked_up,
            "routing_share": (scan.routed / scan.answered) if scan.answered else None,
            "routed_calls": scan.routed,
        },
        "series": {
            "labels": labels,
            "models": {m: [_usd(v.get(label, 0)) for label in labels] for m, v in series.items()},
            "tiers": tiers,
        },
        "models": [
            _row(r, "model") | {"tier": tiers.get(r.keys["model"], "unknown")} for r in by_model
        ],
        "top": top,
        "savings_by_feature": [
            _row(r, "feature") for r in grouped["feature"] if r.savings_nanos or r.baseline_nanos
        ][:TOP_N],
        "savings": _techniques(savings),
        "cache_outcomes": dict(sorted(cache.items())),
        "scan": {"events": scan.events, "partial": scan.capped},
        "budgets": budgets,
        "economics": econ,
        "system_prompts": system,
        "options": options,
    }
