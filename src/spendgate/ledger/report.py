"""Spend reports: parse the CLI's time window, query a ledger, render table / JSON / CSV.

Money is rendered from integer nanos through Decimal: the table rounds to 6 decimals for
reading, JSON and CSV carry all 9 so a spreadsheet total matches the ledger to the nano.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

import orjson
from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from spendgate.call import format_usd, from_nanos
from spendgate.ledger.backends import open_ledger
from spendgate.ledger.spend import SpendRow, check_dimensions, total

__all__ = ["FORMATS", "csv_text", "parse_when", "render_report", "report_command"]

_NUMBER = re.compile(r"-?\d+(\.\d+)?([eE][+-]?\d+)?")
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "\n")


def _safe_cell(value: Any) -> Any:
    """A cell a spreadsheet shows as text, never runs: tags are client-supplied, and a tag
    like `=HYPERLINK(…)` would otherwise be a formula in whoever opens the export (OWASP's
    CSV-injection advice: prefix a quote). Numbers, negative ones included, stay numbers."""
    formula = isinstance(value, str) and value.startswith(_FORMULA_START)
    return "'" + value if formula and not _NUMBER.fullmatch(value) else value


def csv_text(rows: Sequence[Mapping[str, Any]], fields: Sequence[str]) -> str:
    """Rows as CSV, every cell escaped against formula injection."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(fields), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _safe_cell(v) for k, v in row.items()})
    return buf.getvalue()


FORMATS = ("table", "json", "csv")

_RELATIVE = re.compile(r"^\s*(\d+)\s*([mhdw])\s*$", re.IGNORECASE)
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_EXACT = Decimal("0.000000001")

_NUMBERS: tuple[tuple[str, str], ...] = (
    ("calls", "calls"),
    ("errors", "errors"),
    ("input_tokens", "input tok"),
    ("output_tokens", "output tok"),
    ("cache_read_tokens", "cache read tok"),
)
_MONEY: tuple[tuple[str, str], ...] = (
    ("cost", "cost $"),
    ("baseline", "baseline $"),
    ("savings", "saved $"),
)


def parse_when(text: str, *, end: bool = False, now: datetime | None = None) -> datetime:
    """A point in time from the CLI, in UTC.

    Relative: "30m", "24h", "7d", "2w" mean that long before `now`. ISO datetimes are taken
    as UTC unless they carry an offset. A bare ISO date is the start of that UTC day — or,
    with `end=True` (for `--until`), the start of the next day, so `--until 2026-11-30`
    includes the 30th.
    """
    now = now or datetime.now(UTC)
    m = _RELATIVE.match(text)
    if m:
        return now - timedelta(**{_UNITS[m.group(2).lower()]: int(m.group(1))})
    stripped = text.strip()
    try:
        if len(stripped) == 10:
            day = date.fromisoformat(stripped)
            start = datetime(day.year, day.month, day.day, tzinfo=UTC)
            return start + timedelta(days=1) if end else start
        when = datetime.fromisoformat(stripped)
    except ValueError:
        raise ValueError(
            f"cannot read time {text!r}: use an ISO date/datetime (2026-11-01, "
            "2026-11-01T12:00) or a relative span (30m, 24h, 7d, 2w)"
        ) from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def _money(nanos: int, quantum: Decimal = _EXACT) -> str:
    return format(from_nanos(nanos).quantize(quantum, rounding=ROUND_HALF_EVEN), "f")


def _record(row: SpendRow, by: Sequence[str]) -> dict[str, Any]:
    out: dict[str, Any] = {d: row.keys.get(d, "") for d in by}
    for attr, _ in _NUMBERS:
        out[attr] = getattr(row, attr)
    out["cost_usd"] = _money(row.cost_nanos)
    out["unknown_cost_calls"] = row.unknown_cost_calls
    out["baseline_usd"] = _money(row.baseline_nanos)
    out["savings_usd"] = _money(row.savings_nanos)
    return out


def render_report(rows: Sequence[SpendRow], by: Sequence[str], fmt: str) -> str:
    """Rows as "table" (for people), "json" (rows + totals, money as exact decimal
    strings) or "csv" (rows only, one header line, exact money)."""
    by = list(by)
    if fmt == "json":
        doc = {
            "by": by,
            "rows": [_record(r, by) for r in rows],
            "totals": _record(total(rows), []),
        }
        return orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode() + "\n"
    if fmt == "csv":
        fields = [
            *by,
            *[a for a, _ in _NUMBERS],
            "cost_usd",
            "unknown_cost_calls",
            "baseline_usd",
            "savings_usd",
        ]
        return csv_text([_record(r, by) for r in rows], fields)
    if fmt == "table":
        return _table(rows, by)
    raise ValueError(f"unknown report format {fmt!r}; use one of {', '.join(FORMATS)}")


def _table(rows: Sequence[SpendRow], by: list[str]) -> str:
    t = total(rows)
    table = Table(box=box.SIMPLE_HEAD, show_footer=True, footer_style="bold")
    labels = by or ["scope"]
    for i, dim in enumerate(labels):
        table.add_column(dim, footer="TOTAL" if i == 0 else "", no_wrap=True)
    for attr, header in _NUMBERS:
        table.add_column(header, footer=f"{getattr(t, attr):,}", justify="right")
    table.add_column("cost $", footer=format_usd(from_nanos(t.cost_nanos)), justify="right")
    table.add_column("unpriced calls", footer=f"{t.unknown_cost_calls:,}", justify="right")
    table.add_column("baseline $", footer=format_usd(from_nanos(t.baseline_nanos)), justify="right")
    table.add_column("saved $", footer=format_usd(from_nanos(t.savings_nanos)), justify="right")
    for r in rows:
        # Text(), not str: tag values are user data and must not be read as rich markup.
        keys = [Text(r.keys.get(d, "")) for d in by] or [Text("all")]
        table.add_row(
            *keys,
            *[f"{getattr(r, attr):,}" for attr, _ in _NUMBERS],
            format_usd(from_nanos(r.cost_nanos)),
            f"{r.unknown_cost_calls:,}",
            format_usd(from_nanos(r.baseline_nanos)),
            format_usd(from_nanos(r.savings_nanos)),
        )
    buf = io.StringIO()
    console = Console(
        file=buf,
        width=1000,
        color_system=None,
        force_terminal=False,
        emoji=False,
        markup=False,
        highlight=False,
    )
    console.print(table)
    lines = [line.rstrip() for line in buf.getvalue().splitlines()]
    if t.unknown_cost_calls:
        lines.append(
            f"{t.unknown_cost_calls:,} calls have no known price; their cost is not in the totals."
        )
    return "\n".join(lines) + "\n"


def report_command(
    ledger_url: str,
    by: str = "feature",
    since: str | None = None,
    until: str | None = None,
    fmt: str = "table",
    filters: Mapping[str, str] | None = None,
) -> str:
    """Body of `spendgate report`: `by` is comma-separated dimensions ("feature,model")."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown report format {fmt!r}; use one of {', '.join(FORMATS)}")
    dims = check_dimensions(d.strip() for d in by.split(",") if d.strip())
    now = datetime.now(UTC)
    start = parse_when(since, now=now) if since else None
    end = parse_when(until, end=True, now=now) if until else None
    if start and end and start >= end:
        raise ValueError(f"--since ({start.isoformat()}) is not before --until ({end.isoformat()})")
    store = open_ledger(ledger_url, create=False, read_only=True)
    try:
        rows = store.spend(dims, since=start, until=end, filters=dict(filters or {}))
    finally:
        store.close()
    return render_report(rows, dims, fmt)
