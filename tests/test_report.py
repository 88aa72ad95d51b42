"""Spend reports over a real SQLite ledger. Expected figures are recomputed here from the
fixture events in plain Python, never copied from the code's output."""

from __future__ import annotations

import csv
import io
import json
import random
from collections import defaultdict
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from spendgate.call import NANOS_PER_USD
from spendgate.ledger import (
    DIMENSIONS,
    SpendRow,
    SQLiteLedger,
    UsageEvent,
    parse_when,
    render_report,
    report_command,
)

DAY0 = datetime(2026, 11, 1, tzinfo=UTC)


def make_events(n: int = 3000, seed: int = 7) -> list[UsageEvent]:
    rnd = random.Random(seed)
    out = []
    for i in range(n):
        requested = rnd.choice(["gpt-4o", "gpt-4o-mini", "claude-sonnet-4-5"])
        served = rnd.choice([None, requested, "gpt-4o-mini"])
        status = rnd.choice([200] * 8 + [429, 500])
        known = rnd.random() > 0.1
        savings = {"routing": rnd.randrange(0, 10**6)} if rnd.random() < 0.3 else {}
        out.append(
            UsageEvent(
                request_id=f"sg-{i}",
                ts=(DAY0 + timedelta(seconds=rnd.uniform(0, 4 * 86400))).timestamp(),
                endpoint=rnd.choice(["chat", "messages"]),
                api="openai",
                feature=rnd.choice(["search", "summarize", "chat", None]),
                team=rnd.choice(["core", "growth", None]),
                tenant=rnd.choice(["acme", "globex"]),
                requested_model=requested,
                served_model=served,
                provider=rnd.choice(["openai", "anthropic", None]),
                input_tokens=rnd.randrange(0, 5000),
                output_tokens=rnd.randrange(0, 2000),
                cache_read_tokens=rnd.randrange(0, 1000),
                # Odd nano amounts: a float sum of these in dollars would not be exact.
                cost_nanos=rnd.randrange(1, 50_000_000) if known else None,
                baseline_nanos=rnd.randrange(1, 80_000_000) if rnd.random() > 0.2 else None,
                savings=savings,
                status=status,
                latency_ms=rnd.uniform(10, 2000),
            )
        )
    return out


def key_of(e: UsageEvent, dim: str) -> str:
    value: object = {
        "model": e.served_model or e.requested_model,
        "day": datetime.fromtimestamp(e.ts, UTC).date().isoformat(),
    }.get(dim, getattr(e, dim))
    return "(none)" if value is None else str(value)


def expected(
    events: Iterable[UsageEvent], by: list[str], keep: Callable[[UsageEvent], bool] = bool
) -> dict[tuple[str, ...], dict[str, int]]:
    acc: dict[tuple[str, ...], dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for e in events:
        if not keep(e):
            continue
        g = acc[tuple(key_of(e, d) for d in by)]
        g["calls"] += 1
        g["errors"] += e.status >= 400
        g["input_tokens"] += e.input_tokens
        g["output_tokens"] += e.output_tokens
        g["cache_read_tokens"] += e.cache_read_tokens
        g["cost_nanos"] += e.cost_nanos or 0
        g["unknown_cost_calls"] += e.cost_nanos is None
        g["baseline_nanos"] += e.baseline_nanos or 0
        g["savings_nanos"] += sum(e.savings.values())
    return {k: dict(v) for k, v in acc.items()}


@pytest.fixture(scope="module")
def ledger(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[UsageEvent]]:
    path = tmp_path_factory.mktemp("report") / "ledger.db"
    events = make_events()
    store = SQLiteLedger(path)
    for start in range(0, len(events), 400):
        store.write_batch(events[start : start + 400])
    store.close()
    return path, events


FIELDS = (
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


def as_dict(rows: list[SpendRow]) -> dict[tuple[str, ...], dict[str, int]]:
    return {tuple(r.keys.values()): {f: getattr(r, f) for f in FIELDS} for r in rows}


@pytest.mark.parametrize(
    "by", [["feature"], ["feature", "model"], ["team", "day", "status"], ["provider"], []]
)
def test_grouping_matches_an_independent_sum(
    ledger: tuple[Path, list[UsageEvent]], by: list[str]
) -> None:
    path, events = ledger
    store = SQLiteLedger(path)
    rows = store.spend(by)
    store.close()
    assert as_dict(rows) == expected(events, by)
    costs = [r.cost_nanos for r in rows]
    assert costs == sorted(costs, reverse=True)


def test_since_until_and_filters(ledger: tuple[Path, list[UsageEvent]]) -> None:
    path, events = ledger
    since, until = DAY0 + timedelta(days=1), DAY0 + timedelta(days=2, hours=12)
    store = SQLiteLedger(path)
    rows = store.spend(
        ["feature", "model"], since=since, until=until, filters={"tenant": "acme", "team": "(none)"}
    )
    store.close()

    def keep(e: UsageEvent) -> bool:
        return (
            since.timestamp() <= e.ts < until.timestamp() and e.tenant == "acme" and e.team is None
        )

    want = expected(events, ["feature", "model"], keep)
    assert want  # the window is not empty, or this proves nothing
    assert as_dict(rows) == want


def test_money_is_exact_and_unknown_cost_is_not_zero(
    ledger: tuple[Path, list[UsageEvent]],
) -> None:
    path, events = ledger
    store = SQLiteLedger(path)
    rows = store.spend(["feature"])
    store.close()
    for row in rows:
        mine = [e for e in events if key_of(e, "feature") == row.keys["feature"]]
        exact = sum((Decimal(e.cost_nanos) for e in mine if e.cost_nanos is not None), Decimal(0))
        assert row.cost_usd == exact / NANOS_PER_USD
        assert isinstance(row.cost_usd, Decimal)
        assert row.unknown_cost_calls == sum(e.cost_nanos is None for e in mine) > 0


def test_unknown_dimension_names_the_allowed_ones(tmp_path: Path) -> None:
    store = SQLiteLedger(tmp_path / "l.db")
    with pytest.raises(ValueError, match=r"allowed: .*feature.*endpoint"):
        store.spend(["feature", "prompt"])
    with pytest.raises(ValueError, match="allowed"):
        store.spend(["feature"], filters={"colour": "red"})
    store.close()


def test_json_and_csv_parse_back_to_the_same_money(
    ledger: tuple[Path, list[UsageEvent]],
) -> None:
    path, events = ledger
    store = SQLiteLedger(path)
    by = ["feature", "model"]
    rows = store.spend(by)
    store.close()
    want = expected(events, by)

    doc = json.loads(render_report(rows, by, "json"))
    assert doc["by"] == by
    for obj in doc["rows"]:
        g = want[(obj["feature"], obj["model"])]
        assert Decimal(obj["cost_usd"]) * NANOS_PER_USD == g["cost_nanos"]
        assert Decimal(obj["savings_usd"]) * NANOS_PER_USD == g["savings_nanos"]
        assert obj["unknown_cost_calls"] == g["unknown_cost_calls"]
    all_cost = sum(e.cost_nanos or 0 for e in events)
    assert Decimal(doc["totals"]["cost_usd"]) * NANOS_PER_USD == all_cost
    assert doc["totals"]["calls"] == len(events)

    parsed = list(csv.DictReader(io.StringIO(render_report(rows, by, "csv"))))
    assert len(parsed) == len(want)
    assert sum(Decimal(r["cost_usd"]) for r in parsed) * NANOS_PER_USD == all_cost
    assert {(r["feature"], r["model"]) for r in parsed} == set(want)


def test_table_has_rows_and_a_total_line(ledger: tuple[Path, list[UsageEvent]]) -> None:
    path, events = ledger
    store = SQLiteLedger(path)
    rows = store.spend(["feature"])
    store.close()
    text = render_report(rows, ["feature"], "table")
    all_cost = sum(e.cost_nanos or 0 for e in events)
    shown = (Decimal(all_cost) / NANOS_PER_USD).quantize(Decimal("0.01"))  # dollars: cents
    total_line = next(line for line in text.splitlines() if "TOTAL" in line)
    assert f"{shown:,}" in total_line
    assert "(none)" in text and "no known price" in text
    with pytest.raises(ValueError, match="format"):
        render_report(rows, ["feature"], "xml")


def test_rich_markup_in_tags_is_shown_literally(tmp_path: Path) -> None:
    store = SQLiteLedger(tmp_path / "l.db")
    store.write_batch(
        [
            UsageEvent(
                request_id="sg-1",
                ts=DAY0.timestamp(),
                endpoint="chat",
                api="openai",
                requested_model="m",
                feature="[bold]x[/bold] :smile:",
                status=200,
                latency_ms=1.0,
                cost_nanos=1,
            )
        ]
    )
    rows = store.spend(["feature"])
    store.close()
    assert "[bold]x[/bold] :smile:" in render_report(rows, ["feature"], "table")


def test_report_command_end_to_end(ledger: tuple[Path, list[UsageEvent]]) -> None:
    path, events = ledger
    out = report_command(
        f"sqlite:///{path}",
        by="day, model",
        since="2026-11-02",
        until="2026-11-03",  # a bare --until date includes that whole day
        fmt="json",
        filters={"status": "200"},
    )
    doc = json.loads(out)
    start, end = DAY0 + timedelta(days=1), DAY0 + timedelta(days=3)
    want = expected(
        events,
        ["day", "model"],
        lambda e: start.timestamp() <= e.ts < end.timestamp() and e.status == 200,
    )
    assert {(r["day"], r["model"]) for r in doc["rows"]} == set(want)
    assert {r["day"] for r in doc["rows"]} == {"2026-11-02", "2026-11-03"}
    assert doc["totals"]["calls"] == sum(g["calls"] for g in want.values())

    with pytest.raises(FileNotFoundError):
        report_command(f"sqlite:///{path.parent / 'typo.db'}")
    with pytest.raises(ValueError, match="allowed"):
        report_command(f"sqlite:///{path}", by="feature,colour")
    assert "TOTAL" in report_command(f"sqlite:///{path}", by="feature,model")


def test_parse_when_forms() -> None:
    now = datetime(2026, 11, 10, 12, 0, tzinfo=UTC)
    assert parse_when("7d", now=now) == now - timedelta(days=7)
    assert parse_when("24h", now=now) == now - timedelta(hours=24)
    assert parse_when("30m", now=now) == now - timedelta(minutes=30)
    assert parse_when("2w", now=now) == now - timedelta(weeks=2)
    assert parse_when("2026-11-01") == datetime(2026, 11, 1, tzinfo=UTC)
    assert parse_when("2026-11-01", end=True) == datetime(2026, 11, 2, tzinfo=UTC)
    assert parse_when("2026-11-01T08:30") == datetime(2026, 11, 1, 8, 30, tzinfo=UTC)
    assert parse_when("2026-11-01T08:30:00+02:00") == datetime(2026, 11, 1, 6, 30, tzinfo=UTC)
    with pytest.raises(ValueError, match="relative"):
        parse_when("last tuesday")


def test_every_dimension_is_queryable(ledger: tuple[Path, list[UsageEvent]]) -> None:
    path, events = ledger
    store = SQLiteLedger(path)
    for dim in DIMENSIONS:
        rows = store.spend([dim])
        assert sum(r.calls for r in rows) == len(events), dim
        assert as_dict(rows) == expected(events, [dim]), dim
    store.close()


@pytest.mark.parametrize(
    "nanos",
    [0, 1, -1, 999_999_999, -999_999_999, 10**9, -(10**9), 123_456_789_012, 10**40 + 7],
)
def test_admin_money_is_the_exact_decimal_of_the_nanos(nanos: int) -> None:
    from spendgate.analytics.reports import money

    text = money(nanos)
    whole, _, frac = text.lstrip("-").partition(".")
    assert len(frac) == 9 and whole.isdigit()
    # Parsed back it is the same number of nanos, at any size (no rounding past 28 digits).
    back = int(whole) * 10**9 + int(frac)
    assert (-back if text.startswith("-") else back) == nanos
    if abs(nanos) < 10**18:
        assert Decimal(text) == Decimal(nanos) / NANOS_PER_USD
    assert text.startswith("-") == (nanos < 0)


def test_no_non_zero_amount_reads_as_zero() -> None:
    """Tiny costs printed as 0.000000 in reports; every non-zero amount now shows digits
    within 0.5 % of its value (three significant digits below a cent)."""
    import random

    from spendgate.call import format_usd, from_nanos

    rng = random.Random(3)
    for _ in range(2000):
        nanos = rng.choice([1, 7, 315, 31_500, 999_999, 10**7, 10**9 + 3, 10**12])
        nanos = max(1, int(nanos * rng.random()))
        text = format_usd(from_nanos(nanos))
        assert text not in ("0", "0.00", "0.000000")
        value = Decimal(text.replace(",", ""))
        assert abs(value - from_nanos(nanos)) <= from_nanos(nanos) * Decimal("0.005") + Decimal(
            "0.005"
        ) * (from_nanos(nanos) >= 1)
    assert format_usd(Decimal(0)) == "0"
