"""Rollup tables: hourly/daily/monthly aggregates of the ledger, and the SQL that reads them.

Why: a report over 10 M events cannot scan 10 M rows in under a second on SQLite, but the
same report over pre-aggregated buckets reads a few hundred thousand. The rollups are
folded from the stored events by SQL (`fold_statements`) in the background
(`spendgate.ledger.rollup_job`), behind a watermark: every event with id <= watermark is in
the rollups exactly once, every event above it is read raw by the queries below. So they
never disagree with the ledger, a re-sent batch (stored once) is folded once, and a crash
between a write and its fold only means the next fold picks the events up.

Each rollup keeps the report dimensions it can answer and one time bucket. A query picks
the first rollup whose dimensions cover everything it groups or filters by, reads the
buckets wholly inside [since, until) from it and the ragged edges from the raw events, and
adds the two up in one SQL statement — the answer is exact, not approximate.

Six rollups (plus one for savings by technique and one for cache and routing outcomes,
`OUTCOME_ROLLUP`), because one with every dimension
(tenant and user included) would have almost as many rows as the ledger itself; each is
small for the questions it answers. Every rollup costs fold time (an upsert per key per
fold), so there are no more than the reports need: a query filtered to one tenant reads raw
events through the (tenant, ts) index, which is fast.

| table | bucket | dimensions |
| --- | --- | --- |
| `rollup_hour` | hour | feature, team, model |
| `rollup_day` | day | feature, use_case, team, key_id, model, requested_model, provider, |
| | | status, endpoint |
| `rollup_tenant_feature_day` | day | tenant, feature |
| `rollup_user_month` | month | user, tenant |
| `rollup_user_day` | day | user, tenant |
| `rollup_user_feature_month` | month | user, tenant, feature |
| `rollup_savings_hour` | hour | technique, feature, use_case, team, model |
| `rollup_outcome_day` | day | cache, feature, use_case, team, model |

`day` is derived from the bucket, so every rollup but the monthly one can group by day.
A missing tag is stored as `''` (tag values are never empty) so the upsert's unique key
works; queries turn it back into NULL.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from spendgate.ledger.event import UsageEvent
from spendgate.ledger.spend import SPEND_FIELDS

__all__ = [
    "AGGREGATES",
    "CACHE_MIN_TOKENS",
    "DERIVED_COLUMNS",
    "OUTCOME_AGGREGATES",
    "OUTCOME_ROLLUP",
    "OUTCOME_TABLES",
    "ROLLUPS",
    "SAVINGS_ROLLUP",
    "Rollup",
    "apply_statements",
    "clear_statements",
    "derived_values",
    "fold_statements",
    "outcome_apply_statement",
    "outcome_schema_statements",
    "outcomes_sql",
    "plan",
    "recent_outcomes_sql",
    "schema_statements",
    "stage_statements",
    "system_input_nanos",
]

HOUR = 3600
DAY = 86400
MONTH = 0
"""Grain marker for calendar-month buckets (bucket = unix time of the month's first day)."""

AGGREGATES: tuple[str, ...] = (
    *SPEND_FIELDS,
    "system_tokens",
    "input_cost_nanos",
    "system_input_nanos",
)
"""Summed columns every rollup carries: a `SpendRow`'s figures, then the system-prompt
ones. `input_cost_nanos` is the input side of the cost (uncached input, cache reads and
writes); `system_input_nanos` is the part of it spent on system-prompt tokens, pro rata
per call (see `system_input_nanos`)."""

DERIVED_COLUMNS: tuple[str, ...] = ("system_tokens", "input_cost_nanos", "routed", "measured")
"""`usage_events` columns (SQLite ledger) that store what queries would otherwise work out
of the JSON fields `extra` and `route`, per event, at write time. Why: parsing `extra` was
about half the cost of a raw scan (a ragged window's edges: 436 → 236 ms for 288k events
without it) and of staging a fold; `route` is parsed for every routed-share figure.

- `system_tokens`, `input_cost_nanos` (schema v4): `extra`'s two accounting fields — the
  integer, 0 when the field is absent (what `COALESCE(json, 0)` made of it);
- `routed` (v5): 1 when the call was answered by a model routing chose over the requested
  one (not a shadow decision), else 0;
- `measured` (v5): 1 when accounting measured the call's input cost (`extra` has
  `input_cost_nanos`) and it had input tokens, else 0.

NULL — rows written before the version that added the column, or a value that is no
64-bit integer or string where one was expected — means "work it out from the JSON":
every query reads `COALESCE(column, <the JSON expression>)`, so every row counts exactly
as it did before the column existed."""

# Qualified (`usage_events."x"`): SQLite reads an unknown double-quoted name as a string
# literal, so a missing column would sum garbage instead of failing.
_ST = 'COALESCE(usage_events."system_tokens", json_extract("extra", \'$.system_tokens\'), 0)'
_IC = 'COALESCE(usage_events."input_cost_nanos", json_extract("extra", \'$.input_cost_nanos\'), 0)'
_ROUTED = (
    'COALESCE(usage_events."routed", "status" < 400 AND "route" IS NOT NULL '
    "AND COALESCE(json_extract(\"route\", '$.mode'), '') != 'shadow' "
    "AND json_extract(\"route\", '$.served') IS NOT NULL "
    "AND json_extract(\"route\", '$.served') "
    '!= COALESCE(json_extract("route", \'$.requested\'), "requested_model"))'
)
_MEASURED = (
    'COALESCE(usage_events."measured", "input_tokens" > 0 '
    "AND json_extract(\"extra\", '$.input_cost_nanos') IS NOT NULL)"
)

CACHE_MIN_TOKENS = 1024
"""Shortest system prompt a provider caches (OpenAI: all models; Anthropic: Sonnet/Opus —
Haiku needs 2048): the outcome rollup's `cacheable_system_tokens` counts no shorter one."""


def derived_values(event: UsageEvent) -> tuple[int | None, ...]:
    """`DERIVED_COLUMNS` values for one event."""
    extra = event.extra
    return (
        _int_field(extra, "system_tokens"),
        _int_field(extra, "input_cost_nanos"),
        _routed(event),
        int(event.input_tokens > 0 and extra is not None
            and extra.get("input_cost_nanos") is not None),
    )  # fmt: skip


def _int_field(extra: Mapping[str, Any] | None, name: str) -> int | None:
    value = None if extra is None else extra.get(name)
    if value is None:
        return 0
    if type(value) is int and -(2**63) <= value < 2**63:
        return value
    return None  # a float, bool, string or huge int: let SQLite read it from the JSON


def _routed(event: UsageEvent) -> int | None:
    route = event.route
    if event.status >= 400 or not route:
        return 0
    mode, served, requested = route.get("mode"), route.get("served"), route.get("requested")
    if not all(v is None or type(v) is str for v in (mode, served, requested)):
        return None  # odd JSON: let SQLite compare it as `_ROUTED` does
    wanted = event.requested_model if requested is None else requested
    return int(mode != "shadow" and served is not None and served != wanted)


def _per_event(st: str, ic: str) -> dict[str, str]:
    """Each of `AGGREGATES` for one event (its SUM over events is the aggregate), given SQL
    for the event's system tokens (`st`) and input cost (`ic`) from `extra`."""
    return {
        "calls": "1",
        "errors": '"status" >= 400',
        "input_tokens": '"input_tokens"',
        "output_tokens": '"output_tokens"',
        "cache_read_tokens": '"cache_read_tokens"',
        "cost_nanos": 'COALESCE("cost_nanos", 0)',
        "unknown_cost_calls": '"cost_nanos" IS NULL',
        "baseline_nanos": 'COALESCE("baseline_nanos", 0)',
        "savings_nanos": 'COALESCE("savings_nanos", 0)',
        "system_tokens": f'MIN({st}, "input_tokens")',
        "input_cost_nanos": ic,
        "system_input_nanos": (
            f'CASE WHEN "input_tokens" > 0 THEN {ic} * MIN({st}, "input_tokens") '
            '/ "input_tokens" ELSE 0 END'
        ),
    }


_RAW_AGGREGATES: dict[str, str] = {a: f"SUM({e})" for a, e in _per_event(_ST, _IC).items()}
"""The aggregates computed from raw events (ragged edges, unfolded events)."""

_RAW_DIM: dict[str, str] = {
    "feature": '"feature"',
    "use_case": '"use_case"',
    "team": '"team"',
    "tenant": '"tenant"',
    "user": '"user"',
    "key_id": '"key_id"',
    "model": 'COALESCE("served_model", "requested_model")',
    "requested_model": '"requested_model"',
    "provider": '"provider"',
    "status": '"status"',
    "endpoint": '"endpoint"',
    "cache": '"cache"',
}


@dataclass(frozen=True, slots=True)
class Rollup:
    table: str
    grain: int
    """Bucket width in seconds, or `MONTH` for calendar months."""
    dims: tuple[str, ...]
    """Stored key columns, named like the report dimensions."""

    def covers(self, needed: Iterable[str]) -> bool:
        return all(d in self.dims or (d == "day" and self.grain != MONTH) for d in needed)


ROLLUPS: tuple[Rollup, ...] = (
    Rollup("rollup_hour", HOUR, ("feature", "team", "model")),
    Rollup(
        "rollup_day",
        DAY,
        (
            "feature",
            "use_case",
            "team",
            "key_id",
            "model",
            "requested_model",
            "provider",
            "status",
            "endpoint",
        ),
    ),
    Rollup("rollup_tenant_feature_day", DAY, ("tenant", "feature")),
    Rollup("rollup_user_month", MONTH, ("user", "tenant")),
    Rollup("rollup_user_day", DAY, ("user", "tenant")),
    Rollup("rollup_user_feature_month", MONTH, ("user", "tenant", "feature")),
)
"""A query is answered by the first rollup that covers its dimensions and whose buckets
align with both ends of its window; failing that, by the covering rollup with the finest
grain (ragged edges read from raw events)."""

SAVINGS_ROLLUP = Rollup(
    "rollup_savings_hour", HOUR, ("technique", "feature", "use_case", "team", "model")
)

OUTCOME_ROLLUP = Rollup(
    "rollup_outcome_day", DAY, ("cache", "feature", "use_case", "team", "model")
)
"""Cache outcomes, routed calls and measured system prompts per day: the dashboard's cache
hit rate, routing share and prompt-caching estimate, which are not spend figures. Its
columns are `OUTCOME_AGGREGATES`. It came after the other rollups, so it keeps its own
watermark (`rollup_outcome_state`): an older rollup file gets it empty, and the job
backfills it; while it lags far behind, the dashboard reads events as before."""

OUTCOME_AGGREGATES: tuple[str, ...] = (
    "calls",
    "answered",
    "routed",
    "measured",
    "measured_system_tokens",
    "cacheable_system_tokens",
)
"""Calls; answered ones (status < 400); routed ones (see `DERIVED_COLUMNS`); measured
ones, their system-prompt tokens, and of those prompts at least `CACHE_MIN_TOKENS` long
the tokens the call did not already read from the provider's cache."""

_OUTCOME_PER_EVENT: dict[str, str] = {
    "calls": "1",
    "answered": '"status" < 400',
    "routed": _ROUTED,
    "measured": _MEASURED,
    "measured_system_tokens": f'CASE WHEN {_MEASURED} THEN MIN({_ST}, "input_tokens") ELSE 0 END',
    "cacheable_system_tokens": (
        f'CASE WHEN {_MEASURED} AND MIN({_ST}, "input_tokens") >= {CACHE_MIN_TOKENS} '
        f'THEN MAX(MIN({_ST}, "input_tokens") - "cache_read_tokens", 0) ELSE 0 END'
    ),
}
"""`OUTCOME_AGGREGATES` of one raw event (their SUM over events is the aggregate)."""

OUTCOME_TABLES = (OUTCOME_ROLLUP.table, "rollup_outcome_state")


def _key_sql(dim: str) -> str:
    return '"status" INTEGER NOT NULL' if dim == "status" else f"\"{dim}\" TEXT NOT NULL DEFAULT ''"


def _pk(r: Rollup) -> tuple[str, ...]:
    # The tenant rollup leads with tenant: a per-tenant (chargeback) query reads one range,
    # and grouping by tenant streams in key order. The daily user rollup leads with user for
    # the same reason: "spend by user" then needs no sort of every (user, day) row.
    if r.dims[0] == "tenant":
        return ("tenant", "bucket", *r.dims[1:])
    if r.table in ("rollup_user_day", "rollup_user_month"):
        return (*r.dims, "bucket")
    return ("bucket", *r.dims)


def schema_statements() -> list[str]:
    """CREATE statements for every rollup (a ledger migration runs them once). WITHOUT
    ROWID tables clustered on their key: one B-tree per rollup, so an upsert costs one
    B-tree write instead of two (table + unique index)."""
    out: list[str] = []
    for r in (*ROLLUPS, SAVINGS_ROLLUP):
        aggs = AGGREGATES if r is not SAVINGS_ROLLUP else ("calls", "nanos")
        cols = ", ".join(
            [
                '"bucket" INTEGER NOT NULL',
                *(_key_sql(d) for d in r.dims),
                *(f'"{a}" INTEGER NOT NULL DEFAULT 0' for a in aggs),
                "PRIMARY KEY (" + ", ".join(f'"{c}"' for c in _pk(r)) + ")",
            ]
        )
        out.append(f"CREATE TABLE {r.table} ({cols}) WITHOUT ROWID")
    out.append('CREATE TABLE rollup_state ("watermark" INTEGER NOT NULL)')
    out.append("INSERT INTO rollup_state VALUES (0)")
    return out + outcome_schema_statements()


def outcome_schema_statements() -> list[str]:
    """The outcome rollup and its own watermark: every event with id <= it is in the
    rollup. It follows the main watermark (a fold folds it too when the two agree), and the
    job's `backfill` brings it up when it is behind: a rollup file from before it, or
    events another, older process folded without it."""
    r = OUTCOME_ROLLUP
    cols = ", ".join(
        [
            '"bucket" INTEGER NOT NULL',
            *(_key_sql(d) for d in r.dims),
            *(f'"{a}" INTEGER NOT NULL DEFAULT 0' for a in OUTCOME_AGGREGATES),
            "PRIMARY KEY (" + ", ".join(f'"{c}"' for c in _pk(r)) + ")",
        ]
    )
    return [
        f"CREATE TABLE {r.table} ({cols}) WITHOUT ROWID",
        'CREATE TABLE rollup_outcome_state ("watermark" INTEGER NOT NULL)',
        "INSERT INTO rollup_outcome_state VALUES (0)",
    ]


def _bucket_sql(grain: int) -> str:
    if grain == MONTH:
        return "CAST(strftime('%s', \"ts\", 'unixepoch', 'start of month') AS INTEGER)"
    return f'CAST("ts" / {grain} AS INTEGER) * {grain}'


def month_start(ts: float) -> int:
    """Unix time of the first instant of `ts`'s UTC calendar month."""
    d = datetime.fromtimestamp(ts, UTC)
    return int(datetime(d.year, d.month, 1, tzinfo=UTC).timestamp())


def _next_month(ts: int) -> int:
    d = datetime.fromtimestamp(ts, UTC)
    y, m = (d.year + 1, 1) if d.month == 12 else (d.year, d.month + 1)
    return int(datetime(y, m, 1, tzinfo=UTC).timestamp())


_STAGE_COLS: tuple[str, ...] = (
    "h", "d", "mo", *(f"k_{d}" for d in (
        "feature", "use_case", "team", "tenant", "user", "key_id", "model",
        "requested_model", "provider", "status", "endpoint",
    )), *AGGREGATES, "savings", "k_cache", "routed", "measured",
)  # fmt: skip
"""Columns of `temp.fold_src`: one narrow row per event being folded."""

_PER_EVENT: dict[str, str] = _per_event("st", "ic")
"""The fold's per-event values, over a staged row that has `st` and `ic`: the two `extra`
fields, extracted once per event rather than per rollup."""


def fold_statements() -> list[str]:
    """Fold the events with `:lo < id <= :hi` into the rollups: `stage_statements()` then
    `apply_statements()`, run in one transaction that also moves the watermark to `:hi`."""
    return stage_statements() + apply_statements()


def stage_statements() -> list[str]:
    """Copy the events with `:lo < id <= :hi`, narrowed, into `temp.fold_src`: the only
    part of a fold that reads the ledger (so the rollup job can run it as a short read
    transaction of its own, and hold no ledger snapshot during the rest)."""
    return _fold_sql()[:_STAGE_PARTS]


def apply_statements() -> list[str]:
    """Fold `temp.fold_src` into the rollups (reads only temp tables and the rollups)."""
    return _fold_sql()[_STAGE_PARTS:]


_STAGE_PARTS = 3


def _fold_sql() -> list[str]:
    """The fold, entirely in SQL (no Python per event, and the GIL is released while
    SQLite runs it).

    The events are first copied, narrowed, to `temp.fold_src` (JSON fields parsed and
    buckets computed once per event), then each rollup is an `INSERT … SELECT … GROUP BY
    … ON CONFLICT DO UPDATE` over that: seven scans of a narrow in-memory table instead of
    seven scans of the wide event rows, each parsing `extra` again."""
    dims = [
        f"COALESCE({_RAW_DIM[d]}, '')" if d != "status" else '"status"'
        for d in (
            "feature", "use_case", "team", "tenant", "user", "key_id", "model",
            "requested_model", "provider", "status", "endpoint",
        )
    ]  # fmt: skip
    stage = [
        _bucket_sql(HOUR),
        _bucket_sql(DAY),
        _bucket_sql(MONTH),
        *dims,
        *(_PER_EVENT[a] for a in AGGREGATES),
        "NULLIF(NULLIF(\"savings\", '{}'), 'null')",
        "COALESCE(\"cache\", '')",
        "rt",
        "ms",
    ]
    out = [
        "CREATE TEMP TABLE IF NOT EXISTS fold_src ("
        + ", ".join(f'"{c}"' for c in _STAGE_COLS)
        + ")",
        "DELETE FROM temp.fold_src",
        f"INSERT INTO temp.fold_src SELECT {', '.join(stage)} FROM ("
        f"SELECT *, {_ST} AS st, {_IC} AS ic, {_ROUTED} AS rt, {_MEASURED} AS ms "
        'FROM usage_events WHERE "id" > :lo AND "id" <= :hi)',
    ]
    # Two intermediate groupings, each feeding two rollups, so those two do not each sort
    # every staged row: (hour, every rollup_day key) → rollup_hour and rollup_day;
    # (day, user, tenant) → rollup_user_day and rollup_user_month.
    day_keys = ("h", "d", *(f"k_{d}" for d in _ROLLUP_DAY_DIMS))
    user_keys = ("d", "mo", "k_user", "k_tenant")
    for name, keys in (("fold_hour_all", day_keys), ("fold_user_day", user_keys)):
        cols = [*keys, *AGGREGATES]
        out.append(f"CREATE TEMP TABLE IF NOT EXISTS {name} ({_names(cols)})")
        out.append(f"DELETE FROM temp.{name}")
        group = ", ".join(f'"{k}"' for k in keys if k != "mo")  # mo follows from d
        out.append(
            f"INSERT INTO temp.{name} SELECT {_names(keys)}, "
            f"{', '.join(f'SUM({q})' for q in _quoted(AGGREGATES))} FROM temp.fold_src "
            f"GROUP BY {group}"
        )
    source = {
        "rollup_hour": "fold_hour_all",
        "rollup_day": "fold_hour_all",
        "rollup_user_day": "fold_user_day",
        "rollup_user_month": "fold_user_day",
    }
    bucket_col = {HOUR: "h", DAY: "d", MONTH: "mo"}
    for r in ROLLUPS:
        names = _names(("bucket", *r.dims, *AGGREGATES))
        sel = [bucket_col[r.grain], *(f'"k_{d}"' for d in r.dims)]
        sel += [f'SUM("{a}")' for a in AGGREGATES]
        group = ", ".join(str(i + 1) for i in range(len(r.dims) + 1))
        sets = ", ".join(f'"{a}" = "{a}" + excluded."{a}"' for a in AGGREGATES)
        conflict = ", ".join(f'"{c}"' for c in _pk(r))
        out.append(
            f"INSERT INTO {r.table} ({names}) SELECT {', '.join(sel)} "
            f"FROM temp.{source.get(r.table, 'fold_src')} "
            f"WHERE true GROUP BY {group} ON CONFLICT ({conflict}) DO UPDATE SET {sets}"
        )
    sv = SAVINGS_ROLLUP
    skeys = ["j.key"] + [f'"k_{d}"' for d in sv.dims[1:]]
    names = _names(("bucket", *sv.dims, "calls", "nanos"))
    group = ", ".join(str(i + 1) for i in range(len(sv.dims) + 1))
    conflict = ", ".join(f'"{c}"' for c in _pk(sv))
    out.append(
        f"INSERT INTO {sv.table} ({names}) SELECT h, {', '.join(skeys)}, COUNT(*), SUM(j.value) "
        'FROM temp.fold_src, json_each(temp.fold_src."savings") AS j '
        'WHERE temp.fold_src."savings" IS NOT NULL '
        f"GROUP BY {group} ON CONFLICT ({conflict}) DO UPDATE SET "
        '"calls" = "calls" + excluded."calls", "nanos" = "nanos" + excluded."nanos"'
    )
    out += [f"DELETE FROM temp.{t}" for t in ("fold_hour_all", "fold_user_day")]
    return out


def outcome_apply_statement() -> str:
    """Fold `temp.fold_src` into the outcome rollup: after `apply_statements()` when its
    watermark agrees with the main one, alone when the job backfills it."""
    r = OUTCOME_ROLLUP
    names = _names(("bucket", *r.dims, *OUTCOME_AGGREGATES))
    measured_sys = '(CASE WHEN "measured" THEN "system_tokens" ELSE 0 END)'
    sums = [
        "COUNT(*)",
        'SUM("errors" = 0)',
        'SUM("routed")',
        'SUM("measured")',
        f"SUM({measured_sys})",
        f'SUM(CASE WHEN "measured" AND "system_tokens" >= {CACHE_MIN_TOKENS} '
        'THEN MAX("system_tokens" - "cache_read_tokens", 0) ELSE 0 END)',
    ]
    keys = ["d", *(f'"k_{d}"' for d in r.dims)]
    group = ", ".join(str(i + 1) for i in range(len(keys)))
    sets = ", ".join(f'"{a}" = "{a}" + excluded."{a}"' for a in OUTCOME_AGGREGATES)
    conflict = ", ".join(f'"{c}"' for c in _pk(r))
    return (
        f"INSERT INTO {r.table} ({names}) SELECT {', '.join([*keys, *sums])} "
        f"FROM temp.fold_src WHERE true GROUP BY {group} "
        f"ON CONFLICT ({conflict}) DO UPDATE SET {sets}"
    )


def _quoted(names: Iterable[str]) -> list[str]:
    return [f'"{n}"' for n in names]


def _names(names: Iterable[str]) -> str:
    return ", ".join(_quoted(names))


_ROLLUP_DAY_DIMS = (
    "feature", "use_case", "team", "key_id", "model", "requested_model", "provider",
    "status", "endpoint",
)  # fmt: skip


def clear_statements() -> list[str]:
    """Empty every rollup and reset the watermark (before a rebuild)."""
    out = [f"DELETE FROM {r.table}" for r in (*ROLLUPS, SAVINGS_ROLLUP, OUTCOME_ROLLUP)]
    out.append('UPDATE rollup_state SET "watermark" = 0')
    out.append('UPDATE rollup_outcome_state SET "watermark" = 0')
    return out


# ------------------------------------------------------------------ per-event helpers


def system_input_nanos(event: UsageEvent) -> tuple[int, int, int]:
    """(system tokens, input-side cost, system part of it) of one event, from what
    accounting put in `extra`. The system part is pro rata by tokens: a system prompt of
    30% of the input tokens is 30% of the input spend (an approximation when part of the
    input was a cache read, which usually *is* the system prompt)."""
    extra = event.extra
    if not extra or event.input_tokens <= 0:
        return 0, 0, 0
    system = extra.get("system_tokens") or 0
    cost = extra.get("input_cost_nanos") or 0
    if type(system) is not int or type(cost) is not int:
        return 0, 0, 0
    system = min(system, event.input_tokens)
    return system, cost, cost * system // event.input_tokens if cost >= 0 else 0


# -------------------------------------------------------------------------- read side


@dataclass(frozen=True, slots=True)
class Plan:
    """How to answer one query: a rollup for the aligned middle, raw events at the edges."""

    rollup: Rollup | None
    middle: tuple[float | None, float | None] | None
    """Bucket range [start, end) read from the rollup (None = unbounded side)."""
    edges: tuple[tuple[float | None, float | None], ...]
    """Time ranges [start, end) read from raw events."""


def _align(grain: int, since: float | None, until: float | None) -> tuple[int | None, int | None]:
    """The first bucket start >= since and the last bucket start <= until."""
    if grain == MONTH:
        start = None
        if since is not None:
            start = month_start(since)
            if start < since:
                start = _next_month(start)
        end = None if until is None else month_start(until)
        return start, end
    return (
        None if since is None else math.ceil(since / grain) * grain,
        None if until is None else math.floor(until / grain) * grain,
    )


def _plan_with(rollup: Rollup, since: float | None, until: float | None) -> Plan:
    start, end = _align(rollup.grain, since, until)
    if start is not None and end is not None and start >= end:
        return Plan(None, None, ((since, until),))
    edges: list[tuple[float | None, float | None]] = []
    if since is not None and start is not None and start > since:
        edges.append((since, float(start)))
    if until is not None and end is not None and until > end:
        edges.append((float(end), until))
    return Plan(rollup, (start, end), tuple(edges))


def _fineness(rollup: Rollup | None) -> int:
    if rollup is None:
        return 0
    return 31 * DAY if rollup.grain == MONTH else rollup.grain


def plan(
    needed: Iterable[str],
    since: float | None,
    until: float | None,
    rollups: Sequence[Rollup] = ROLLUPS,
) -> Plan:
    """The cheapest exact way to cover [since, until) for a query needing `needed`: the
    first covering rollup aligned with the window, else the finest covering one with raw
    edges, else raw events alone."""
    needed = set(needed)
    covering = [r for r in rollups if r.covers(needed)]
    plans = [_plan_with(r, since, until) for r in covering]
    for p in plans:
        if p.rollup is not None and not p.edges:
            return p
    usable = [p for p in plans if p.rollup is not None]
    if not usable:
        return Plan(None, None, ((since, until),))
    return min(usable, key=lambda p: _fineness(p.rollup))


def _rollup_dim(dim: str) -> str:
    if dim == "day":
        return "strftime('%Y-%m-%d', \"bucket\", 'unixepoch')"
    if dim == "status":
        return '"status"'
    return f"NULLIF(\"{dim}\", '')"


def _raw_dim(dim: str) -> str:
    if dim == "day":
        return '"day"'
    return _RAW_DIM[dim]


def _filter_clause(expr: str, dim: str, value: str, none_label: str, params: list[Any]) -> str:
    if value == none_label:
        return f"{expr} IS NULL"
    if dim == "status":
        try:
            params.append(int(value))
        except ValueError:
            raise ValueError(f"status filter must be an integer, got {value!r}") from None
    else:
        params.append(value)
    return f"{expr} = ?"


def _part(
    source: str,
    dims: Sequence[str],
    dim_sql: Any,
    agg_sql: Sequence[str],
    time_col: str,
    window: tuple[float | None, float | None],
    filters: Mapping[str, str],
    none_label: str,
    group: bool,
    extra_where: Sequence[str] = (),
) -> tuple[str, list[Any]]:
    params: list[Any] = []
    clauses: list[str] = list(extra_where)
    # The unfolded events are the newest ids: read them by rowid range. A unary `+` keeps
    # SQLite from choosing the ts/feature/tenant index, which would walk the whole window.
    plus = "+" if any(w in (_UNFOLDED, _UNFOLDED_OUTCOMES) for w in extra_where) else ""
    lo, hi = window
    if lo is not None:
        clauses.append(f'{plus}"{time_col}" >= ?')
        params.append(lo)
    if hi is not None:
        clauses.append(f'{plus}"{time_col}" < ?')
        params.append(hi)
    for name, value in filters.items():
        if dim_sql is _rollup_dim and name not in ("day", "status"):
            # The stored column itself (not NULLIF(…)), so the rollup's key can be searched.
            params.append("" if value == none_label else value)
            clauses.append(f'"{name}" = ?')
            continue
        expr = dim_sql(name)
        clauses.append(_filter_clause(f"{plus}{expr}", name, value, none_label, params))
    cols = [f"{dim_sql(d)} AS k{i}" for i, d in enumerate(dims)]
    cols += [f"{a} AS a{i}" for i, a in enumerate(agg_sql)]
    if plus:
        # Only the rowid range (`id > watermark`) may drive this scan.
        source = source.replace("usage_events", "usage_events NOT INDEXED", 1)
    sql = f"SELECT {', '.join(cols)} FROM {source}"
    if clauses:
        sql += " WHERE " + " AND ".join(clauses)
    if group and dims:
        if dim_sql is _rollup_dim:
            # By the stored columns, so a rollup whose key starts with them streams.
            keys = [_rollup_dim(d) if d in ("day", "status") else f'"{d}"' for d in dims]
        else:
            keys = [f"k{i}" for i in range(len(dims))]
        sql += " GROUP BY " + ", ".join(keys)
    return sql, params


_UNFOLDED = 'usage_events."id" > (SELECT "watermark" FROM rollup_state)'
_UNFOLDED_OUTCOMES = 'usage_events."id" > (SELECT "watermark" FROM rollup_outcome_state)'
"""Events not folded yet (above the watermark): read raw, in the same statement."""


def _raw_ranges(
    p: Plan, unfolded: str = _UNFOLDED
) -> list[tuple[tuple[float | None, float | None], list[str]]]:
    """Raw reads a plan needs: its ragged edges, and the not-yet-folded events of the
    middle when a rollup answers it."""
    out: list[tuple[tuple[float | None, float | None], list[str]]] = [(e, []) for e in p.edges]
    if p.rollup is not None and p.middle is not None:
        out.append((p.middle, [unfolded]))
    return out


def _summed(
    p: Plan,
    dims: Sequence[str],
    rollup_aggs: Sequence[str],
    raw_aggs: Sequence[str],
    filters: Mapping[str, str],
    none_label: str,
    *,
    rollup_grouped: bool = True,
    raw_source: str = "usage_events",
    raw_dim: Callable[[str], str] = _raw_dim,
    raw_where: Sequence[str] = (),
    unfolded: str = _UNFOLDED,
) -> tuple[str, list[Any]]:
    """One statement for a plan: its rollup middle UNION ALL its raw reads (ragged edges,
    unfolded events), each giving `a0…` per group, summed per group of `dims`."""
    parts: list[str] = []
    params: list[Any] = []
    if p.rollup is not None and p.middle is not None:
        sql, ps = _part(
            p.rollup.table,
            dims,
            _rollup_dim,
            rollup_aggs,
            "bucket",
            p.middle,
            filters,
            none_label,
            group=rollup_grouped,
        )
        parts.append(sql)
        params += ps
    for edge, where in _raw_ranges(p, unfolded):
        sql, ps = _part(
            raw_source,
            dims,
            raw_dim,
            raw_aggs,
            "ts",
            edge,
            filters,
            none_label,
            group=True,
            extra_where=[*raw_where, *where],
        )
        parts.append(sql)
        params += ps
    keys = [f"k{i}" for i in range(len(dims))]
    sums = [f"COALESCE(SUM(a{i}), 0)" for i in range(len(raw_aggs))]
    sql = f"SELECT {', '.join([*keys, *sums])} FROM ({' UNION ALL '.join(parts)})"
    if dims:
        sql += " GROUP BY " + ", ".join(keys)
    return sql, params


def aggregate_sql(
    dims: Sequence[str],
    since: float | None,
    until: float | None,
    filters: Mapping[str, str],
    none_label: str,
    *,
    use_rollups: bool = True,
    fields: Sequence[str] = AGGREGATES,
) -> tuple[str, list[Any], Plan]:
    """One SQL statement answering `fields` (of `AGGREGATES`, in that order) grouped by
    `dims`: rollup middle UNION ALL raw edges, summed per group. Only the fields a report
    shows: each summed column costs about 22 ms per 600,000 rollup rows."""
    p = plan([*dims, *filters], since, until, ROLLUPS if use_rollups else ())
    sql, params = _summed(
        p,
        dims,
        [f'SUM("{a}")' for a in fields] if dims else [f'"{a}"' for a in fields],
        [_RAW_AGGREGATES[a] for a in fields],
        filters,
        none_label,
    )
    return sql, params, p


def savings_sql(
    dims: Sequence[str],
    since: float | None,
    until: float | None,
    filters: Mapping[str, str],
    none_label: str,
    *,
    use_rollups: bool = True,
) -> tuple[str, list[Any]]:
    """Savings by technique: (dims…, calls, nanos) rows; `technique` may be a dim."""
    p = plan([*dims, *filters], since, until, (SAVINGS_ROLLUP,) if use_rollups else ())

    def raw_dim(dim: str) -> str:
        return "j.key" if dim == "technique" else _raw_dim(dim)

    return _summed(
        p,
        dims,
        ['"calls"', '"nanos"'],
        ["COUNT(*)", "SUM(j.value)"],
        filters,
        none_label,
        rollup_grouped=False,
        raw_source='usage_events, json_each(usage_events."savings") AS j',
        raw_dim=raw_dim,
        raw_where=['usage_events."savings" IS NOT NULL'],
    )


def outcomes_sql(
    since: float | None,
    until: float | None,
    filters: Mapping[str, str],
    none_label: str,
    *,
    use_rollups: bool = True,
) -> tuple[str, list[Any]] | None:
    """(cache, feature, model, `OUTCOME_AGGREGATES`…) rows over [since, until): the outcome
    rollup's days, raw edges and unfolded events, in one statement. None when the rollup
    cannot serve the filters (tenant, user…): a raw pass over a whole window of a big
    ledger is the caller's call to make, not this function's."""
    dims = ["cache", "feature", "model"]
    p = plan([*dims, *filters], since, until, (OUTCOME_ROLLUP,) if use_rollups else ())
    if use_rollups and p.rollup is None and not set(filters) <= set(OUTCOME_ROLLUP.dims):
        return None
    return _summed(
        p,
        dims,
        [f'SUM("{a}")' for a in OUTCOME_AGGREGATES],
        [f"SUM({_OUTCOME_PER_EVENT[a]})" for a in OUTCOME_AGGREGATES],
        filters,
        none_label,
        unfolded=_UNFOLDED_OUTCOMES,
    )


def recent_outcomes_sql(where: str, limit: int) -> str:
    """`outcomes_sql`'s rows from raw events alone, over the `limit` most recent events that
    `where` (a `WHERE …` clause on `usage_events`, or "") selects: a bounded pass for what
    the outcome rollup cannot answer. The subquery keeps the table's name, so the per-event
    expressions (qualified `usage_events."…"`) read from it."""
    sums = [f"COALESCE(SUM({_OUTCOME_PER_EVENT[a]}), 0)" for a in OUTCOME_AGGREGATES]
    return (
        f'SELECT "cache", "feature", COALESCE("served_model", "requested_model"), '
        f"{', '.join(sums)} FROM (SELECT * FROM usage_events{where} "
        f'ORDER BY "ts" DESC LIMIT {int(limit)}) AS usage_events GROUP BY 1, 2, 3'
    )


def active_users_sql(
    dims: Sequence[str],
    since: float | None,
    until: float | None,
    filters: Mapping[str, str],
    none_label: str,
    *,
    use_rollups: bool = True,
) -> tuple[str, list[Any]]:
    """(dims…, distinct users) rows: calls with no user tag are not counted as a user."""
    # Coarsest first: a calendar month reads one monthly bucket per user, not 30 daily ones.
    user_rollups = (
        tuple(sorted((r for r in ROLLUPS if "user" in r.dims), key=_fineness, reverse=True))
        if use_rollups
        else ()
    )
    p = plan([*dims, *filters, "user"], since, until, user_rollups)
    parts: list[str] = []
    params: list[Any] = []
    if p.rollup is not None and p.middle is not None:
        sql, ps = _part(
            p.rollup.table,
            [*dims, "user"],
            _rollup_dim,
            [],
            "bucket",
            p.middle,
            filters,
            none_label,
            group=False,
            extra_where=["\"user\" != ''"],
        )
        # No DISTINCT here: a rollup row is already one (user, …) key per bucket, and the
        # outer COUNT(DISTINCT) dedups anyway — a second temp B-tree over 400k rows of
        # `rollup_user_feature_month` cost 634 ms against 262 ms without (10 M events).
        parts.append(sql)
        params += ps
    for edge, where in _raw_ranges(p):
        sql, ps = _part(
            "usage_events",
            [*dims, "user"],
            _raw_dim,
            [],
            "ts",
            edge,
            filters,
            none_label,
            group=False,
            extra_where=['"user" IS NOT NULL', *where],
        )
        parts.append(sql.replace("SELECT ", "SELECT DISTINCT ", 1))
        params += ps
    keys = [f"k{i}" for i in range(len(dims))]
    ukey = f"k{len(dims)}"
    sql = (
        f"SELECT {', '.join([*keys, f'COUNT(DISTINCT {ukey})'])} FROM ({' UNION ALL '.join(parts)})"
    )
    if dims:
        sql += " GROUP BY " + ", ".join(keys)
    return sql, params
