"""Calendar periods (UTC) that budgets reset on, and the minute windows of rate limits.

Counters are bucketed by period id (`d2026-11-27`, `w2026-11-23`, `m2026-11`, `t29634720`), so
a new period is simply a new, empty key, and old keys expire on their own.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

__all__ = ["Period", "human_delay", "period_at"]


@dataclass(frozen=True, slots=True)
class Period:
    id: str
    start: float
    end: float
    """Unix time the next period starts (when a budget resets)."""

    @property
    def keep_until(self) -> float:
        """When its counters may be dropped: one more period length (≥ 1 h) after it ends,
        so the last period stays readable for reports and the admin API."""
        return self.end + max(3600.0, self.end - self.start)

    def reset_iso(self) -> str:
        return datetime.fromtimestamp(self.end, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def period_at(kind: str, now: float) -> Period:
    """The period of `kind` (day, week, month, minute) containing unix time `now`."""
    if kind == "minute":
        minute = int(now // 60)
        return Period(f"t{minute}", minute * 60.0, minute * 60.0 + 60.0)
    dt = datetime.fromtimestamp(now, UTC)
    day = datetime(dt.year, dt.month, dt.day, tzinfo=UTC)
    if kind == "day":
        start, end, pid = day, day + timedelta(days=1), f"d{day:%Y-%m-%d}"
    elif kind == "week":
        start = day - timedelta(days=day.weekday())
        end, pid = start + timedelta(days=7), f"w{start:%Y-%m-%d}"
    elif kind == "month":
        start = day.replace(day=1)
        end = (
            start.replace(year=start.year + 1, month=1)
            if start.month == 12
            else (start.replace(month=start.month + 1))
        )
        pid = f"m{start:%Y-%m}"
    else:
        raise ValueError(f"unknown period {kind!r}")
    return Period(pid, start.timestamp(), end.timestamp())


def human_delay(seconds: float) -> str:
    """`3h12m`, `41s`: how long until a reset, for error messages."""
    s = max(0, math.ceil(seconds))
    days, rem = divmod(s, 86400)
    hours, rem = divmod(rem, 3600)
    minutes, secs = divmod(rem, 60)
    if days:
        return f"{days}d{hours}h"
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"
