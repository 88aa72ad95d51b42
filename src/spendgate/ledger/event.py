"""`UsageEvent`: the one record every call leaves behind, successful or not.

Money fields are integer nano-dollars (see `spendgate.call`); `None` means "we could not
price it", which reports count separately instead of summing as zero. Prompt text is never
part of an event, only `prompt_fingerprint`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson

from spendgate.call import TOKEN_COUNTS
from spendgate.errors import SpendgateError

__all__ = ["COLUMNS", "TAGS", "InvalidEvent", "UsageEvent", "utc_day"]


class InvalidEvent(SpendgateError, ValueError):
    """The event itself cannot be stored (wrong money type, unserialisable JSON field).

    A `ValueError` so the batching writer treats it as a property of the event — retrying
    will never help — rather than of the store."""


def utc_day(ts: float) -> str:
    """The UTC calendar day of a unix time, as `YYYY-MM-DD` (the ledger's daily bucket)."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d")


_DAYS: dict[int, str] = {}
"""Day number → `utc_day` text. Formatting a datetime costs ~5 µs, a dict hit ~0.1 µs, and
a live ledger sees one or two day numbers at a time; bounded so odd inputs cannot grow it."""


def _cached_day(ts: float) -> str:
    number = int(ts // 86400)  # ValueError for NaN, OverflowError for ±inf
    text = _DAYS.get(number)
    if text is None:
        text = utc_day(number * 86400)
        if len(_DAYS) > 4096:
            _DAYS.clear()
        _DAYS[number] = text
    return text


@dataclass(slots=True, kw_only=True)
class UsageEvent:
    """One call as the ledger sees it. Keyword-only: there are too many fields for order."""

    request_id: str
    ts: float
    """Unix seconds when the call was received."""
    endpoint: str
    """"chat" | "messages" | "embeddings"."""
    api: str
    """The client's wire format: "openai" | "anthropic"."""
    requested_model: str
    status: int
    """HTTP status returned to the client."""
    latency_ms: float

    feature: str | None = None
    use_case: str | None = None
    team: str | None = None
    tenant: str | None = None
    user: str | None = None
    key_id: str | None = None

    served_model: str | None = None
    provider: str | None = None
    deployment: str | None = None

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    cache_write_1h_tokens: int = 0
    reasoning_tokens: int = 0
    usage_estimated: bool = False

    cost_nanos: int | None = None
    """None = unknown price, never silently 0."""
    baseline_nanos: int | None = None
    """What the call would have cost without any optimization."""
    savings: dict[str, int] = field(default_factory=dict)
    """Technique → nanos it saved on this call."""
    cost_estimated: bool = False
    price_version: str | None = None

    cache: str | None = None
    """"hit" | "miss" | "semantic-hit" | "bypass" | None."""
    route: dict[str, Any] | None = None
    attempts: list[dict[str, Any]] = field(default_factory=list)
    """One entry per upstream attempt: deployment, status, ms."""
    stream: bool = False
    error_type: str | None = None
    ttfb_ms: float | None = None
    client_disconnected: bool = False
    prompt_fingerprint: str | None = None
    extra: dict[str, Any] | None = None
    """Stages' decisions, free-form JSON."""

    @property
    def day(self) -> str:
        return utc_day(self.ts)

    @property
    def model(self) -> str:
        """The model reports group by: what served the call, else what was asked for."""
        return self.served_model or self.requested_model

    @property
    def savings_nanos(self) -> int:
        return sum(self.savings.values())

    def to_row(self) -> tuple[Any, ...]:
        """Values in `COLUMNS` order, JSON fields as text. Validates the money fields here,
        in the writer thread, so the hot path pays nothing and a bad event is caught before
        it can poison a whole batch."""
        for name in ("cost_nanos", "baseline_nanos"):
            value = getattr(self, name)
            if value is not None and (type(value) is not int):
                raise InvalidEvent(
                    f"{self.request_id}: {name} must be int nanos or None, "
                    f"got {type(value).__name__}"
                )
        savings = self.savings
        for technique, nanos in savings.items():
            if type(nanos) is not int:
                raise InvalidEvent(
                    f"{self.request_id}: savings[{technique!r}] must be int nanos, "
                    f"got {type(nanos).__name__}"
                )
        if not self.request_id:
            raise InvalidEvent("request_id is empty")
        try:
            day = _cached_day(self.ts)
        except (ValueError, OverflowError, OSError) as exc:
            # Unstorable, not transient: the writer must reject it, not retry forever.
            raise InvalidEvent(f"{self.request_id}: ts {self.ts!r} is not a time: {exc}") from exc
        return (
            self.request_id,
            self.ts,
            day,
            self.endpoint,
            self.api,
            self.feature,
            self.use_case,
            self.team,
            self.tenant,
            self.user,
            self.key_id,
            self.requested_model,
            self.served_model,
            self.provider,
            self.deployment,
            self.input_tokens,
            self.output_tokens,
            self.cache_read_tokens,
            self.cache_write_tokens,
            self.cache_write_1h_tokens,
            self.reasoning_tokens,
            int(self.usage_estimated),
            self.cost_nanos,
            self.baseline_nanos,
            _dumps(savings, self.request_id),
            sum(savings.values()),
            int(self.cost_estimated),
            self.price_version,
            self.cache,
            _dumps(self.route, self.request_id),
            _dumps(self.attempts, self.request_id),
            int(self.stream),
            self.status,
            self.error_type,
            self.latency_ms,
            self.ttfb_ms,
            int(self.client_disconnected),
            self.prompt_fingerprint,
            _dumps(self.extra, self.request_id),
        )

    @classmethod
    def from_row(cls, row: tuple[Any, ...]) -> UsageEvent:
        """Inverse of `to_row` (derived columns — day, savings_nanos — are recomputed)."""
        v = dict(zip(COLUMNS, row, strict=True))
        del v["day"], v["savings_nanos"]
        for name in _FLAGS:
            v[name] = bool(v[name])
        for name in ("route", "extra"):
            v[name] = _loads(v[name])
        v["savings"] = _loads(v["savings"]) or {}
        v["attempts"] = _loads(v["attempts"]) or []
        return cls(**v)


TAGS: tuple[str, ...] = ("feature", "use_case", "team", "tenant", "user", "key_id")
"""The attribution tags a call carries (each may be missing)."""

COLUMNS: tuple[str, ...] = (
    "request_id",
    "ts",
    "day",
    "endpoint",
    "api",
    *TAGS,
    "requested_model",
    "served_model",
    "provider",
    "deployment",
    *TOKEN_COUNTS,
    "usage_estimated",
    "cost_nanos",
    "baseline_nanos",
    "savings",
    "savings_nanos",
    "cost_estimated",
    "price_version",
    "cache",
    "route",
    "attempts",
    "stream",
    "status",
    "error_type",
    "latency_ms",
    "ttfb_ms",
    "client_disconnected",
    "prompt_fingerprint",
    "extra",
)
"""Stored column order, shared by every store so rows mean the same thing everywhere."""


def _json_default(obj: Any) -> Any:
    # Stages record Decimal prices in their decisions; keep them exact as strings.
    if isinstance(obj, Decimal):
        return str(obj)
    if isinstance(obj, set | frozenset):
        return sorted(obj, key=str)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def _dumps(value: Any, request_id: str) -> str | None:
    if value is None:
        return None
    if not value:  # the common empty cases, without the encoder (same text it writes)
        if type(value) is dict:
            return "{}"
        if type(value) is list:
            return "[]"
    try:
        return orjson.dumps(value, default=_json_default).decode()
    except TypeError as exc:
        raise InvalidEvent(f"{request_id}: {exc}") from exc


def _loads(text: str | None) -> Any:
    return None if text is None else orjson.loads(text)


_FLAGS = ("usage_estimated", "cost_estimated", "stream", "client_disconnected")
"""Boolean fields, stored as 0/1."""
