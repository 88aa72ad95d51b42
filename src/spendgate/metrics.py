"""Prometheus metrics, one registry per gateway (so tests and library mode can run several).

Labels are deliberately few (endpoint, status, model, feature): tenants and users live in the
ledger, not in time series, where their cardinality would sink Prometheus.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

__all__ = ["Metrics"]


class _Stats(Collector):
    """Exposes a dict-returning callable (e.g. the ledger writer's stats) as gauges."""

    def __init__(self, prefix: str, source: Callable[[], dict[str, float]]) -> None:
        self._prefix = prefix
        self._source = source

    def collect(self):
        for key, value in self._source().items():
            yield GaugeMetricFamily(f"{self._prefix}_{key}", f"{self._prefix} {key}", value=value)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        counter = self._counter
        self.requests = counter(
            "spendgate_requests", "Requests answered, by endpoint and status", "endpoint", "status"
        )
        self.cost = counter(
            "spendgate_cost_usd",
            "Actual cost of answered requests in USD (exact sums live in the ledger)",
            "model",
            "feature",
        )
        self.tokens = counter("spendgate_tokens", "Tokens by kind", "model", "kind")
        self.latency = Histogram(
            "spendgate_request_seconds",
            "Time from request received to reply complete",
            ["endpoint"],
            buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=self.registry,
        )
        self.tag_overflow = counter(
            "spendgate_tag_overflow",
            "Tag values recorded as (other) because a tag exceeded its cardinality cap",
            "tag",
        )
        self.in_flight = Gauge(
            "spendgate_in_flight", "Requests being served", registry=self.registry
        )
        # Optimization outcomes (dashboard/Grafana): same low-cardinality labels as cost.
        self.cache_outcomes = counter(
            "spendgate_cache_outcomes",
            "Calls by cache outcome (hit, miss, semantic-hit, bypass…)",
            "feature",
            "model",
            "outcome",
        )
        self.route_outcomes = counter(
            "spendgate_route_outcomes",
            "Calls by routing outcome: `routed` when the served model differs from the "
            "requested one, else `kept`",
            "feature",
            "model",
            "outcome",
        )
        self.savings = counter(
            "spendgate_savings_usd",
            "USD saved by technique (exact sums live in the ledger)",
            "feature",
            "technique",
        )

    def _counter(self, name: str, documentation: str, *labels: str) -> Counter:
        return Counter(name, documentation, list(labels), registry=self.registry)

    def watch(self, prefix: str, source: Callable[[], dict[str, float]]) -> None:
        self.registry.register(_Stats(prefix, source))

    def render(self) -> bytes:
        return generate_latest(self.registry)
