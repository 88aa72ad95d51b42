"""Alerts: budget thresholds, spend anomalies and provider error spikes, sent to webhooks
(Slack-compatible text or structured JSON), each once per period. See docs/dashboard.md."""

from spendgate.alerts.config import AlertsConfig, AnomalyConfig, ErrorSpikeConfig, WebhookConfig
from spendgate.alerts.detect import HourlySpend, find_anomalies, find_error_spikes
from spendgate.alerts.service import AlertService, install, notify_budget_threshold
from spendgate.alerts.webhook import Alert, deliver, payload

__all__ = [
    "Alert",
    "AlertService",
    "AlertsConfig",
    "AnomalyConfig",
    "ErrorSpikeConfig",
    "HourlySpend",
    "WebhookConfig",
    "deliver",
    "find_anomalies",
    "find_error_spikes",
    "install",
    "notify_budget_threshold",
    "payload",
]
