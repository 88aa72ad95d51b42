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

from spendgate.call import from_nanos
from spendgate.ledger import LedgerStore

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


def _key(event: Any, dim: str) -> str:
    if dim == "day":
        return str(event.day)
    if dim == "model":
        return str(event.served_model or event.requested_model)
    value = getattr(event, dim, None)
    return "(none)" if value in (None, "") else str(value)


def savings_by_technique(
    store: LedgerStore,
    by: Sequence[str] = ("feature",),
    since: datetime | None = None,
    until: datetime | None = None,
) -> list[SavingsRow]:
    """Group events and add up savings per technique (integer nanos, exact)."""
    rows: dict[tuple[str, ...], SavingsRow] = {}
    for event in store.events(since=since, until=until):
        key = tuple(_key(event, d) for d in by)
        row = rows.get(key)
        if row is None:
            row = rows[key] = SavingsRow(keys=dict(zip(by, key, strict=True)))
        row.calls += 1
        if event.cost_nanos is not None:
            row.cost_nanos += event.cost_nanos
            row.baseline_nanos += (
                event.baseline_nanos if event.baseline_nanos is not None else event.cost_nanos
            )
        for technique, nanos in (event.savings or {}).items():
            row.by_technique[technique] = row.by_technique.get(technique, 0) + int(nanos)
            row.touched[technique] = row.touched.get(technique, 0) + 1
        for technique, nanos in _shadow(event).items():
            row.would_have_saved[technique] = row.would_have_saved.get(technique, 0) + nanos
    ordered = sorted(rows.values(), key=lambda r: r.baseline_nanos - r.cost_nanos, reverse=True)
    return ordered


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
