"""The resilience rules on their own: backoff, Retry-After, breaker states, the plan."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from email.utils import format_datetime

import pytest

from spendgate.call import Call
from spendgate.dispatch.dispatcher import Dispatcher, FallbackChain
from spendgate.dispatch.resilience import (
    BreakerPolicy,
    CircuitBreaker,
    backoff_delay,
    is_retryable,
    parse_retry_after,
)
from spendgate.dispatch.table import ModelTable
from spendgate.errors import GatewayError
from spendgate.providers.base import Deployment


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_full_jitter_stays_under_the_exponential_ceiling() -> None:
    rng = random.Random(7)
    for retry in range(8):
        ceiling = min(2.0, 0.1 * 2**retry)
        draws = [backoff_delay(retry, base_s=0.1, max_s=2.0, rng=rng) for _ in range(200)]
        assert all(d is not None and 0 <= d <= ceiling for d in draws)
        assert max(d for d in draws if d is not None) > ceiling / 2  # spread, not fixed


def test_retry_after_wins_until_the_cap() -> None:
    rng = random.Random(3)
    waits = [
        backoff_delay(0, base_s=5, max_s=5, retry_after=1.5, retry_after_max_s=2, rng=rng)
        for _ in range(100)
    ]
    assert all(w is not None and 1.5 <= w <= 1.65 for w in waits)  # never early, ≤ 10% late
    assert len(set(waits)) > 50
    assert backoff_delay(0, base_s=5, max_s=5, retry_after=9, retry_after_max_s=2) is None


def test_parse_retry_after() -> None:
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after(" 0.25 ") == 0.25
    assert parse_retry_after("-3") == 0.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    assert parse_retry_after("nan") is None
    now = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
    later = format_datetime(datetime(2026, 1, 1, 12, 0, 30, tzinfo=UTC), usegmt=True)
    assert parse_retry_after(later, now=now.timestamp()) == 30.0


@pytest.mark.parametrize(
    ("status", "code", "retryable"),
    [(429, None, True), (502, "upstream_503", True), (504, "upstream_timeout", True),
     (400, "upstream_400", False), (401, None, False), (404, None, False),
     (400, "embeddings_unsupported", False)],
)  # fmt: skip
def test_which_failures_are_retryable(status: int, code: str | None, retryable: bool) -> None:
    assert is_retryable(GatewayError(status, "x", code=code)) is retryable


def test_breaker_consecutive_failures_cooldown_and_single_probe() -> None:
    clock = Clock()
    b = CircuitBreaker(BreakerPolicy(failures=3, cooldown_s=10), clock=clock)
    for _ in range(2):
        assert b.allow()
        b.record(False)
    assert b.allow()
    b.record(True)  # a success resets the count
    for _ in range(3):
        assert b.allow()
        b.record(False)
    assert b.state == "open" and not b.allow()
    assert b.retry_in() == 10
    clock.now = 10
    assert b.allow()  # the probe
    assert b.state == "half_open"
    assert not b.allow()  # only one probe at a time
    b.record(False)
    assert b.state == "open" and b.opens == 2
    clock.now = 20
    assert b.allow()
    b.release()  # the probe's client left: the slot frees, the state stays half-open
    assert b.allow()
    b.record(True)
    assert b.state == "closed" and b.allow()


def test_breaker_error_rate_in_a_window() -> None:
    clock = Clock()
    b = CircuitBreaker(
        BreakerPolicy(failures=0, error_rate=0.5, min_calls=10, window_s=60), clock=clock
    )
    for i in range(9):
        b.record(i % 2 == 0)  # 4 failures of 9: under min_calls anyway
    assert b.state == "closed"
    clock.now = 100  # the window forgets all of them
    for i in range(10):
        b.record(i % 3 == 2)  # 7 failures of 10, never 3 in a row
    assert b.state == "open"


def _dep(name: str, models: list[str], **kw: object) -> Deployment:
    return Deployment(
        name=name, provider="openai", base_url="http://x", models={m: m for m in models}, **kw
    )  # type: ignore[arg-type]


def test_plan_order() -> None:
    table = ModelTable(
        [
            _dep("a", ["gpt-4o-mini"], fallbacks={"gpt-4o-mini": ("claude-3-5-haiku",)}),
            _dep("b", ["gpt-4o-mini", "gpt-4o"]),
            _dep("c", ["claude-3-5-haiku"]),
        ]
    )
    d = Dispatcher(table, None, None)  # type: ignore[arg-type]
    call = Call(endpoint="chat", api="openai", body={}, requested_model="gpt-4o")
    call.model = "gpt-4o-mini"  # routed down: the requested model is the last resort
    plan = [(m, dep.name) for m, dep in d.plan(call)]
    assert plan == [
        ("gpt-4o-mini", "a"),
        ("gpt-4o-mini", "b"),
        ("claude-3-5-haiku", "c"),
        ("gpt-4o", "b"),
    ]
    call.decisions.add(FallbackChain(["gpt-4o"]))  # a stage may replace the configured chain
    assert [(m, dep.name) for m, dep in d.plan(call)] == [
        ("gpt-4o-mini", "a"),
        ("gpt-4o-mini", "b"),
        ("gpt-4o", "b"),
    ]
