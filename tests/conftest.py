"""Shared fixtures for the gateway's end-to-end tests.

Real parts only: a `SimulatedUpstream` on loopback, a `Gateway` under uvicorn on a real port
(`GatewayServer`), a real SQLite ledger in a temp dir, and the real SDKs. Costs are checked
against the published per-MTok prices written here, applied to the usage the ledger
recorded — never against figures the gateway computed.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2
import pytest

from spendgate.config import Settings, parse_settings, simulated_settings
from spendgate.ledger import LedgerStore, UsageEvent, open_ledger
from spendgate.serve import GatewayServer
from spendgate.server.app import Gateway
from spendgate.simulated import SimulatedUpstream

# Published list prices, USD per million tokens (OpenAI / Anthropic pricing pages).
PRICES_PER_MTOK: dict[str, dict[str, float]] = {
    "gpt-4o": {"input": 2.50, "cache_read": 1.25, "cache_write": 0.0, "output": 10.00},
    "gpt-4o-mini": {"input": 0.15, "cache_read": 0.075, "cache_write": 0.0, "output": 0.60},
    "claude-sonnet-4": {"input": 3.00, "cache_read": 0.30, "cache_write": 3.75, "output": 15.00},
    "text-embedding-3-small": {"input": 0.02, "cache_read": 0.0, "cache_write": 0.0, "output": 0},
}
# Served (upstream) model names the simulated catalog uses → the price list above.
SERVED_TO_PRICE = {
    "gpt-4o": "gpt-4o",
    "gpt-4o-mini": "gpt-4o-mini",
    "claude-sonnet-4-20250514": "claude-sonnet-4",
    "text-embedding-3-small": "text-embedding-3-small",
}


def nanos_per_token(usd_per_mtok: float) -> int:
    """$/MTok → nano-dollars per token ($1/MTok = 1000 nanos/token); exact for list prices."""
    value = round(usd_per_mtok * 1000, 6)
    assert value == int(value), usd_per_mtok
    return int(value)


def expected_cost_nanos(event: UsageEvent) -> int:
    """Hand-computed cost of the usage an event recorded, at the published prices."""
    served = event.served_model or event.requested_model
    prices = PRICES_PER_MTOK[SERVED_TO_PRICE.get(served, served)]
    uncached = (
        event.input_tokens
        - event.cache_read_tokens
        - event.cache_write_tokens
        - event.cache_write_1h_tokens
    )
    assert uncached >= 0
    return (
        uncached * nanos_per_token(prices["input"])
        + event.cache_read_tokens * nanos_per_token(prices["cache_read"])
        + event.cache_write_tokens * nanos_per_token(prices["cache_write"])
        + event.output_tokens * nanos_per_token(prices["output"])
    )


def assert_priced(event: UsageEvent) -> None:
    """A successful call: usage present, cost = usage × list price, baseline = cost."""
    assert event.status == 200, event
    assert event.input_tokens > 0
    assert event.price_version
    assert event.cost_nanos is not None
    assert event.cost_nanos == expected_cost_nanos(event)
    assert event.cost_nanos > 0
    assert event.baseline_nanos == event.cost_nanos
    assert event.savings == {}


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


# --------------------------------------------------------------------------- harness


@dataclass
class Harness:
    """A running gateway plus a reader on its ledger."""

    gateway: Gateway
    server: GatewayServer
    ledger_url: str
    keys_url: str
    _reader: LedgerStore | None = field(default=None, repr=False)
    _stopped: bool = False

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def v1(self) -> str:
        return self.server.url + "/v1"

    def reader(self) -> LedgerStore:
        if self._reader is None:
            self._reader = open_ledger(self.ledger_url)
        return self._reader

    def flush(self) -> None:
        if not self._stopped:
            assert self.gateway.writer.flush(timeout=10), "ledger writer did not flush"

    def events(self, **filters: str) -> list[UsageEvent]:
        self.flush()
        return list(self.reader().events(filters=filters or None))

    def by_request(self, request_id: str) -> list[UsageEvent]:
        return [e for e in self.events() if e.request_id == request_id]

    def one(self, request_id: str) -> UsageEvent:
        rows = self.by_request(request_id)
        assert len(rows) == 1, f"expected one ledger row for {request_id}, got {len(rows)}"
        return rows[0]

    def one_for(self, feature: str) -> UsageEvent:
        rows = self.events(feature=feature)
        assert len(rows) == 1, f"expected one ledger row for feature {feature}, got {rows}"
        return rows[0]

    def wait_for(
        self, predicate: Callable[[list[UsageEvent]], bool], feature: str, seconds: float = 15
    ) -> list[UsageEvent]:
        """Bounded poll on `writer.flush()` + a ledger read, for events that complete after
        the response (a stream whose client left). Each round does real work — a flush and a
        round trip through the gateway's event loop (`/healthz`) — never a sleep."""
        rows: list[UsageEvent] = []
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            rows = self.events(feature=feature)
            if predicate(rows):
                return rows
            httpx2.get(self.url + "/healthz", timeout=5)
        raise AssertionError(f"ledger never satisfied the predicate; last rows: {rows}")

    def stop(self) -> None:
        if not self._stopped:
            self.server.stop()
            self._stopped = True

    def close(self) -> None:
        self.stop()
        if self._reader is not None:
            self._reader.close()
            self._reader = None


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path.resolve()}"


def gateway_settings(sim: SimulatedUpstream, folder: Path, **overrides: Any) -> Settings:
    """Simulated deployments, ledger + key store in `folder`, then `overrides` merged in
    (a `deployment_overrides` dict is applied to every deployment)."""
    dep_overrides = overrides.pop("deployment_overrides", None)
    base = simulated_settings(
        sim.url,
        storage={
            "ledger": sqlite_url(folder / "ledger.db"),
            "keys": sqlite_url(folder / "keys.db"),
        },
    )
    data = base.model_dump(mode="json", exclude_none=True)
    for key, value in overrides.items():
        data[key] = {**data[key], **value} if isinstance(data.get(key), dict) else value
    if dep_overrides:
        data["deployments"] = [{**d, **dep_overrides} for d in data["deployments"]]
    return parse_settings(data)


def start_harness(settings: Settings) -> Harness:
    gateway = Gateway(settings)
    server = GatewayServer(gateway).start()
    return Harness(gateway, server, settings.storage.ledger, settings.storage.keys)


@pytest.fixture(scope="session")
def sim() -> Iterator[SimulatedUpstream]:
    with SimulatedUpstream(latency="none") as upstream:
        yield upstream


@pytest.fixture(scope="session")
def gw(sim: SimulatedUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    """The shared gateway: no auth, default limits. Tests tell their rows apart by a unique
    feature tag or by the `x-spendgate-request-id` header."""
    harness = start_harness(gateway_settings(sim, tmp_path_factory.mktemp("gw")))
    yield harness
    harness.close()


@pytest.fixture
def make_gateway(
    sim: SimulatedUpstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[..., Harness]]:
    """Build a dedicated gateway (its own ledger and key store) with settings overrides."""
    made: list[Harness] = []

    def build(**overrides: Any) -> Harness:
        folder = tmp_path_factory.mktemp("gateway")
        harness = start_harness(gateway_settings(sim, folder, **overrides))
        made.append(harness)
        return harness

    yield build
    for harness in made:
        harness.close()


@pytest.fixture
def faults(sim: SimulatedUpstream) -> Iterator[Callable[..., None]]:
    """Queue faults on the simulated upstream; whatever was not consumed is cleared after."""

    def queue(*items: dict[str, Any]) -> None:
        r = httpx2.post(sim.url + "/_sim/faults", json={"faults": list(items)}, timeout=5)
        assert r.status_code == 200, r.text

    yield queue
    httpx2.delete(sim.url + "/_sim/faults", timeout=5)


@pytest.fixture(scope="session")
def http() -> Iterator[httpx2.Client]:
    with httpx2.Client(timeout=30) as client:
        yield client


# --------------------------------------------------------------------------- SSE helpers


def sse_events(lines: list[str]) -> list[tuple[str | None, str]]:
    """(event name, data) pairs from SSE lines; comments (`: …`) are skipped."""
    out: list[tuple[str | None, str]] = []
    event: str | None = None
    data: list[str] = []
    for line in [*lines, ""]:
        if not line:
            if data:
                out.append((event, "\n".join(data)))
            event, data = None, []
        elif line.startswith(":"):
            continue
        elif line.startswith("data:"):
            data.append(line[5:].lstrip(" "))
        elif line.startswith("event:"):
            event = line[6:].strip()
    return out


def openai_chunks(lines: list[str]) -> tuple[list[dict[str, Any]], bool]:
    """The JSON chunks of an OpenAI-format stream, and whether it ended with [DONE]."""
    chunks: list[dict[str, Any]] = []
    done = False
    for _, data in sse_events(lines):
        if data == "[DONE]":
            done = True
            continue
        assert not done, "data after [DONE]"
        chunks.append(json.loads(data))
    return chunks, done
