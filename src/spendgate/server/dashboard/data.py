"""What the dashboard shows, computed from the ledger store alone.

Totals, series and top lists come from `LedgerStore.spend()` grouped queries. Model tiers,
savings by technique and feature economics reuse `spendgate.analytics` (the same code as
`/admin/trends`, `/admin/savings` and `/admin/features/economics`), so the page and the
reports API never disagree. Cache outcomes and the routing share are not spend figures:
they come from `LedgerStore.outcomes` (exact over the range: SQLite's outcome rollup,
PostgreSQL's GROUP BY); where that cannot answer (SQLite: a tenant or user filter, a rollup
still being backfilled), from the range's `SCAN_CAP` most recent events
(`LedgerStore.recent_outcomes`; the answer says `partial` when the cap was hit).

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
    Window,
    feature_economics,
    system_prompt_report,
)
from spendgate.analytics.tiers import TierClassifier
from spendgate.call import from_nanos
from spendgate.ledger import NONE_LABEL, LedgerStore, SpendRow, total
from spendgate.ledger.fold import outcome_rows_of
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


def _scan(store: LedgerStore, q: Query) -> _Scan:
    """Cache outcomes and routing decisions (neither is a spend dimension): exact over the
    whole range when the store can answer cheaply (`outcomes`), else from the range's
    `SCAN_CAP` most recent events in SQL, else (a SQLite without JSON functions) from one
    pass over the range's events in Python, bounded by `SCAN_CAP`."""
    return _scan_rollup(store, q) or _scan_recent(store, q) or _scan_events(store, q)


def _scan_events(store: LedgerStore, q: Query) -> _Scan:
    """The figures folded in Python from the range's first `SCAN_CAP` events."""
    events = store.events(SCAN_CAP, since=q.since, until=q.until, filters=q.filters or None)
    out = _from_outcomes(outcome_rows_of(events))
    out.capped = out.events >= SCAN_CAP
    return out


def _scan_rollup(store: LedgerStore, q: Query) -> _Scan | None:
    """The figures from `LedgerStore.outcomes` (SQLite: the outcome rollup plus raw edges
    and unfolded events): exact, uncapped. None when it cannot answer cheaply (a tenant or
    user filter, an outcome rollup still being backfilled)."""
    rows = store.outcomes(q.since, q.until, q.filters or None)
    return None if rows is None else _from_outcomes(rows)


def _scan_recent(store: LedgerStore, q: Query) -> _Scan | None:
    """The same figures from the range's `SCAN_CAP` most recent events
    (`LedgerStore.recent_outcomes`, the outcome rollup's own per-event sums): 200k events
    take well under a second where `events()` in Python took ~6 s."""
    try:
        rows = store.recent_outcomes(q.since, q.until, q.filters or None, SCAN_CAP)
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
    if not store.parallel_reads:
        return {name: job() for name, job in jobs.items()}
    with ThreadPoolExecutor(READ_WORKERS, thread_name_prefix="spendgate-dashboard") as pool:
        futures = {name: pool.submit(job) for name, job in jobs.items()}
        return {name: future.result() for name, future in futures.items()}


def _dims() -> list[str]:
    """The dimensions one view groups spend by. Slowest first, so they start first when the
    store reads in parallel: per-user spend (20,000 rows at 10 M events)."""
    dims = list(dict.fromkeys((*TOP_DIMENSIONS, *FILTER_DIMENSIONS)))
    dims.sort(key=lambda d: d != "user")
    return dims


def _jobs(
    store: LedgerStore, q: Query, features: FeaturesConfig | None, now: datetime | None
) -> dict[str, Callable[[], Any]]:
    """A view's independent ledger queries, by name."""
    f = q.filters or None
    window = Window(q.since, q.until)
    jobs: dict[str, Callable[[], Any]] = {}
    for dim in _dims():
        jobs[f"spend:{dim}"] = partial(store.spend, [dim], q.since, q.until, f)
    jobs["scan"] = lambda: _scan(store, q)
    if f is not None:
        # Filter choices ignore the filters (so a chosen value's siblings stay offered).
        for dim in _dims():
            if dim in FILTER_DIMENSIONS:
                jobs[f"options:{dim}"] = partial(store.spend, [dim], q.since, q.until)
    jobs["series"] = lambda: _series(store, q)
    jobs["savings"] = lambda: store.savings_by_technique([], q.since, q.until, q.filters)
    jobs["system"] = lambda: system_prompt_report(store, ["feature"], window, q.filters)
    if features is not None and features.root:
        jobs["economics"] = lambda: feature_economics(
            store, features, None, q.filters, now=now or q.until
        )
    return jobs


def _per_user_month(per_user: str | None, q: Query) -> str | None:
    """Cost per active user scaled from the range to 30 days (ranges of a day or more)."""
    if per_user is None or q.since is None:
        return None
    span_days = (q.until - q.since).total_seconds() / 86400
    if span_days < 1:
        return None
    scaled = Decimal(per_user) * Decimal(30) / Decimal(str(round(span_days, 6)))
    return format(scaled.quantize(Decimal("0.000001")).normalize(), "f")


def _headline(grand: SpendRow, users: int, scan: _Scan, q: Query) -> dict[str, Any]:
    """The view's totals: spend, cost per call and per active user, cache and routing."""
    cache = scan.cache
    looked_up = sum(cache.values()) - cache.get("bypass", 0)
    hits = sum(v for k, v in cache.items() if "hit" in k)
    per_user = _ratio_usd(grand.cost_nanos, users)
    return {
        "cost_usd": _usd(grand.cost_nanos),
        "baseline_usd": _usd(grand.baseline_nanos),
        "savings_usd": _usd(grand.savings_nanos),
        "calls": grand.calls,
        "errors": grand.errors,
        "unknown_cost_calls": grand.unknown_cost_calls,
        "input_tokens": grand.input_tokens,
        "output_tokens": grand.output_tokens,
        "cost_per_call_usd": _ratio_usd(grand.cost_nanos, grand.calls),
        "active_users": users,
        "cost_per_active_user_usd": per_user,
        "cost_per_active_user_month_usd": _per_user_month(per_user, q),
        "cache_hit_rate": (hits / looked_up) if looked_up else None,
        "cache_lookups": looked_up,
        "routing_share": (scan.routed / scan.answered) if scan.answered else None,
        "routed_calls": scan.routed,
    }


def _economics(econ: dict[str, Any] | None, q: Query) -> dict[str, Any] | None:
    """The month's economics per feature; a feature filter shows only that feature."""
    if econ is None or "feature" not in q.filters:
        return econ
    return {**econ, "rows": [r for r in econ["rows"] if r["feature"] == q.filters["feature"]]}


def _technique_savings(rows: list[tuple[dict[str, str], str, int, int]]) -> list[dict[str, Any]]:
    savings: dict[str, int] = {}
    for _keys, technique, _count, nanos in rows:
        savings[technique] = savings.get(technique, 0) + nanos
    return _techniques(savings)


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
    got = _gather(store, _jobs(store, q, features, now))
    grouped = {dim: got[f"spend:{dim}"] for dim in _dims()}
    by_model = grouped["model"]
    users = [r for r in grouped["user"] if r.keys["user"] != NONE_LABEL]
    # Unfiltered, the filter choices are the same queries' answers.
    choices = (
        grouped if not q.filters else {dim: got[f"options:{dim}"] for dim in FILTER_DIMENSIONS}
    )
    unit, labels, series = got["series"]
    tiers = {model: tiers_of(model) for model in {*series, *(r.keys["model"] for r in by_model)}}
    scan = got["scan"]
    days = _observed_days(q, unit, series)
    return {
        "range": {
            "since": q.since.isoformat() if q.since else None,
            "until": q.until.isoformat(),
            "unit": unit,
        },
        "filters": q.filters,
        "totals": _headline(total(by_model), len(users), scan, q),
        "series": {
            "labels": labels,
            "models": {m: [_usd(v.get(label, 0)) for label in labels] for m, v in series.items()},
            "tiers": tiers,
        },
        "models": [
            _row(r, "model") | {"tier": tiers.get(r.keys["model"], "unknown")} for r in by_model
        ],
        "top": {dim: [_row(r, dim) for r in grouped[dim][:TOP_N]] for dim in TOP_DIMENSIONS},
        "savings_by_feature": [
            _row(r, "feature") for r in grouped["feature"] if r.savings_nanos or r.baseline_nanos
        ][:TOP_N],
        "savings": _technique_savings(got["savings"]),
        "cache_outcomes": dict(sorted(scan.cache.items())),
        "scan": {"events": scan.events, "partial": scan.capped},
        "budgets": budgets,
        "economics": _economics(got.get("economics"), q),
        "system_prompts": _system_prompts(
            got["system"], scan, catalog or PriceCatalog.default(), days
        ),
        "options": {
            dim: [r.keys[dim] for r in choices[dim][:OPTIONS_N]] for dim in FILTER_DIMENSIONS
        },
    }
