"""Detectors: spend anomalies and provider error spikes, computed from the ledger.

Both use only `LedgerStore.spend()`, so they work on any ledger backend and take `now` as an
argument (tests and back-fills can evaluate any moment).

Anomaly: for each configured scope dimension, the spend of every value of it in the
current hour so far, and in the last complete hour, is compared with the median of that
value's hourly spend over the `trailing_hours` hours before the hour judged (hours without
spend count as $0). Judging the current hour catches a runaway loop within one check
interval; judging the last hour catches a spike that ended between two checks. Complete
hours older than `SETTLED` no longer change and are memoised, so a check costs two grouped
queries per dimension once warm.

Error spike: per provider, answers with status ≥ 500 or 429 over the last `window_s`
seconds, against all its answers in that window.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

from spendgate.alerts.config import AnomalyConfig, ErrorSpikeConfig
from spendgate.alerts.webhook import Alert, money
from spendgate.call import from_nanos
from spendgate.ledger import NONE_LABEL, LedgerStore

__all__ = ["HourlySpend", "find_anomalies", "find_error_spikes"]

HOUR = timedelta(hours=1)
SETTLED = timedelta(minutes=15)
"""An hour that ended this long ago is final (streams are recorded at their start time, so
a long stream can still land in an hour that has just ended)."""


def floor_hour(when: datetime) -> datetime:
    return when.replace(minute=0, second=0, microsecond=0)


def _usd(nanos: int | float) -> str:
    return money(from_nanos(int(nanos)))


class HourlySpend:
    """Hourly spend per value of a dimension, with settled hours memoised."""

    def __init__(self, store: LedgerStore) -> None:
        self.store = store
        self._memo: dict[tuple[str, datetime], dict[str, int]] = {}

    def hour(self, dim: str, start: datetime, now: datetime) -> dict[str, int]:
        key = (dim, start)
        cached = self._memo.get(key)
        if cached is not None:
            return cached
        end = min(start + HOUR, now)
        values = {r.keys[dim]: r.cost_nanos for r in self.store.spend([dim], start, end)}
        if start + HOUR + SETTLED <= now:
            self._memo[key] = values
        return values

    def forget_before(self, when: datetime) -> None:
        for key in [k for k in self._memo if k[1] < when]:
            del self._memo[key]


def find_anomalies(hourly: HourlySpend, cfg: AnomalyConfig, now: datetime) -> list[Alert]:
    """Alerts for every (dimension value, hour) whose spend is > factor × trailing median."""
    if not cfg.enabled:
        return []
    now = now.astimezone(UTC)
    current = floor_hour(now)
    alerts: list[Alert] = []
    floor = cfg.min_spend_usd * 10**9
    for dim in cfg.scopes:
        for judged in (current, current - HOUR):
            spent = hourly.hour(dim, judged, now)
            history = [hourly.hour(dim, judged - HOUR * i, now)
                       for i in range(1, cfg.trailing_hours + 1)]  # fmt: skip
            for value, nanos in spent.items():
                if value == NONE_LABEL or nanos <= 0 or nanos < floor:
                    continue
                median = statistics.median([h.get(value, 0) for h in history])
                if nanos <= cfg.factor * median:
                    continue
                alerts.append(_anomaly(dim, value, judged, now, nanos, median, cfg))
    hourly.forget_before(current - HOUR * (cfg.trailing_hours + 2))
    return alerts


def _anomaly(dim: str, value: str, judged: datetime, now: datetime, nanos: int,
             median: float, cfg: AnomalyConfig) -> Alert:  # fmt: skip
    end = min(judged + HOUR, now)
    window = f"{judged:%Y-%m-%d %H:%M}–{end:%H:%M} UTC"
    ratio = nanos / median if median else None
    if ratio is not None:
        versus = f"{ratio:.1f}× its trailing {cfg.trailing_hours}-hour median ({_usd(median)})"
    else:
        versus = f"with no spend in most of the previous {cfg.trailing_hours} hours (median $0)"
    text = f"{dim}={value} spent {_usd(nanos)} in {window}, {versus}."  # fmt: skip
    return Alert(
        kind="anomaly",
        scope={dim: value},
        period=judged.strftime("%Y-%m-%dT%H"),
        title=f"spendgate: spend anomaly on {dim} {value}",
        text=text,
        figures={
            "spend_usd": format(from_nanos(nanos), "f"),
            "median_usd": format(from_nanos(int(median)), "f"),
            "ratio": None if ratio is None else round(ratio, 2),
            "factor": cfg.factor,
            "hour_start": judged.isoformat(),
            "hour_complete": judged + HOUR <= now,
        },
    )


def _is_error(status: str) -> bool:
    return status.isdigit() and (int(status) >= 500 or int(status) == 429)


def find_error_spikes(store: LedgerStore, cfg: ErrorSpikeConfig, now: datetime) -> list[Alert]:
    """Alerts for every provider whose error rate over the window reaches the threshold."""
    if not cfg.enabled:
        return []
    now = now.astimezone(UTC)
    since = now - timedelta(seconds=cfg.window_s)
    calls: dict[str, int] = {}
    errors: dict[str, int] = {}
    for row in store.spend(["provider", "status"], since, now):
        provider = row.keys["provider"]
        if provider == NONE_LABEL:
            continue  # refused before any provider was asked: not the provider's fault
        calls[provider] = calls.get(provider, 0) + row.calls
        if _is_error(row.keys["status"]):
            errors[provider] = errors.get(provider, 0) + row.calls
    return list(_spikes(calls, errors, cfg, now))


def _spikes(calls: dict[str, int], errors: dict[str, int], cfg: ErrorSpikeConfig,
            now: datetime) -> Iterable[Alert]:  # fmt: skip
    for provider, n in sorted(calls.items()):
        bad = errors.get(provider, 0)
        if n < cfg.min_calls or bad / n < cfg.error_rate:
            continue
        minutes = cfg.window_s / 60
        yield Alert(
            kind="error_spike",
            scope={"provider": provider},
            period=floor_hour(now).strftime("%Y-%m-%dT%H"),
            title=f"spendgate: error spike at provider {provider}",
            text=(
                f"{bad} of {n} calls to {provider} failed (5xx/429) in the last "
                f"{minutes:g} min: {bad / n:.0%} ≥ {cfg.error_rate:.0%}."
            ),
            figures={
                "calls": n,
                "errors": bad,
                "error_rate": round(bad / n, 4),
                "threshold": cfg.error_rate,
                "window_s": cfg.window_s,
            },
        )
