"""`LedgerStore`: the contract every ledger backend meets, and the half of it they share.

Every method a caller uses is declared here — reports, the dashboard and alerts call them
directly, never probe a store for a faster one. The public methods are written once, on
top of a few dialect hooks (`_fetch` and the `_…_sql` builders) that `SQLiteLedger`
(rollup-backed) and `PostgresLedger` (partitioned raw events) implement; the rows both
return are shaped by `ledger.rows`, so both give the same answers.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any, ClassVar, Self

import spendgate.ledger.rows as _rows
from spendgate.ledger.event import UsageEvent
from spendgate.ledger.rollups import AGGREGATES, OUTCOME_AGGREGATES
from spendgate.ledger.rows import TimeRange
from spendgate.ledger.spend import SPEND_FIELDS, SpendRow, check_dimensions

__all__ = ["LedgerStore", "aggregate_fields"]

Query = tuple[str, list[Any]]
"""(SQL, parameters)."""


def aggregate_fields(wanted: Sequence[str] | None) -> tuple[str, ...]:
    """`wanted` in `AGGREGATES` order, `calls` first (a group with no calls is no group)."""
    if wanted is None:
        return AGGREGATES
    unknown = set(wanted) - set(AGGREGATES)
    if unknown:
        raise ValueError(f"unknown aggregates: {', '.join(sorted(unknown))}")
    return tuple(a for a in AGGREGATES if a == "calls" or a in wanted)


class LedgerStore(ABC):
    """Append batches idempotently, answer grouped queries, stream events back.

    Windows are [since, until) on the call's receive time (naive datetimes are UTC);
    `filters` map a dimension (`spend.DIMENSIONS`) to the one value to keep, `(none)`
    keeping calls without it."""

    dialect: ClassVar[_rows.Dialect]

    # -- what each backend does its own way ---------------------------------------------

    @abstractmethod
    def write_batch(self, events: Sequence[UsageEvent]) -> None:
        """Store all of `events` atomically. Must be idempotent per request_id: the writer
        re-sends a batch whose outcome it could not see."""

    @abstractmethod
    def count(self) -> int:
        """Events stored."""

    @abstractmethod
    def close(self) -> None: ...

    @property
    @abstractmethod
    def parallel_reads(self) -> bool:
        """Queries from several threads run at once (each on a connection of its own), so
        a view's independent queries are worth running in parallel."""

    @abstractmethod
    def _fetch(self, sql: str, params: list[Any]) -> list[Any]:
        """All rows of one read query."""

    @abstractmethod
    def _aggregate_sql(
        self,
        dims: list[str],
        window: TimeRange,
        filters: dict[str, str],
        names: Sequence[str],
    ) -> Query:
        """Rows `(dims…, names…)`, one per group."""

    @abstractmethod
    def _savings_sql(self, dims: list[str], window: TimeRange, filters: dict[str, str]) -> Query:
        """Rows `(dims…, technique, calls, nanos)`."""

    @abstractmethod
    def _active_users_sql(
        self, dims: list[str], window: TimeRange, filters: dict[str, str]
    ) -> Query:
        """Rows `(dims…, distinct users)`."""

    @abstractmethod
    def _outcome_result(self, window: TimeRange, filters: dict[str, str]) -> list[Any] | None:
        """Rows `(cache, feature, model, OUTCOME_AGGREGATES…)`, or None (see `outcomes`)."""

    @abstractmethod
    def _recent_outcomes_sql(self, where: str, limit: int) -> str:
        """`_outcome_result`'s rows over the `limit` newest events `where` selects."""

    @abstractmethod
    def _events_sql(self, where: str) -> str:
        """`SELECT id, COLUMNS… … {where} ORDER BY id LIMIT <mark>`."""

    # -- the contract, written once -------------------------------------------------------

    def spend(
        self,
        by: Sequence[str],
        since: datetime | None = None,
        until: datetime | None = None,
        filters: Mapping[str, str] | None = None,
    ) -> list[SpendRow]:
        """Totals per group of `by` over [since, until), most costly first."""
        grouped = self.aggregate(by, since, until, filters, fields=SPEND_FIELDS)
        return _rows.sorted_spend(grouped, SPEND_FIELDS)

    def aggregate(
        self,
        by: Sequence[str],
        since: datetime | None = None,
        until: datetime | None = None,
        filters: Mapping[str, str] | None = None,
        *,
        fields: Sequence[str] | None = None,
    ) -> list[_rows.Grouped]:
        """(group keys, aggregates) per group of `by`: every one in `rollups.AGGREGATES`,
        or only `fields` of them (plus `calls`, which says whether a group exists)."""
        dims = check_dimensions(by)
        names = aggregate_fields(fields)
        flt = _rows.checked_filters(filters)
        sql, params = self._aggregate_sql(dims, (since, until), flt, names)
        return _rows.aggregate_rows(dims, names, self._fetch(sql, params))

    def savings_by_technique(
        self,
        by: Sequence[str] = (),
        since: datetime | None = None,
        until: datetime | None = None,
        filters: Mapping[str, str] | None = None,
    ) -> list[_rows.SavingsGroup]:
        """(group keys, technique, calls it acted on, nanos saved) per group of `by`."""
        dims = check_dimensions(by)
        flt = _rows.checked_filters(filters)
        sql, params = self._savings_sql(dims, (since, until), flt)
        return _rows.savings_rows(dims, self._fetch(sql, params))

    def active_users(
        self,
        by: Sequence[str] = (),
        since: datetime | None = None,
        until: datetime | None = None,
        filters: Mapping[str, str] | None = None,
    ) -> list[_rows.UserCount]:
        """(group keys, distinct tagged users) per group of `by` over [since, until)."""
        dims = check_dimensions(by)
        flt = _rows.checked_filters(filters)
        sql, params = self._active_users_sql(dims, (since, until), flt)
        return _rows.active_user_rows(dims, self._fetch(sql, params))

    def outcomes(
        self,
        since: datetime | None = None,
        until: datetime | None = None,
        filters: Mapping[str, str] | None = None,
    ) -> list[_rows.OutcomeRow] | None:
        """(cache outcome, feature, model, `rollups.OUTCOME_AGGREGATES`) per group over
        [since, until), exact. None when the store cannot answer cheaply (SQLite: a filter
        its outcome rollup does not hold, or that rollup far behind): then
        `recent_outcomes` gives a bounded answer."""
        result = self._outcome_result((since, until), _rows.checked_filters(filters))
        return None if result is None else _rows.outcome_rows(result, OUTCOME_AGGREGATES)

    def recent_outcomes(
        self,
        since: datetime | None,
        until: datetime | None,
        filters: Mapping[str, str] | None,
        limit: int,
    ) -> list[_rows.OutcomeRow]:
        """`outcomes()`'s rows over the `limit` most recent events in [since, until) that
        match `filters`, read raw: the bounded answer where `outcomes` has none."""
        where, params = _rows.where_clause(self.dialect, since, until, filters)
        result = self._fetch(self._recent_outcomes_sql(where, limit), params)
        return _rows.outcome_rows(result, OUTCOME_AGGREGATES)

    def events(
        self,
        limit: int | None = None,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        filters: Mapping[str, str] | None = None,
        chunk: int = 1000,
    ) -> Iterator[UsageEvent]:
        """Events in write order, read in keyset-paged chunks (each its own short read)."""
        where, params = _rows.where_clause(self.dialect, since, until, filters)
        m = self.dialect.mark
        sql = self._events_sql(where + (" AND" if where else " WHERE") + f' "id" > {m}')

        def page(after: int, size: int) -> list[Any]:
            return self._fetch(sql, [*params, after, size])

        yield from _rows.keyset_pages(page, limit, chunk)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
