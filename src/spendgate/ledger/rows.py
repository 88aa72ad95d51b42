"""Row shaping both SQL ledgers share: dimension SQL, WHERE clauses, and result rows → the
`LedgerStore` answers.

Why one module: SQLite and PostgreSQL must give the same answers to the same questions
(`(none)` for a missing tag, no empty groups, the same ordering). Written once, they cannot
drift apart; each store keeps only what its dialect really does differently (placeholders,
day partitions, JSON functions).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from spendgate.ledger.event import UsageEvent
from spendgate.ledger.spend import NONE_LABEL, SpendRow, check_dimensions

__all__ = [
    "DIMENSION_SQL",
    "POSTGRES",
    "SQLITE",
    "Dialect",
    "Grouped",
    "OutcomeRow",
    "SavingsGroup",
    "TimeRange",
    "UserCount",
    "active_user_rows",
    "aggregate_rows",
    "checked_filters",
    "group_keys",
    "keyset_pages",
    "label",
    "outcome_rows",
    "savings_rows",
    "sorted_spend",
    "timestamp",
    "where_clause",
]

TimeRange = tuple[datetime | None, datetime | None]
"""[since, until), either end open when None."""
Grouped = tuple[dict[str, str], dict[str, int]]
"""(group keys, aggregates): one row of `LedgerStore.aggregate`."""
SavingsGroup = tuple[dict[str, str], str, int, int]
"""(group keys, technique, calls it acted on, nanos saved)."""
UserCount = tuple[dict[str, str], int]
"""(group keys, distinct tagged users)."""
OutcomeRow = tuple[str | None, str, str, dict[str, int]]
"""(cache outcome, feature, model, `rollups.OUTCOME_AGGREGATES`)."""

DIMENSION_SQL: dict[str, str] = {
    "feature": '"feature"',
    "use_case": '"use_case"',
    "team": '"team"',
    "tenant": '"tenant"',
    "user": '"user"',
    "key_id": '"key_id"',
    "model": 'COALESCE("served_model", "requested_model")',
    "requested_model": '"requested_model"',
    "provider": '"provider"',
    "day": '"day"',
    "status": '"status"',
    "endpoint": '"endpoint"',
}
"""Each report dimension as SQL over a `usage_events` row (the same in both dialects)."""


@dataclass(frozen=True, slots=True)
class Dialect:
    """What a WHERE clause needs to know about a database."""

    mark: str
    """The parameter placeholder."""
    day_partitions: bool
    """Rows are partitioned by `day` (a DATE): windows add day bounds so the planner
    prunes partitions, and a day filter is bound as a date."""


SQLITE = Dialect("?", day_partitions=False)
POSTGRES = Dialect("%s", day_partitions=True)


def timestamp(when: datetime) -> float:
    """Unix time; naive datetimes are taken as UTC, matching the ledger's UTC `day`."""
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


def checked_filters(filters: Mapping[str, str] | None) -> dict[str, str]:
    """`filters` with every name checked against `DIMENSIONS`."""
    filters = filters or {}
    return {name: filters[name] for name in check_dimensions(filters.keys())}


def _filter_value(dialect: Dialect, name: str, value: str) -> Any:
    if name == "status":
        try:
            return int(value)
        except ValueError:
            raise ValueError(f"status filter must be an integer, got {value!r}") from None
    if name == "day" and dialect.day_partitions:
        try:
            return date.fromisoformat(value)
        except ValueError:
            raise ValueError(f"day filter must be YYYY-MM-DD, got {value!r}") from None
    return value


def where_clause(
    dialect: Dialect,
    since: datetime | None,
    until: datetime | None,
    filters: Mapping[str, str] | None,
) -> tuple[str, list[Any]]:
    """(`" WHERE …"` or "", parameters) selecting the events in [since, until) that match
    `filters` (`NONE_LABEL` matches a missing value)."""
    clauses: list[str] = []
    params: list[Any] = []
    m = dialect.mark
    for op, when in ((">=", since), ("<", until)):
        if when is None:
            continue
        clauses.append(f'"ts" {op} {m}')
        params.append(timestamp(when))
        if dialect.day_partitions:
            # Implied by the `ts` bound; there so the planner prunes partitions.
            clauses.append(f'"day" {"<=" if op == "<" else op} {m}')
            params.append(datetime.fromtimestamp(timestamp(when), UTC).date())
    for name, value in checked_filters(filters).items():
        expr = DIMENSION_SQL[name]
        if value == NONE_LABEL:
            clauses.append(f"{expr} IS NULL")
            continue
        params.append(_filter_value(dialect, name, value))
        clauses.append(f"{expr} = {m}")
    return ((" WHERE " + " AND ".join(clauses)) if clauses else ""), params


def label(value: Any) -> str:
    """A group key as reports show it: `NONE_LABEL` for a missing tag, ISO for a date."""
    if value is None:
        return NONE_LABEL
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


def group_keys(dims: Sequence[str], row: Sequence[Any]) -> dict[str, str]:
    """The leading `len(dims)` values of a result row, labelled, by dimension."""
    return {d: label(v) for d, v in zip(dims, row, strict=False)}


def _exact(value: Any) -> Any:
    # PostgreSQL sums BIGINTs to NUMERIC (exact): back to int. SQLite's values pass as is.
    return int(value) if isinstance(value, Decimal) else value


def aggregate_rows(
    dims: Sequence[str], names: Sequence[str], result: Iterable[Any]
) -> list[Grouped]:
    """Rows `(keys…, calls, other aggregates…)` → `Grouped`; a group without calls (an
    ungrouped aggregate over nothing) is no group."""
    n = len(dims)
    return [
        (group_keys(dims, r), dict(zip(names, map(_exact, r[n:]), strict=True)))
        for r in result
        if r[n]
    ]


def savings_rows(dims: Sequence[str], result: Iterable[Any]) -> list[SavingsGroup]:
    """Rows `(keys…, technique, calls, nanos)` → `SavingsGroup`s."""
    n = len(dims)
    return [
        (group_keys(dims, r), str(r[n]), int(r[n + 1]), int(r[n + 2]))
        for r in result
        if r[n] is not None and r[n + 1]
    ]


def active_user_rows(dims: Sequence[str], result: Iterable[Any]) -> list[UserCount]:
    """Rows `(keys…, distinct users)` → `UserCount`s, groups without a user left out."""
    n = len(dims)
    return [(group_keys(dims, r), int(r[n])) for r in result if r[n]]


def outcome_rows(result: Iterable[Any], names: Sequence[str]) -> list[OutcomeRow]:
    """Rows `(cache, feature, model, names…)` → `OutcomeRow`s, empty groups left out."""
    return [
        (cache, label(feature), label(model), dict(zip(names, map(_exact, sums), strict=True)))
        for cache, feature, model, *sums in result
        if sums[0]
    ]


def sorted_spend(grouped: Iterable[Grouped], fields: Sequence[str]) -> list[SpendRow]:
    """`SpendRow`s from `aggregate` rows of `SPEND_FIELDS`, most costly first."""
    rows = [SpendRow(keys, *(agg[a] for a in fields)) for keys, agg in grouped]
    rows.sort(key=lambda row: (-row.cost_nanos, -row.calls, tuple(row.keys.values())))
    return rows


def keyset_pages(
    fetch: Callable[[int, int], Sequence[Sequence[Any]]], limit: int | None, chunk: int
) -> Iterator[UsageEvent]:
    """Events from pages of `(id, COLUMNS…)` rows, `fetch(after_id, size)` each: every page
    is its own short query, so a slow or abandoned export pins no snapshot."""
    remaining = limit
    last_id = 0
    while remaining is None or remaining > 0:
        size = chunk if remaining is None else min(chunk, remaining)
        page = fetch(last_id, size)
        for row in page:
            yield UsageEvent.from_row(tuple(row[1:]))
        if len(page) < size:
            return
        last_id = page[-1][0]
        if remaining is not None:
            remaining -= len(page)
