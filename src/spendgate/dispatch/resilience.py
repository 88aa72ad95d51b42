"""Retries, backoff, fallbacks and circuit breakers: what the dispatcher does when an
upstream fails.

Why a separate module: the dispatcher (`spendgate.dispatch.dispatcher`) only walks a plan;
the rules that decide *whether* to try again, *when*, and *which deployment is healthy* live
here as small pure pieces so they can be tested without a network and reused by a library
user who builds their own dispatcher.

The rules, in one place:

- **Retryable** failures are the upstream's fault and may pass on a second try: connect
  errors, timeouts, 429, 5xx, garbage (a body that is not the JSON the API promises) and a
  stream that failed before its first byte reached the client. Any other 4xx is the
  request's fault: retrying or falling back would fail the same way (or, worse, succeed on a
  model the client did not ask for with a request that is wrong), so it is returned at once.
- **Backoff** is "full jitter" exponential (AWS architecture blog): a uniform draw in
  `[0, min(max_s, base_s · 2^n)]`, so many clients hit by one outage do not retry in step.
  A `Retry-After` from the upstream wins over the draw when it is at most
  `retry_after_max_s` (waited out, plus a spread of ≤ 10% / ≤ `base_s`); a longer one
  means "not this deployment for now": we move to the next deployment of the plan instead
  of holding the client's request hostage.
- **Circuit breaker** per deployment: it opens after `failures` consecutive failures, or
  when at least `min_calls` calls in the last `window_s` seconds failed at a rate ≥
  `error_rate`. While open the deployment is skipped (recorded as an attempt with error
  `circuit_open`); after `cooldown_s` one probe call is let through (half-open): success
  closes the circuit, failure opens it for another cool-down.
"""

from __future__ import annotations

import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Literal

from spendgate.errors import GatewayError
from spendgate.providers.base import Deployment

__all__ = [
    "NON_RETRYABLE_CODES",
    "BreakerState",
    "CircuitBreaker",
    "Resilience",
    "backoff_delay",
    "is_retryable",
    "parse_retry_after",
]

NON_RETRYABLE_CODES = frozenset({"embeddings_unsupported"})
"""Gateway-side refusals that look like upstream failures but depend only on the request."""

BreakerState = Literal["closed", "open", "half_open"]


def is_retryable(error: GatewayError) -> bool:
    """True for failures another try (here or on another deployment) may fix."""
    if error.code in NON_RETRYABLE_CODES:
        return False
    return error.status == 429 or error.status >= 500


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a `Retry-After` header: delta-seconds (fractions accepted, as
    some providers send them) or an HTTP date. None when absent or unreadable."""
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None:
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if seconds != seconds or seconds == float("inf"):  # NaN / inf
        return None
    return max(0.0, seconds)


def backoff_delay(
    retry: int,
    *,
    base_s: float,
    max_s: float,
    retry_after: float | None = None,
    retry_after_max_s: float = 30.0,
    rng: random.Random | None = None,
) -> float | None:
    """Seconds to wait before retry number `retry` (0 = the first retry), or None when the
    upstream asked for a wait longer than we accept (then: next deployment, not a retry)."""
    draw = (rng or random).uniform
    if retry_after is not None:
        if retry_after > retry_after_max_s:
            return None
        # Never earlier than asked; spread a little later (≤ 10%, ≤ base_s), so clients
        # told the same Retry-After do not all come back in the same instant.
        return retry_after + draw(0.0, min(base_s, retry_after * 0.1))
    ceiling = min(max_s, base_s * (2**retry))
    return draw(0.0, ceiling)


@dataclass(frozen=True, slots=True)
class BreakerPolicy:
    failures: int = 5
    """Consecutive failures that open the circuit (0 = that trigger is off)."""
    error_rate: float = 0.0
    """Failure share in the window that opens the circuit (0 = that trigger is off)."""
    min_calls: int = 20
    window_s: float = 60.0
    cooldown_s: float = 30.0

    @classmethod
    def of(cls, dep: Deployment) -> BreakerPolicy | None:
        if dep.circuit_failures <= 0 and dep.circuit_error_rate <= 0:
            return None
        return cls(
            failures=dep.circuit_failures,
            error_rate=dep.circuit_error_rate,
            min_calls=dep.circuit_min_calls,
            window_s=dep.circuit_window_s,
            cooldown_s=dep.circuit_cooldown_s,
        )


@dataclass
class CircuitBreaker:
    """One deployment's health. Not thread-safe: the gateway touches it from its event loop."""

    policy: BreakerPolicy
    clock: Callable[[], float] = time.monotonic
    state: BreakerState = "closed"
    consecutive: int = 0
    opened_at: float = 0.0
    opens: int = 0
    """How many times the circuit opened (for metrics and tests)."""
    _probing: bool = False
    _window: deque[tuple[float, bool]] = field(default_factory=deque)

    def retry_in(self) -> float:
        """Seconds until an open circuit lets a probe through (0 when it would now)."""
        if self.state != "open":
            return 0.0
        return max(0.0, self.opened_at + self.policy.cooldown_s - self.clock())

    def allow(self) -> bool:
        """May a call go to this deployment now? In half-open, only one probe at a time."""
        if self.state == "closed":
            return True
        if self.state == "open":
            if self.retry_in() > 0:
                return False
            self.state = "half_open"
            self._probing = False
        if self._probing:
            return False
        self._probing = True
        return True

    def release(self) -> None:
        """A permitted call ended without a verdict (the client left): free the probe slot."""
        self._probing = False

    def record(self, ok: bool) -> None:
        now = self.clock()
        self._probing = False
        window = self._window
        window.append((now, ok))
        horizon = now - self.policy.window_s
        while window and window[0][0] < horizon:
            window.popleft()
        if ok:
            self.consecutive = 0
            if self.state != "closed":
                self.state = "closed"
                window.clear()
            return
        self.consecutive += 1
        if self.state == "half_open":
            self._open(now)
            return
        if self.state == "open":
            return
        p = self.policy
        if p.failures and self.consecutive >= p.failures:
            self._open(now)
        elif p.error_rate and len(window) >= p.min_calls:
            failed = sum(1 for _, good in window if not good)
            if failed / len(window) >= p.error_rate:
                self._open(now)

    def _open(self, now: float) -> None:
        self.state = "open"
        self.opened_at = now
        self.opens += 1
        self._window.clear()


class Resilience:
    """The breakers of one gateway, by deployment name, plus the clock and the random
    source backoff uses (both replaceable, so tests drive time instead of sleeping)."""

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self.clock = clock
        self.rng = rng or random.Random()
        self._breakers: dict[str, CircuitBreaker | None] = {}

    def breaker(self, dep: Deployment) -> CircuitBreaker | None:
        """The deployment's breaker, or None when it has none configured."""
        if dep.name not in self._breakers:
            policy = BreakerPolicy.of(dep)
            self._breakers[dep.name] = (
                CircuitBreaker(policy, clock=lambda: self.clock()) if policy else None
            )
        return self._breakers[dep.name]

    def states(self) -> dict[str, BreakerState]:
        """Every configured breaker's state (for the admin API and the docs)."""
        return {name: b.state for name, b in self._breakers.items() if b is not None}

    def delay(self, dep: Deployment, retry: int, error: GatewayError) -> float | None:
        return backoff_delay(
            retry,
            base_s=dep.backoff_s,
            max_s=dep.backoff_max_s,
            retry_after=parse_retry_after(error.headers.get("retry-after")),
            retry_after_max_s=dep.retry_after_max_s,
            rng=self.rng,
        )
