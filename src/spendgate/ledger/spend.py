"""`SpendRow` and the dimensions a spend query may group or filter by.

Kept apart from any store so every backend (SQLite now, PostgreSQL later) answers with the
same row shape and accepts the same dimension names.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal

from spendgate.call import from_nanos
from spendgate.ledger.event import TAGS

__all__ = ["DIMENSIONS", "NONE_LABEL", "SPEND_FIELDS", "SpendRow", "check_dimensions", "total"]

DIMENSIONS: tuple[str, ...] = (
    *TAGS,
    "model",
    "requested_model",
    "provider",
    "day",
    "status",
    "endpoint",
)
"""`model` is the served model, falling back to the requested one (a call that failed
before any provider answered still lands under the model it asked for)."""

SPEND_FIELDS: tuple[str, ...] = (
    "calls",
    "errors",
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cost_nanos",
    "unknown_cost_calls",
    "baseline_nanos",
    "savings_nanos",
)
"""`SpendRow`'s figures after `keys`, in order, named as in `rollups.AGGREGATES`: what a
spend report shows, and so all it asks a store for."""

NONE_LABEL = "(none)"
"""How a missing tag shows in a report, so its spend is visible instead of dropped."""


def check_dimensions(names: Iterable[str]) -> list[str]:
    """The names, validated, in order, without repeats; ValueError names the allowed ones."""
    out: list[str] = []
    for name in names:
        if name not in DIMENSIONS:
            raise ValueError(f"unknown report dimension {name!r}; allowed: {', '.join(DIMENSIONS)}")
        if name not in out:
            out.append(name)
    return out


@dataclass(slots=True)
class SpendRow:
    """Totals for one group. `cost_nanos` sums only known costs; `unknown_cost_calls` says
    how many calls it leaves out, so an unpriced model never looks free."""

    keys: dict[str, str]
    calls: int = 0
    errors: int = 0
    """Calls answered with status >= 400."""
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cost_nanos: int = 0
    unknown_cost_calls: int = 0
    baseline_nanos: int = 0
    savings_nanos: int = 0

    @property
    def cost_usd(self) -> Decimal:
        return from_nanos(self.cost_nanos)

    @property
    def baseline_usd(self) -> Decimal:
        return from_nanos(self.baseline_nanos)

    @property
    def savings_usd(self) -> Decimal:
        return from_nanos(self.savings_nanos)


def total(rows: Sequence[SpendRow]) -> SpendRow:
    """One row adding up all of `rows` (integer sums, so the total is exact)."""
    return SpendRow({}, *(sum(getattr(row, name) for row in rows) for name in SPEND_FIELDS))
