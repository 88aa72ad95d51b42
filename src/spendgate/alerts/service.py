"""`AlertService`: the gateway's alerting loop, de-duplication and budget-threshold hook.

Wiring (done by `install(gateway)`, which the gateway calls at construction when this
package exists): the service is kept in `gateway.stage_context.alerts`, where
stages (the budgets stage) and the dashboard find it; the gateway's ASGI lifespan calls
`start()` (a periodic task on the serving loop) and `stop()`.

Each check runs the detectors in a worker thread (ledger queries are blocking) and sends
what they found, once per (kind, scope, period, level). Memory de-dup is per process; a
`redis://` dedup URL makes a fleet of replicas send each alert once (SET NX with a TTL).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import aiohttp

from spendgate.alerts.config import AlertsConfig
from spendgate.alerts.detect import HourlySpend, find_anomalies, find_error_spikes
from spendgate.alerts.webhook import Alert, deliver, money
from spendgate.ledger import LedgerStore

__all__ = ["AlertService", "install", "notify_budget_threshold"]

log = logging.getLogger(__package__)

_DEDUP_TTL_S = 40 * 86_400
"""Long enough to outlive the longest period (a month) a key stands for."""


class _Dedup:
    """Remembers which alerts were sent. `claim` is atomic: True for exactly one caller."""

    def __init__(self, url: str, prefix: str) -> None:
        self._seen: dict[str, float] = {}
        self._redis: Any = None
        self._prefix = prefix
        if url != "memory":
            import redis.asyncio as redis_asyncio

            self._redis = redis_asyncio.from_url(url)

    async def claim(self, key: str) -> bool:
        if self._redis is not None:
            try:
                return bool(await self._redis.set(self._prefix + key, "1", nx=True,
                                                  ex=_DEDUP_TTL_S))  # fmt: skip
            except Exception as exc:  # Redis away: fall back to this process's memory
                log.warning("alert dedup store unreachable (%s); de-duplicating locally", exc)
        now = time.time()
        if len(self._seen) > 100_000:
            self._seen = {k: t for k, t in self._seen.items() if now - t < _DEDUP_TTL_S}
        if key in self._seen:
            return False
        self._seen[key] = now
        return True

    async def release(self, key: str) -> None:
        """Forget a claim whose alert could not be delivered, so a later check retries."""
        self._seen.pop(key, None)
        if self._redis is not None:
            with contextlib.suppress(Exception):
                await self._redis.delete(self._prefix + key)

    async def aclose(self) -> None:
        if self._redis is not None:
            with contextlib.suppress(Exception):
                await self._redis.aclose()


class AlertService:
    def __init__(self, config: AlertsConfig, store: LedgerStore, metrics: Any = None) -> None:
        self.config = config
        self.store = store
        self.metrics = metrics
        self.recent: deque[Alert] = deque(maxlen=config.keep_recent or None)
        self._dedup = _Dedup(config.dedup, config.dedup_prefix)
        self._hourly = HourlySpend(store)
        self._session: aiohttp.ClientSession | None = None
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending: set[asyncio.Future[Any]] = set()
        self._check_lock = asyncio.Lock()
        self._counter = None
        if metrics is not None:
            from prometheus_client import Counter

            self._counter = Counter("spendgate_alerts_sent",
                                    "Alerts by kind and delivery outcome",
                                    ["kind", "outcome"], registry=metrics.registry)  # fmt: skip

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        """Begin periodic checks on the running loop (idempotent)."""
        self._loop = asyncio.get_running_loop()
        if self._task is None and self.config.active:
            self._task = asyncio.create_task(self._run(), name="spendgate-alerts")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
            self._session = None
        await self._dedup.aclose()

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        """The serving loop once started: other threads schedule `check()` on it."""
        return self._loop

    async def _run(self) -> None:
        while True:
            # Waiting first: a fresh process has just had its ledger flushed and checked by
            # its predecessor; the interval is the check period itself, not a synchronisation.
            await asyncio.sleep(self.config.check_interval_s)
            try:
                await self.check()
            except Exception:
                log.exception("alert check failed; will try again")

    # ------------------------------------------------------------------ checks
    async def check(self, now: datetime | None = None) -> list[Alert]:
        """Run the detectors once and send what is new; returns the alerts sent."""
        async with self._check_lock:  # the memo of settled hours is not thread-safe
            when = now or datetime.now(UTC)
            found = await asyncio.to_thread(self._detect, when)
        return [a for a in await asyncio.gather(*(self.send(a) for a in found)) if a]

    def _detect(self, now: datetime) -> list[Alert]:
        return [
            *find_anomalies(self._hourly, self.config.anomaly, now),
            *find_error_spikes(self.store, self.config.error_spike, now),
        ]

    async def send(self, alert: Alert) -> Alert | None:
        """Deliver to every webhook that takes this kind, unless already sent this period.
        Returns the alert when at least one webhook accepted it."""
        hooks = [h for h in self.config.webhooks if alert.kind in h.kinds]
        if not hooks or not await self._dedup.claim(alert.dedup_key):
            return None
        if self._session is None:
            self._session = aiohttp.ClientSession()
        results = await asyncio.gather(*(deliver(self._session, h, alert) for h in hooks))
        ok = any(results)
        if self._counter is not None:
            self._counter.labels(alert.kind, "sent" if ok else "failed").inc()
        if not ok:
            await self._dedup.release(alert.dedup_key)
            return None
        self.recent.appendleft(alert)
        return alert

    def recent_json(self) -> list[dict[str, Any]]:
        return [a.as_json() for a in list(self.recent)]

    # ------------------------------------------------------------------ budgets
    def budget_alert(
        self,
        *,
        budget: str,
        threshold: float,
        spent_usd: Decimal,
        limit_usd: Decimal,
        period: str,
        scope: Mapping[str, str] | None = None,
        mode: str = "soft",
        resets_at: str | None = None,
    ) -> Alert:
        share = spent_usd / limit_usd if limit_usd else Decimal(0)
        resets = f" Resets {resets_at}." if resets_at else ""
        where = ", ".join(f"{k}={v}" for k, v in sorted((scope or {}).items())) or "all traffic"
        return Alert(
            kind="budget",
            scope={"budget": budget, **dict(scope or {})},
            period=period,
            level=f"{threshold:g}",
            title=f"spendgate: budget {budget} passed {threshold:.0%}",
            text=(
                f"Budget {budget} ({where}, {mode}) has used {money(spent_usd)} of "
                f"{money(limit_usd)} ({share:.0%}) in period {period}.{resets}"
            ),
            figures={
                "threshold": threshold,
                "spent_usd": format(spent_usd, "f"),
                "limit_usd": format(limit_usd, "f"),
                "mode": mode,
                "resets_at": resets_at,
            },
        )

    def notify_budget_threshold(self, **kwargs: Any) -> asyncio.Future[Any] | None:
        """Send a budget-threshold alert from any thread or callback, without waiting.

        Keyword arguments as `budget_alert`. Safe from a synchronous completion callback:
        the delivery is scheduled on the serving loop. Returns the scheduled future (or None
        when the service has no loop yet)."""
        alert = self.budget_alert(**kwargs)
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is not None:
            fut: asyncio.Future[Any] = asyncio.ensure_future(self.send(alert))
        elif self._loop is not None and not self._loop.is_closed():
            fut = asyncio.wrap_future(
                asyncio.run_coroutine_threadsafe(self.send(alert), self._loop), loop=self._loop
            )
        else:
            log.warning("budget alert %s dropped: alerts not started", alert.dedup_key)
            return None
        self._pending.add(fut)
        fut.add_done_callback(self._pending.discard)
        return fut


def notify_budget_threshold(gateway_or_context: Any, **kwargs: Any) -> bool:
    """For the budgets package: report that a budget crossed a threshold.

    `gateway_or_context` is the `Gateway` or its `StageContext`. Keywords: budget,
    threshold (0.5 / 0.8 / 1.0), spent_usd, limit_usd, period (an id of the budget period,
    e.g. "2026-11" — the de-dup key), scope, mode, resets_at.
    Returns False when alerts are not configured."""
    context = getattr(gateway_or_context, "stage_context", gateway_or_context)
    service: AlertService | None = getattr(context, "alerts", None)
    if service is None:
        return False
    return service.notify_budget_threshold(**kwargs) is not None


def install(gateway: Any) -> AlertService | None:
    """Create the gateway's service from its `alerts:` section (None when no webhooks)."""
    config: AlertsConfig = gateway.settings.alerts
    if not config.active:
        return None
    service = AlertService(config, gateway.store, gateway.metrics)
    gateway.stage_context.alerts = service
    return service
