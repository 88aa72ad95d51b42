"""The `budgets:` section: spend budgets, rate limits and where their counters live.

A budget caps USD spend of one *scope* (any combination of tags) per day, week or month; a
rate limit caps requests and/or tokens per minute of a scope. A scope value `"*"` means "each
value separately" (`{tenant: "*"}` gives every tenant its own budget), and only applies to
calls that carry that tag. Rules written here are read-only at run time; the CLI and the
admin API add *dynamic* rules, persisted where `definitions` says.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = [
    "SCOPE_TAGS",
    "BudgetRule",
    "BudgetsConfig",
    "RateLimitRule",
    "Rule",
]

SCOPE_TAGS: dict[str, str] = {
    "team": "team",
    "feature": "feature",
    "use_case": "use_case",
    "tenant": "tenant",
    "user": "user",
    "key": "key_id",
    "model": "model",
}
"""Scope name in config → the call attribute it matches (`model` is the requested model)."""

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:@+=-]{0,63}$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _check_scope(scope: dict[str, str]) -> dict[str, str]:
    unknown = sorted(set(scope) - set(SCOPE_TAGS))
    if unknown:
        raise ValueError(f"unknown scope tag(s) {unknown}; allowed: {sorted(SCOPE_TAGS)}")
    for tag, value in scope.items():
        if not value or len(value) > 128:
            raise ValueError(f"scope value for {tag!r} must be 1-128 characters (or '*')")
    return dict(sorted(scope.items()))


class BudgetRule(_Strict):
    """USD spend of a scope per calendar period (UTC; weeks start on Monday)."""

    name: str = Field(pattern=NAME_PATTERN)
    scope: dict[str, str] = Field(default_factory=dict)
    """Tag → value or `"*"`; empty = all traffic."""
    period: Literal["day", "week", "month"] = "month"
    limit_usd: Decimal = Field(gt=0, le=Decimal(1_000_000_000), decimal_places=9)
    """At most $1e9 (counters are int64 nano-dollars; Lua compares exactly below $9M)."""
    mode: Literal["hard", "soft"] = "hard"
    """hard: refuse with 429 once the limit would be passed; soft: admit, only alert."""

    @field_validator("scope")
    @classmethod
    def _scope(cls, v: dict[str, str]) -> dict[str, str]:
        return _check_scope(v)

    @property
    def kind(self) -> str:
        return "budget"

    def describe(self) -> str:
        return f"${self.limit_usd.normalize():f} per {self.period}, {self.mode}"


class RateLimitRule(_Strict):
    """Requests and/or tokens (input + output) per minute of a scope (fixed UTC minutes)."""

    name: str = Field(pattern=NAME_PATTERN)
    scope: dict[str, str] = Field(default_factory=dict)
    requests_per_minute: int | None = Field(default=None, gt=0)
    tokens_per_minute: int | None = Field(default=None, gt=0)
    mode: Literal["hard", "soft"] = "hard"

    @field_validator("scope")
    @classmethod
    def _scope(cls, v: dict[str, str]) -> dict[str, str]:
        return _check_scope(v)

    @model_validator(mode="after")
    def _some_limit(self) -> RateLimitRule:
        if self.requests_per_minute is None and self.tokens_per_minute is None:
            raise ValueError("give requests_per_minute and/or tokens_per_minute")
        return self

    @property
    def kind(self) -> str:
        return "limit"

    def describe(self) -> str:
        parts = []
        if self.requests_per_minute is not None:
            parts.append(f"{self.requests_per_minute} requests/min")
        if self.tokens_per_minute is not None:
            parts.append(f"{self.tokens_per_minute} tokens/min")
        return ", ".join(parts) + f", {self.mode}"


Rule = BudgetRule | RateLimitRule


class BudgetsConfig(_Strict):
    store: str = "memory"
    """Where counters live: `memory` (one process; seeded from the ledger at start, so a
    restart does not reset a period) or `redis://host:port/db` (shared by every replica)."""
    definitions: str = "auto"
    """Where CLI/admin-made rules persist: `auto` = Redis when `store` is Redis, else the
    `storage.keys` SQLite file; or an explicit `sqlite:///…` / `redis://…` URL."""
    key_prefix: str = Field(default="spendgate:", max_length=64)
    fail_open: bool = True
    """When the Redis store is unreachable: admit (and record it) or refuse with 503. Open
    admission is bounded per replica: see `fail_open_allowance_usd`."""
    fail_open_allowance_usd: Decimal | None = Field(default=None, ge=0)
    """While the store is away, each replica admits on a hard budget only within its share
    of the headroom it last saw there (limit − spent − reserved, divided by the replicas
    alive), further capped by this amount per budget counter. A counter this replica has
    not seen yet gets this amount alone (refused when unset)."""
    heartbeat_s: float = Field(default=1.0, ge=0)
    """How often a replica tells Redis it is alive (the count splits fail-open shares)."""
    outbox: str = "auto"
    """Where settlements Redis could not take wait to be applied: `auto` (a SQLite file
    beside the ledger's spool), `memory` (lost with the process), or a directory."""
    outbox_retry_s: float = Field(default=0.2, gt=0)
    """First delay between outbox retries while Redis is away (doubling, at most 5 s)."""
    reseed_wait_s: float = Field(default=3.0, ge=0)
    """After Redis came back empty, how long a replica waits for the other live replicas to
    seed their ledgers' spend before it admits again (they notice within a heartbeat)."""
    reseed_delay_s: float = Field(default=0.3, ge=0)
    """After Redis came back empty: how long after the last settlement of a call received
    before that to seed the counters from the ledger again (time for its row to land)."""
    redis_timeout_s: float = Field(default=0.5, gt=0)
    budgets: list[BudgetRule] = Field(default_factory=list)
    limits: list[RateLimitRule] = Field(default_factory=list)
    thresholds: list[float] = Field(default_factory=lambda: [0.5, 0.8, 1.0])
    """Fractions of a budget whose crossing (by settled spend) fires `on_threshold`."""
    default_max_output_tokens: int = Field(default=4096, gt=0)
    """Output cap assumed for the worst case when a request sets no max_tokens."""
    unknown_price: Literal["reject", "admit"] = "reject"
    """A hard USD budget covers a call whose model has no price: refuse it (403), or admit
    it reserving `unknown_price_reserve_usd` (and settle to that, since its cost is unknown)."""
    unknown_price_reserve_usd: Decimal = Field(default=Decimal(0), ge=0)
    lease_ttl_s: float = Field(default=900.0, gt=0)
    """A reservation not settled within this time (its process died) is reclaimed."""
    reload_interval_s: float = Field(default=5.0, ge=0)
    """How often a gateway re-reads dynamic rules (CLI/admin changes from elsewhere)."""
    seed_from_ledger: bool = True

    @field_validator("thresholds")
    @classmethod
    def _fractions(cls, v: list[float]) -> list[float]:
        if any(not 0 < t <= 10 for t in v):
            raise ValueError("thresholds are fractions of the limit, in (0, 10]")
        return sorted(set(v))

    @field_validator("store")
    @classmethod
    def _store_url(cls, v: str) -> str:
        if v != "memory" and not v.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("use `memory` or a redis:// URL")
        return v

    @field_validator("definitions")
    @classmethod
    def _definitions_url(cls, v: str) -> str:
        if v != "auto" and not v.startswith(("sqlite:", "redis://", "rediss://", "unix://")):
            raise ValueError("use `auto`, a sqlite:/// URL or a redis:// URL")
        return v

    @model_validator(mode="after")
    def _unique(self) -> BudgetsConfig:
        rules: list[Rule] = [*self.budgets, *self.limits]
        names = [r.name for r in rules]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"rule name(s) used twice: {dupes}")
        return self

    def rules(self) -> list[Rule]:
        out: list[Rule] = [*self.budgets, *self.limits]
        return out

    @property
    def uses_redis(self) -> bool:
        return self.store != "memory"
