"""The reports behind `/admin/*` and the dashboard: spend, unit economics, tier trends,
system-prompt share, savings by technique, feature economics.

Every report is a plain dict (JSON-ready; money as exact decimal strings with 9 places)
whose `rows` list is also what CSV and Parquet exports contain. They read the ledger
through `LedgerQuery`: the `LedgerStore` contract's grouped queries (`aggregate`,
`active_users`, `savings_by_technique`; rollup-backed on SQLite, partition-pruned on
PostgreSQL) over a report `Window`.
"""

from __future__ import annotations

import calendar
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from operator import itemgetter
from typing import Any

from spendgate.analytics.config import FeaturesConfig
from spendgate.analytics.tiers import TierClassifier
from spendgate.call import from_nanos
from spendgate.ledger import LedgerStore, check_dimensions
from spendgate.ledger.rollups import AGGREGATES
from spendgate.ledger.spend import SPEND_FIELDS

__all__ = [
    "BANDS",
    "LedgerQuery",
    "Window",
    "feature_economics",
    "money",
    "month_window",
    "savings_report",
    "spend_report",
    "system_prompt_report",
    "tier_trends",
    "unit_economics",
]

_EXACT = Decimal("0.000000001")

BANDS: dict[str, tuple[Decimal, Decimal | None]] = {
    "productivity": (Decimal("0.50"), Decimal("5")),
    "ai_native": (Decimal("2"), Decimal("15")),
    "agentic": (Decimal("10"), Decimal("50")),
}
"""Typical LLM cost per active user per month (USD): productivity tools $0.50–5,
AI-native apps $2–15, agentic products $10–50+ (the upper end of agentic is open:
"within" means ≥ $10 there, and above $50 is flagged as "above" for attention)."""

VERDICT_OK = "profitable"
VERDICT_BAD = "needs optimization or repricing"
VERDICT_NONE = "no value configured"


def money(nanos: int) -> str:
    """Exact USD string from integer nanos (9 decimals).

    Integer arithmetic, not Decimal: a 20,000-row report formats 60,000 amounts, and
    `divmod` is exact at any size where a Decimal division rounds past 28 digits."""
    whole, frac = divmod(abs(nanos), 1_000_000_000)
    return f"{'-' if nanos < 0 else ''}{whole}.{frac:09d}"


def _usd(value: Decimal) -> str:
    return format(value.quantize(_EXACT, rounding=ROUND_HALF_EVEN), "f")


@dataclass(frozen=True, slots=True)
class Window:
    since: datetime | None = None
    until: datetime | None = None

    def as_dict(self) -> dict[str, str | None]:
        return {
            "since": self.since.isoformat() if self.since else None,
            "until": self.until.isoformat() if self.until else None,
        }


def month_window(month: str | None, now: datetime | None = None) -> tuple[str, Window]:
    """`YYYY-MM` (default: the current UTC month) → its [start, end) window."""
    now = now or datetime.now(UTC)
    if month is None:
        month = now.strftime("%Y-%m")
    try:
        start = datetime.strptime(month, "%Y-%m").replace(tzinfo=UTC)
    except ValueError:
        raise ValueError(f"month must be YYYY-MM, got {month!r}") from None
    days = calendar.monthrange(start.year, start.month)[1]
    return month, Window(start, start + timedelta(days=days))


# --------------------------------------------------------------------------- queries


class LedgerQuery:
    """A `LedgerStore`'s grouped queries over a report `Window`."""

    def __init__(self, store: LedgerStore) -> None:
        self.store = store

    def aggregate(
        self,
        by: Sequence[str],
        window: Window,
        filters: Mapping[str, str],
        fields: Sequence[str] | None = None,
    ) -> list[tuple[dict[str, str], dict[str, int]]]:
        """Per group: `fields` of `AGGREGATES` (default all), plus `calls`."""
        return self.store.aggregate(by, window.since, window.until, filters, fields=fields)

    def active_users(
        self, by: Sequence[str], window: Window, filters: Mapping[str, str]
    ) -> dict[tuple[str, ...], int]:
        """Distinct tagged users per group, keyed by the group's values in `by` order."""
        rows = self.store.active_users(by, window.since, window.until, filters)
        return {tuple(keys[d] for d in by): n for keys, n in rows}

    def savings(
        self, by: Sequence[str], window: Window, filters: Mapping[str, str]
    ) -> list[tuple[dict[str, str], str, int, int]]:
        """(group keys, technique, calls it acted on, nanos saved) per group."""
        return self.store.savings_by_technique(by, window.since, window.until, filters)


def _per(total_nanos: int, count: int) -> str | None:
    """`total / count` in USD, rounded half-even to the nano — in integers, like `money`."""
    if count <= 0:
        return None
    q, r = divmod(abs(total_nanos), count)
    if 2 * r > count or (2 * r == count and q % 2):
        q += 1
    return money(-q if total_nanos < 0 else q)


_UNIT_AGGREGATES = ("calls", "cost_nanos", "unknown_cost_calls")
"""What `_unit_row` and feature economics read."""

_SYSTEM_AGGREGATES = (
    "calls",
    "input_tokens",
    "system_tokens",
    "input_cost_nanos",
    "system_input_nanos",
)
"""What the system-prompt report reads."""


def _spend_fields(agg: Mapping[str, int]) -> dict[str, Any]:
    return {
        "calls": agg["calls"],
        "errors": agg["errors"],
        "input_tokens": agg["input_tokens"],
        "output_tokens": agg["output_tokens"],
        "cache_read_tokens": agg["cache_read_tokens"],
        "cost_usd": money(agg["cost_nanos"]),
        "unknown_cost_calls": agg["unknown_cost_calls"],
        "baseline_usd": money(agg["baseline_nanos"]),
        "savings_usd": money(agg["savings_nanos"]),
        "cost_per_request_usd": _per(agg["cost_nanos"], agg["calls"] - agg["unknown_cost_calls"]),
    }


def _grouped(
    report: str,
    by: Sequence[str],
    window: Window,
    filters: Mapping[str, str],
    rows: Sequence[tuple[dict[str, str], dict[str, int]]],
    shape: Callable[[Mapping[str, int]], dict[str, Any]],
    aggregates: Sequence[str],
) -> dict[str, Any]:
    """A report grouped `by` dimensions: each group's keys with its `shape`d aggregates, and
    the same shape of the totals over all groups."""
    return {
        "report": report,
        "by": by,
        **window.as_dict(),
        "filters": dict(filters),
        "rows": [{**keys, **shape(agg)} for keys, agg in rows],
        "totals": shape(_totals(rows, aggregates)),
    }


def _totals(
    rows: Sequence[tuple[dict[str, str], dict[str, int]]], fields: Sequence[str] = AGGREGATES
) -> dict[str, int]:
    aggs = [agg for _, agg in rows]
    return {k: sum(map(itemgetter(k), aggs)) for k in fields}


# --------------------------------------------------------------------------- reports


def spend_report(
    store: LedgerStore, by: Sequence[str], window: Window, filters: Mapping[str, str]
) -> dict[str, Any]:
    """Spend grouped by `by`, most costly first, with cost per request."""
    by = check_dimensions(by)
    rows = LedgerQuery(store).aggregate(by, window, filters, SPEND_FIELDS)
    rows.sort(key=lambda r: (-r[1]["cost_nanos"], -r[1]["calls"], tuple(r[0].values())))
    return _grouped("spend", by, window, filters, rows, _spend_fields, SPEND_FIELDS)


def _band_position(segment: str, value: Decimal) -> str:
    low, high = BANDS[segment]
    if value < low:
        return "below"
    if high is not None and value > high:
        return "above"
    return "within"


def unit_economics(
    store: LedgerStore,
    features: FeaturesConfig | None,
    month: str | None,
    filters: Mapping[str, str],
    by: str = "feature",
    now: datetime | None = None,
) -> dict[str, Any]:
    """Cost per request and per active user for one calendar month, per `by` group
    (feature by default), each placed against the seed's per-user bands."""
    by_dims = check_dimensions([by])
    now = now or datetime.now(UTC)
    month, window = month_window(month, now)
    q = LedgerQuery(store)
    groups = q.aggregate(by_dims, window, filters, _UNIT_AGGREGATES)
    users = q.active_users(by_dims, window, filters)
    all_users = q.active_users([], window, filters).get((), 0)
    rows = []
    for keys, agg in sorted(groups, key=lambda r: -r[1]["cost_nanos"]):
        n = users.get(tuple(keys[d] for d in by_dims), 0)
        rows.append(_unit_row(keys, agg, n, features, by))
    total = _totals(groups, _UNIT_AGGREGATES)
    return {
        "report": "unit_economics",
        "by": by,
        "month": month,
        **window.as_dict(),
        "month_complete": window.until is not None and now >= window.until,
        "filters": dict(filters),
        "bands": {
            k: {"low_usd": str(lo), "high_usd": None if hi is None else str(hi)}
            for k, (lo, hi) in BANDS.items()
        },
        "rows": rows,
        "totals": _unit_row({}, total, all_users, None, by),
    }


def _unit_row(
    keys: dict[str, str],
    agg: Mapping[str, int],
    users: int,
    features: FeaturesConfig | None,
    by: str,
) -> dict[str, Any]:
    priced = agg["calls"] - agg["unknown_cost_calls"]
    per_user = None if users <= 0 else from_nanos(agg["cost_nanos"]) / users
    entry = features.get(keys.get("feature", "")) if features and by == "feature" else None
    segment = entry.segment if entry else None
    row: dict[str, Any] = {
        **keys,
        "calls": agg["calls"],
        "cost_usd": money(agg["cost_nanos"]),
        "unknown_cost_calls": agg["unknown_cost_calls"],
        "cost_per_request_usd": _per(agg["cost_nanos"], priced),
        "active_users": users,
        "cost_per_active_user_usd": None if per_user is None else _usd(per_user),
        "segment": segment,
        "band_position": None,
        "bands_matched": [],
    }
    if per_user is not None:
        row["bands_matched"] = [s for s in BANDS if _band_position(s, per_user) == "within"]
        if segment is not None:
            row["band_position"] = _band_position(segment, per_user)
    return row


def tier_trends(
    store: LedgerStore,
    tiers: TierClassifier,
    window: Window,
    filters: Mapping[str, str],
    bucket: str = "day",
) -> dict[str, Any]:
    """Spend per period (day / week / month) per model tier."""
    if bucket not in ("day", "week", "month"):
        raise ValueError(f"bucket must be day, week or month, got {bucket!r}")
    rows = LedgerQuery(store).aggregate(["day", "model"], window, filters, ("calls", "cost_nanos"))
    series: dict[str, dict[str, list[int]]] = defaultdict(
        lambda: {t: [0, 0] for t in ("frontier", "mid", "small", "unknown")}
    )
    models: dict[str, str] = {}
    for keys, agg in rows:
        period = _period(keys["day"], bucket)
        tier = tiers(keys["model"])
        models[keys["model"]] = tier
        slot = series[period][tier]
        slot[0] += agg["cost_nanos"]
        slot[1] += agg["calls"]
    out_rows = []
    for period in sorted(series):
        for tier, (nanos, calls) in series[period].items():
            if calls:
                out_rows.append(
                    {"period": period, "tier": tier, "calls": calls, "cost_usd": money(nanos)}
                )
    return {
        "report": "tier_trends",
        "bucket": bucket,
        **window.as_dict(),
        "filters": dict(filters),
        "tiers": TierClassifier.definitions(),
        "models": dict(sorted(models.items())),
        "rows": out_rows,
    }


def _period(day: str, bucket: str) -> str:
    if bucket == "day":
        return day
    if bucket == "month":
        return day[:7]
    d = date.fromisoformat(day)
    return (d - timedelta(days=d.weekday())).isoformat()  # the week's Monday


def system_prompt_report(
    store: LedgerStore, by: Sequence[str], window: Window, filters: Mapping[str, str]
) -> dict[str, Any]:
    """Share of input spend (and input tokens) that went to system prompts, per group."""
    by = check_dimensions(by)
    rows = LedgerQuery(store).aggregate(by, window, filters, _SYSTEM_AGGREGATES)
    rows.sort(key=lambda r: -r[1]["system_input_nanos"])

    def fields(agg: Mapping[str, int]) -> dict[str, Any]:
        return {
            "calls": agg["calls"],
            "input_tokens": agg["input_tokens"],
            "system_tokens": agg["system_tokens"],
            "system_token_share": _ratio(agg["system_tokens"], agg["input_tokens"]),
            "input_cost_usd": money(agg["input_cost_nanos"]),
            "system_input_cost_usd": money(agg["system_input_nanos"]),
            "system_input_cost_share": _ratio(agg["system_input_nanos"], agg["input_cost_nanos"]),
        }

    return _grouped("system_prompt", by, window, filters, rows, fields, _SYSTEM_AGGREGATES)


def _ratio(part: int, whole: int) -> float | None:
    return None if whole <= 0 else round(part / whole, 6)


def savings_report(
    store: LedgerStore, by: Sequence[str], window: Window, filters: Mapping[str, str]
) -> dict[str, Any]:
    """What each technique saved (from the events' `savings` maps), per group."""
    by = check_dimensions(by)
    q = LedgerQuery(store)
    rows = q.savings(by, window, filters)
    rows.sort(key=lambda r: (-r[3], r[1]))
    per_technique: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for _, technique, calls, nanos in rows:
        per_technique[technique][0] += calls
        per_technique[technique][1] += nanos
    wanted = ("calls", "cost_nanos", "baseline_nanos", "savings_nanos")
    totals = _totals(q.aggregate([], window, filters, wanted), wanted)
    return {
        "report": "savings",
        "by": by,
        **window.as_dict(),
        "filters": dict(filters),
        "rows": [
            {**keys, "technique": t, "calls": c, "saved_usd": money(n)} for keys, t, c, n in rows
        ],
        "by_technique": {
            t: {"calls": c, "saved_usd": money(n)} for t, (c, n) in sorted(per_technique.items())
        },
        "totals": {
            "calls": totals["calls"],
            "cost_usd": money(totals["cost_nanos"]),
            "baseline_usd": money(totals["baseline_nanos"]),
            "saved_usd": money(totals["savings_nanos"]),
        },
    }


def feature_economics(
    store: LedgerStore,
    features: FeaturesConfig | None,
    month: str | None,
    filters: Mapping[str, str],
    now: datetime | None = None,
) -> dict[str, Any]:
    """Cost vs value per feature for one month. A month still running is judged on its
    cost projected to the whole month (cost so far × days in month / days elapsed)."""
    now = now or datetime.now(UTC)
    month, window = month_window(month, now)
    assert window.since is not None and window.until is not None
    q = LedgerQuery(store)
    costs = {
        keys["feature"]: agg
        for keys, agg in q.aggregate(["feature"], window, filters, _UNIT_AGGREGATES)
    }
    configured = features.root if features else {}
    span = (window.until - window.since).total_seconds()
    elapsed = min(max((now - window.since).total_seconds(), 0.0), span)
    complete = elapsed >= span
    rows = []
    for feature in sorted(set(costs) | set(configured)):
        agg = costs.get(feature) or dict.fromkeys(AGGREGATES, 0)
        cost = from_nanos(agg["cost_nanos"])
        if complete:
            judged = cost
        elif elapsed > 0:
            judged = cost * Decimal(span) / Decimal(elapsed)
        else:
            judged = Decimal(0)
        entry = configured.get(feature)
        worth = entry.worth_usd_per_month if entry else None
        if worth is None:
            verdict, margin, ratio = VERDICT_NONE, None, None
        else:
            verdict = VERDICT_OK if worth >= judged else VERDICT_BAD
            margin = _usd(worth - judged)
            ratio = None if judged == 0 else float(round(worth / judged, 4))
        rows.append(
            {
                "feature": feature,
                "calls": agg["calls"],
                "cost_usd": _usd(cost),
                "projected_cost_usd": _usd(judged),
                "unknown_cost_calls": agg["unknown_cost_calls"],
                "worth_kind": entry.worth_kind if entry else None,
                "worth_usd_per_month": None if worth is None else _usd(worth),
                "margin_usd": margin,
                "worth_to_cost": ratio,
                "verdict": verdict,
            }
        )
    rows.sort(key=lambda r: (r["verdict"] != VERDICT_BAD, -Decimal(str(r["projected_cost_usd"]))))
    return {
        "report": "feature_economics",
        "month": month,
        **window.as_dict(),
        "month_complete": complete,
        "filters": dict(filters),
        "rows": rows,
        "needs_attention": [r["feature"] for r in rows if r["verdict"] == VERDICT_BAD],
    }
