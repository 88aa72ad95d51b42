"""The `alerts:` section: where alerts go and what fires them.

```yaml
alerts:
  webhooks:
    - url: https://hooks.slack.com/services/T000/B000/XXXX
      format: slack              # {"text": …}; `json` posts the structured alert
  check_interval_s: 60
  anomaly: {scopes: [feature, team, tenant], factor: 3, trailing_hours: 24, min_spend_usd: 1}
  error_spike: {window_s: 300, min_calls: 20, error_rate: 0.2}
```

No webhooks, no alerts: the section's defaults describe a sensible policy, but nothing
runs (and nothing is queried) until somewhere to send is configured.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from spendgate.ledger import DIMENSIONS

__all__ = [
    "KINDS",
    "AlertsConfig",
    "AnomalyConfig",
    "ErrorSpikeConfig",
    "WebhookConfig",
]

Kind = Literal["budget", "anomaly", "error_spike"]
KINDS: tuple[str, ...] = ("budget", "anomaly", "error_spike")


def _all_kinds() -> list[Kind]:
    return ["budget", "anomaly", "error_spike"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class WebhookConfig(_Strict):
    url: str = Field(pattern=r"^https?://\S+$")
    format: Literal["slack", "json"] = "json"
    """`slack`: `{"text": …}` (Slack, Mattermost, Rocket.Chat, Discord's /slack URL);
    `json`: the structured alert (kind, scope, period, figures, text)."""
    kinds: list[Kind] = Field(default_factory=lambda: _all_kinds())
    """Which alerts this webhook receives."""
    headers: dict[str, str] = Field(default_factory=dict)
    timeout_s: float = Field(default=5.0, gt=0, le=60)
    retries: int = Field(default=2, ge=0, le=5)
    """Extra attempts after a connection error or a 5xx (back-off 0.5 s, 1 s, 2 s …)."""


class AnomalyConfig(_Strict):
    """A scope's spend this hour (or last hour) > `factor` × the median of its spend over
    the `trailing_hours` hours before, and at least `min_spend_usd`."""

    enabled: bool = True
    scopes: list[str] = Field(default_factory=lambda: ["feature", "team", "tenant", "model"])
    factor: float = Field(default=3.0, gt=1)
    trailing_hours: int = Field(default=24, ge=3, le=24 * 14)
    min_spend_usd: Decimal = Field(default=Decimal(1), ge=0)
    """Floor below which an hour never alerts, so a quiet scope's $0.02 → $0.10 is no page."""

    @field_validator("scopes")
    @classmethod
    def _dimensions(cls, v: list[str]) -> list[str]:
        bad = [s for s in v if s not in DIMENSIONS or s == "day"]
        if bad:
            allowed = ", ".join(d for d in DIMENSIONS if d != "day")
            raise ValueError(f"unknown scope(s) {bad}; allowed: {allowed}")
        return list(dict.fromkeys(v))


class ErrorSpikeConfig(_Strict):
    """A provider's error rate (5xx and 429 answers) over the last `window_s` seconds ≥
    `error_rate`, over at least `min_calls` calls."""

    enabled: bool = True
    window_s: int = Field(default=300, ge=10, le=86_400)
    min_calls: int = Field(default=20, ge=1)
    error_rate: float = Field(default=0.2, gt=0, le=1)


class AlertsConfig(_Strict):
    webhooks: list[WebhookConfig] = Field(default_factory=list)
    check_interval_s: float = Field(default=60.0, ge=1)
    """How often the gateway checks the ledger for anomalies and error spikes."""
    anomaly: AnomalyConfig = Field(default_factory=AnomalyConfig)
    error_spike: ErrorSpikeConfig = Field(default_factory=ErrorSpikeConfig)
    dedup: str = "memory"
    """Where "already sent this period" is remembered: `memory` (per process) or a
    `redis://` URL, so many replicas send each alert once."""
    dedup_prefix: str = Field(default="spendgate:alerts:", max_length=64)
    keep_recent: int = Field(default=100, ge=0, le=10_000)
    """Alerts kept in memory for the dashboard's "Recent alerts" panel."""

    @field_validator("dedup")
    @classmethod
    def _dedup_url(cls, v: str) -> str:
        if v != "memory" and not v.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("use `memory` or a redis:// URL")
        return v

    @property
    def active(self) -> bool:
        return bool(self.webhooks)
