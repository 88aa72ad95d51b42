"""`Alert` and its delivery to webhooks, as Slack-compatible text or structured JSON.

Delivery retries a connection error or a 5xx a couple of times with a short back-off, then
gives up and says so in the log and in `spendgate_alerts_sent{outcome="failed"}`: an alert
must never hold up a request, and a dead receiver must not pile up work.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import aiohttp

from spendgate.alerts.config import WebhookConfig

__all__ = ["Alert", "deliver", "money", "payload"]

log = logging.getLogger(__package__)

_ICONS = {"budget": ":moneybag:", "anomaly": ":chart_with_upwards_trend:",
          "error_spike": ":rotating_light:"}  # fmt: skip


@dataclass(slots=True)
class Alert:
    """One thing worth telling a human, once per `period`."""

    kind: str
    """`budget` | `anomaly` | `error_spike`."""
    scope: dict[str, str]
    """What it is about, e.g. {"feature": "search"} or {"provider": "openai"}."""
    period: str
    """The de-duplication period: an alert with the same kind, scope, period (and `level`)
    is sent once."""
    title: str
    text: str
    level: str = ""
    """Sub-key within a period (a budget's 50 / 80 / 100 % thresholds)."""
    figures: dict[str, Any] = field(default_factory=dict)
    ts: float = field(default_factory=time.time)

    @property
    def dedup_key(self) -> str:
        scope = ",".join(f"{k}={v}" for k, v in sorted(self.scope.items()))
        return f"{self.kind}|{scope}|{self.period}|{self.level}"

    def as_json(self) -> dict[str, Any]:
        return {
            "source": "spendgate",
            "kind": self.kind,
            "scope": self.scope,
            "period": self.period,
            "level": self.level or None,
            "title": self.title,
            "text": self.text,
            "figures": self.figures,
            "ts": self.ts,
        }


def payload(alert: Alert, fmt: str) -> dict[str, Any]:
    if fmt == "slack":
        icon = _ICONS.get(alert.kind, ":bell:")
        return {"text": f"{icon} *{alert.title}*\n{alert.text}"}
    return alert.as_json()


async def deliver(session: aiohttp.ClientSession, hook: WebhookConfig, alert: Alert) -> bool:
    """POST one alert to one webhook; True when it answered 2xx."""
    body = payload(alert, hook.format)
    timeout = aiohttp.ClientTimeout(total=hook.timeout_s)
    for attempt in range(hook.retries + 1):
        if attempt:
            await asyncio.sleep(0.5 * 2 ** (attempt - 1))  # back-off before a retry
        try:
            async with session.post(hook.url, json=body, headers=hook.headers,
                                    timeout=timeout) as resp:  # fmt: skip
                await resp.read()
                if 200 <= resp.status < 300:
                    return True
                if resp.status < 500 and resp.status != 429:
                    log.warning("alert webhook %s refused %s: HTTP %s",
                                hook.url, alert.dedup_key, resp.status)  # fmt: skip
                    return False
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning("alert webhook %s unreachable (%s)", hook.url, exc)
    log.error("alert %s not delivered to %s after %d attempts",
              alert.dedup_key, hook.url, hook.retries + 1)  # fmt: skip
    return False


def money(value: Decimal | int | float) -> str:
    """USD for people: cents from $1 up, up to six decimals below (tiny budgets and quiet
    scopes are the norm in tests and small deployments), never an exponent."""
    v = Decimal(str(value))
    if abs(v) >= 1:
        return f"${v:,.2f}"
    text = f"{v:.6f}".rstrip("0")
    if text.endswith("."):
        text += "00"
    elif len(text.split(".")[1]) < 2:
        text += "0"
    return "$" + text
