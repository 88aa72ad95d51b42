"""Figures folded from events in Python: the one slow path, for where SQL cannot answer.

A store answers `outcomes`/`recent_outcomes` in SQL; a SQLite built without JSON functions
cannot, and then the dashboard folds a bounded run of `events()` here instead. The rows are
the stores' own `OutcomeRow`s, so every consumer reads one shape.
"""

from __future__ import annotations

from collections.abc import Iterable

from spendgate.ledger.event import UsageEvent
from spendgate.ledger.rollups import CACHE_MIN_TOKENS, OUTCOME_AGGREGATES
from spendgate.ledger.rows import OutcomeRow
from spendgate.ledger.spend import NONE_LABEL

__all__ = ["outcome_rows_of"]


def outcome_rows_of(events: Iterable[UsageEvent]) -> list[OutcomeRow]:
    """`LedgerStore.outcomes()`'s rows, summed over `events`."""
    groups: dict[tuple[str | None, str, str], dict[str, int]] = {}
    for event in events:
        key = (event.cache, event.feature or NONE_LABEL, event.model)
        acc = groups.setdefault(key, dict.fromkeys(OUTCOME_AGGREGATES, 0))
        acc["calls"] += 1
        if event.status < 400:
            acc["answered"] += 1
            acc["routed"] += _routed(event)
        system = _measured_system_tokens(event)
        if system is not None:
            acc["measured"] += 1
            acc["measured_system_tokens"] += system
            if system >= CACHE_MIN_TOKENS:
                acc["cacheable_system_tokens"] += max(system - event.cache_read_tokens, 0)
    return [(*key, acc) for key, acc in groups.items()]


def _routed(event: UsageEvent) -> bool:
    """Answered by another model than the one asked for, routing's choice (not shadow)."""
    route = event.route
    return bool(
        route
        and route.get("mode") != "shadow"
        and route.get("served") not in (None, route.get("requested", event.requested_model))
    )


def _measured_system_tokens(event: UsageEvent) -> int | None:
    """The call's system-prompt tokens when accounting measured its input cost, else None."""
    extra = event.extra or {}
    cost, system = extra.get("input_cost_nanos"), extra.get("system_tokens") or 0
    if cost is None or event.input_tokens <= 0 or type(system) is not int:
        return None
    return min(system, event.input_tokens)
