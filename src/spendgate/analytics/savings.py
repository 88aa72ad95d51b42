"""Savings by technique, from the ledger: what each optimization saved, per feature and
period, the share of calls it touched, and what shadow-mode decisions would have saved.

The split rule (docs/savings.md): each event's `baseline − actual` is divided among the
techniques that acted, each credited with its marginal saving in pipeline order — cache
(all of it, on a hit), trimming (tokens removed, priced on the requested model), routing
(the requested model's price minus the served model's, on the tokens actually sent),
prompt caching (cache-read discount minus cache-write premium). The parts sum exactly to
`baseline − actual`, so no saving is counted twice.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from spendgate.analytics.reports import LedgerQuery, Window
from spendgate.call import from_nanos
from spendgate.ledger import LedgerStore, check_dimensions
from spendgate.ledger.rows import label

__all__ = ["SavingsRow", "savings_by_technique"]


@dataclass
class SavingsRow:
    keys: dict[str, str]
    calls: int = 0
    baseline_nanos: int = 0
    cost_nanos: int = 0
    by_technique: dict[str, int] = field(default_factory=dict)
    touched: dict[str, int] = field(default_factory=dict)
    would_have_saved: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        usd = lambda n: format(from_nanos(n), "f")  # noqa: E731
        return {
            **self.keys,
            "calls": self.calls,
            "baseline_usd": usd(self.baseline_nanos),
            "cost_usd": usd(self.cost_nanos),
            "saved_usd": usd(self.baseline_nanos - self.cost_nanos),
            "saved_by_technique_usd": {t: usd(n) for t, n in sorted(self.by_technique.items())},
            "touched_share": {t: round(c / self.calls, 4) for t, c in sorted(self.touched.items())},
            "shadow_would_have_saved_usd": {
                t: usd(n) for t, n in sorted(self.would_have_saved.items())
            },
        }


def savings_by_technique(
    store: LedgerStore,
    by: Sequence[str] = ("feature",),
    since: datetime | None = None,
    until: datetime | None = None,
) -> list[SavingsRow]:
    """Per group: calls, baseline, cost and the savings per technique — the same store
    queries as `reports.savings_report` (`aggregate`, `savings_by_technique`; exact integer
    nanos) — plus what shadow decisions would have saved, which only the events hold."""
    dims = check_dimensions(by)
    window = Window(since, until)
    q = LedgerQuery(store)
    rows: dict[tuple[str, ...], SavingsRow] = {}
    for keys, agg in q.aggregate(dims, window, {}, _FIELDS):
        rows[tuple(keys.values())] = SavingsRow(
            keys=keys,
            calls=agg["calls"],
            baseline_nanos=agg["baseline_nanos"],
            cost_nanos=agg["cost_nanos"],
        )
    for keys, technique, calls, nanos in q.savings(dims, window, {}):
        row = rows[tuple(keys.values())]
        row.by_technique[technique] = nanos
        row.touched[technique] = calls
    for event in store.events(since=since, until=until):
        shadow = _shadow(event)
        if shadow:
            row = rows[tuple(label(getattr(event, d)) for d in dims)]
            for technique, nanos in shadow.items():
                row.would_have_saved[technique] = row.would_have_saved.get(technique, 0) + nanos
    return sorted(
        rows.values(), key=lambda r: (r.cost_nanos - r.baseline_nanos, tuple(r.keys.values()))
    )


_FIELDS = ("calls", "cost_nanos", "baseline_nanos")


def _shadow(event: Any) -> dict[str, int]:
    """Shadow decisions record `would_save_nanos` in their decision (route, cache, trim…)."""
    found: dict[str, int] = defaultdict(int)
    decisions: dict[str, Any] = dict((event.extra or {}).get("decisions") or {})
    if isinstance(event.route, dict):
        decisions["route"] = event.route
    for technique, decision in decisions.items():
        if isinstance(decision, dict) and decision.get("shadow"):
            nanos = decision.get("would_save_nanos")
            if isinstance(nanos, int):
                found[technique] += nanos
            elif isinstance(decision.get("would_save_usd"), str):
                found[technique] += int(Decimal(decision["would_save_usd"]) * 10**9)
    return dict(found)
