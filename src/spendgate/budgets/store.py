"""Counter stores: where spent and reserved amounts live, and the one atomic step each
offers — reserve against many counters at once, or not at all.

Every counter holds `spent` (settled) and `reserved` (held by calls in flight, each under a
lease that expires if its process dies). Amounts are integers: nano-dollars for budgets,
requests or tokens for rate limits. A hard counter admits a reservation only while
`spent + reserved + amount <= limit`, checked for every counter of the call in one atomic
step, so concurrent calls can never jointly overrun a budget by more than what settlements
exceed their reservations.

`MemoryStore` serves one process (a lock makes each step atomic across threads, e.g. library
mode); `spendgate.budgets.redis_store.RedisStore` serves many processes with Lua scripts.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from spendgate.errors import SpendgateError

__all__ = [
    "LIVE",
    "Counter",
    "CounterState",
    "CounterStore",
    "MemoryStore",
    "ReserveResult",
    "Settlement",
    "StoreUnavailable",
]


@dataclass(frozen=True, slots=True)
class Settlement:
    """What a store needs to know, beyond the amounts, to settle a lease idempotently across
    restarts; one value instead of the same keywords on every store's `settle`."""

    received_at: float | None = None
    """When the call came in (a store that came back empty compares it with its cutoff)."""
    once: bool = False
    """Admitted while the store was away, so never reserved there."""
    finished: bool = False
    """The call's ledger row is already written (a retried settlement from the outbox)."""


LIVE = Settlement()
"""The settlement of a live lease: reserved in the store, its ledger row not yet written."""


class StoreUnavailable(SpendgateError, RuntimeError):
    """The counter store cannot be reached (Redis down): the caller fails open or closed.
    `maybe_applied`: the command may still run (sent, then timed out: a paused Redis runs
    it when it resumes), so a reservation may exist that nobody will settle."""

    def __init__(self, message: str, *, maybe_applied: bool = True) -> None:
        super().__init__(message)
        self.maybe_applied = maybe_applied


@dataclass(frozen=True, slots=True)
class Counter:
    """One counter one call touches, with what the call reserves on it."""

    key: str
    rule: str
    kind: str
    """`usd` (nano-dollars), `requests` or `tokens`."""
    limit: int
    hard: bool
    amount: int
    keep_until: float
    """Unix time after which the store may drop the counter."""
    resets_at: float
    scope: Mapping[str, str] = field(default_factory=dict)
    period: str = ""


@dataclass(frozen=True, slots=True)
class CounterState:
    spent: int = 0
    reserved: int = 0


@dataclass(frozen=True, slots=True)
class ReserveResult:
    ok: bool
    states: list[CounterState]
    """Each counter as it was just before this reservation."""
    refused: list[int]
    """Indexes of the hard counters that had no room (empty when ok)."""


class CounterStore(Protocol):
    epochs: bool
    """True for a shared store that may come back empty (Redis): see `RedisStore`."""
    synchronous: bool
    """True when `settle_now` may be called from a completion callback (no I/O)."""

    async def reserve(
        self, lease: str, counters: Sequence[Counter], now: float, lease_ttl: float
    ) -> ReserveResult: ...

    async def settle(
        self, lease: str, counters: Sequence[Counter], actual: Sequence[int], how: Settlement = LIVE
    ) -> list[tuple[int, int]]:
        """Replace the lease's reservation with `actual` on each counter; returns each
        counter's spent (before, after), so threshold crossings are seen exactly once.
        `how` lets a shared store settle idempotently across restarts (see `Settlement`)."""
        ...

    def settle_now(
        self, lease: str, counters: Sequence[Counter], actual: Sequence[int]
    ) -> list[tuple[int, int]]: ...

    async def read(self, keys: Sequence[str]) -> list[CounterState]: ...

    async def scan(self, prefix: str) -> dict[str, CounterState]:
        """Every live counter whose key starts with `prefix` (admin views)."""
        ...

    async def seed(self, key: str, spent: int, keep_until: float) -> None:
        """Set a counter's spent if the counter does not exist yet (start-up from the ledger)."""
        ...

    async def aclose(self) -> None: ...


@dataclass(slots=True)
class _Slot:
    spent: int = 0
    reserved: int = 0
    keep_until: float = 0.0
    leases: dict[str, tuple[int, float]] = field(default_factory=dict)
    """lease → (amount, expires at)."""


class MemoryStore:
    """Counters in this process's memory. Exact and fast; not shared between processes."""

    synchronous = True
    epochs = False

    def __init__(self) -> None:
        self._slots: dict[str, _Slot] = {}
        self._lock = threading.Lock()
        self._ops = 0

    async def reserve(
        self, lease: str, counters: Sequence[Counter], now: float, lease_ttl: float
    ) -> ReserveResult:
        return self.reserve_now(lease, counters, now, lease_ttl)

    def reserve_now(
        self, lease: str, counters: Sequence[Counter], now: float, lease_ttl: float
    ) -> ReserveResult:
        with self._lock:
            self._ops += 1
            if self._ops % 4096 == 0:
                self._purge(now)
            slots = [self._slots.get(c.key) or _Slot() for c in counters]
            for slot in slots:
                _reclaim(slot, now)
            states = [CounterState(s.spent, s.reserved) for s in slots]
            refused = [
                i
                for i, (c, s) in enumerate(zip(counters, slots, strict=True))
                if c.hard and s.spent + s.reserved + c.amount > c.limit
            ]
            if refused:
                return ReserveResult(False, states, refused)
            for c, s in zip(counters, slots, strict=True):
                s.reserved += c.amount
                s.leases[lease] = (c.amount, now + lease_ttl)
                s.keep_until = max(s.keep_until, c.keep_until)
                self._slots[c.key] = s
            return ReserveResult(True, states, [])

    async def settle(
        self, lease: str, counters: Sequence[Counter], actual: Sequence[int], how: Settlement = LIVE
    ) -> list[tuple[int, int]]:
        return self.settle_now(lease, counters, actual)

    def settle_now(
        self, lease: str, counters: Sequence[Counter], actual: Sequence[int]
    ) -> list[tuple[int, int]]:
        out = []
        with self._lock:
            for c, amount in zip(counters, actual, strict=True):
                slot = self._slots.get(c.key)
                if slot is None:
                    slot = self._slots[c.key] = _Slot(keep_until=c.keep_until)
                held = slot.leases.pop(lease, None)
                if held is not None:
                    slot.reserved -= held[0]
                before = slot.spent
                slot.spent += amount
                out.append((before, slot.spent))
        return out

    async def read(self, keys: Sequence[str]) -> list[CounterState]:
        with self._lock:
            now = time.time()
            out = []
            for key in keys:
                slot = self._slots.get(key)
                if slot is None:
                    out.append(CounterState())
                    continue
                _reclaim(slot, now)
                out.append(CounterState(slot.spent, slot.reserved))
            return out

    async def scan(self, prefix: str) -> dict[str, CounterState]:
        with self._lock:
            return {
                k: CounterState(s.spent, s.reserved)
                for k, s in self._slots.items()
                if k.startswith(prefix)
            }

    async def seed(self, key: str, spent: int, keep_until: float) -> None:
        self.seed_now(key, spent, keep_until)

    def seed_now(self, key: str, spent: int, keep_until: float) -> None:
        with self._lock:
            if key not in self._slots:
                self._slots[key] = _Slot(spent=spent, keep_until=keep_until)

    async def aclose(self) -> None:
        return None

    def _purge(self, now: float) -> None:
        dead = [k for k, s in self._slots.items() if s.keep_until < now and not s.leases]
        for k in dead:
            del self._slots[k]


def _reclaim(slot: _Slot, now: float) -> None:
    """Give back reservations whose lease expired (their call never settled)."""
    if not slot.leases:
        return
    expired = [lease for lease, (_, until) in slot.leases.items() if until <= now]
    for lease in expired:
        slot.reserved -= slot.leases.pop(lease)[0]
