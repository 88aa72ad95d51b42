"""The nouns every stage shares: a `Call`, its `Tags`, its `Usage` and its `Cost`.

Money is `Decimal` in memory and integer nano-dollars (1e-9 USD) at rest: provider prices go
down to fractions of a micro-dollar per token (gpt-4o-mini cache reads are $0.075 per million
tokens), so micro-dollar integers would round most single calls; nano-dollars keep every
published price exact to within half a nano-dollar per event, and an int64 sum still holds
$9.2 billion.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, fields, is_dataclass, replace
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any, ClassVar, Literal, TypeVar

__all__ = [
    "API",
    "HIDDEN",
    "KEEP_NONE",
    "NANOS_PER_USD",
    "TAG_NAMES",
    "TOKEN_COUNTS",
    "Call",
    "Cost",
    "Decision",
    "Decisions",
    "Endpoint",
    "Internal",
    "Recorded",
    "Tags",
    "UpstreamHook",
    "Usage",
    "fields_json",
    "format_usd",
    "from_nanos",
    "new_request_id",
    "to_nanos",
]

API = Literal["openai", "anthropic", "responses"]
"""The wire format a body is written in. A call keeps its client's format until a provider
adapter that speaks the other one translates it (so an Anthropic client talking to an
Anthropic deployment is passed through untouched, `cache_control` and all). `responses` is
OpenAI's Responses API (`spendgate.providers.responses`): carried natively to a deployment
that has it, translated through Chat Completions for one that hasn't."""

NANOS_PER_USD = 1_000_000_000


def to_nanos(usd: Decimal) -> int:
    """Round a Decimal amount to integer nano-dollars (banker's rounding, so sums stay unbiased)."""
    return int((usd * NANOS_PER_USD).to_integral_value(rounding=ROUND_HALF_EVEN))


def from_nanos(nanos: int) -> Decimal:
    return Decimal(nanos) / NANOS_PER_USD


def format_usd(amount: Decimal) -> str:
    """Money as people read it, without ever showing a non-zero amount as zero: whole cents
    from $1 (with thousands separators), four decimals from a cent, and below a cent three
    significant digits (a gpt-4o-mini call is about $0.0000315, not $0.000000)."""
    if amount == 0:
        return "0"
    sign = "-" if amount < 0 else ""
    size = abs(amount)
    if size >= 1:
        return f"{sign}{size.quantize(Decimal('0.01'), rounding=ROUND_HALF_EVEN):,}"
    if size >= Decimal("0.01"):
        return sign + format(size.quantize(Decimal("0.0001"), rounding=ROUND_HALF_EVEN), "f")
    exponent = size.adjusted()  # 0.000123 → -4
    quantum = Decimal(1).scaleb(exponent - 2)
    return sign + format(size.quantize(quantum, rounding=ROUND_HALF_EVEN).normalize(), "f")


def new_request_id() -> str:
    return "sg-" + uuid.uuid4().hex


TAG_NAMES: tuple[str, ...] = ("feature", "use_case", "team", "tenant", "user")


@dataclass(frozen=True, slots=True)
class Tags:
    """Who and what caused a call. Every field is optional; reports show a missing one as
    `(none)` rather than dropping the spend."""

    feature: str | None = None
    use_case: str | None = None
    team: str | None = None
    tenant: str | None = None
    user: str | None = None
    key_id: str | None = None

    def merged_over(self, defaults: Tags) -> Tags:
        """These tags, with any field left empty taken from `defaults` (e.g. the virtual key's)."""
        return Tags(
            **{f.name: getattr(self, f.name) or getattr(defaults, f.name) for f in fields(self)}
        )

    def as_dict(self) -> dict[str, str | None]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(slots=True)
class Usage:
    """Tokens one call consumed, split by how they are priced.

    As in pydantic-ai: `input_tokens` is the total input, and the cache buckets are parts of
    it (so uncached input = input − cache_read − cache_write − cache_write_1h). Likewise
    `output_tokens` includes `reasoning_tokens`. Provider-native shapes differ (Anthropic
    reports `input_tokens` *excluding* cache reads and writes); `pricing.usage` converts.

    Audio is a part too, priced apart wherever a provider bills it apart (gpt-4o audio input
    costs 16× its text input): `input_audio_tokens` is the uncached audio inside the input,
    `cache_audio_read_tokens` the audio inside `cache_read_tokens`, `output_audio_tokens` the
    audio inside `output_tokens`. A price sheet without an audio price makes such a call's
    cost unknown, never billed at the text rate.
    """

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    """Cache writes at the default (5-minute) TTL."""
    cache_write_1h_tokens: int = 0
    reasoning_tokens: int = 0
    input_audio_tokens: int = 0
    cache_audio_read_tokens: int = 0
    output_audio_tokens: int = 0
    estimated: bool = False
    """True when the provider reported no usage and these counts came from our tokenizer."""

    @property
    def uncached_input_tokens(self) -> int:
        return max(
            0,
            self.input_tokens
            - self.cache_read_tokens
            - self.cache_write_tokens
            - self.cache_write_1h_tokens,
        )

    @property
    def audio_tokens(self) -> int:
        return self.input_audio_tokens + self.cache_audio_read_tokens + self.output_audio_tokens

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            input_tokens=self.input_tokens + other.input_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
            cache_read_tokens=self.cache_read_tokens + other.cache_read_tokens,
            cache_write_tokens=self.cache_write_tokens + other.cache_write_tokens,
            cache_write_1h_tokens=self.cache_write_1h_tokens + other.cache_write_1h_tokens,
            reasoning_tokens=self.reasoning_tokens + other.reasoning_tokens,
            input_audio_tokens=self.input_audio_tokens + other.input_audio_tokens,
            cache_audio_read_tokens=self.cache_audio_read_tokens + other.cache_audio_read_tokens,
            output_audio_tokens=self.output_audio_tokens + other.output_audio_tokens,
            estimated=self.estimated or other.estimated,
        )


TOKEN_COUNTS: tuple[str, ...] = (
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "cache_write_1h_tokens",
    "reasoning_tokens",
)
"""The `Usage` counts kept with a call: the ledger's token columns, and what the exact
cache stores with an answer (the audio parts are not kept)."""


@dataclass(frozen=True, slots=True)
class Cost:
    """What a usage costs under one price. Each part maps to one usage bucket; `total` is
    their exact sum. A cost whose price is unknown is `None` at the call site, never zero."""

    input: Decimal = Decimal(0)
    """Uncached input tokens."""
    cache_read: Decimal = Decimal(0)
    cache_write: Decimal = Decimal(0)
    """Both cache-write TTLs."""
    output: Decimal = Decimal(0)
    """All output tokens, reasoning included (providers bill reasoning as output)."""
    other: Decimal = Decimal(0)
    """Anything a price sheet bills per request rather than per token."""
    estimated: bool = False
    price_version: str = ""
    total: Decimal = field(init=False, repr=False)
    """The exact sum of the parts, computed once (it is read several times per call)."""

    def __post_init__(self) -> None:
        total = self.input + self.cache_read + self.cache_write + self.output + self.other
        object.__setattr__(self, "total", total)

    @property
    def total_nanos(self) -> int:
        return to_nanos(self.total)

    def as_dict(self) -> dict[str, Any]:
        return {
            "cost_usd": format(self.total, "f"),
            "input_usd": format(self.input, "f"),
            "cache_read_usd": format(self.cache_read, "f"),
            "cache_write_usd": format(self.cache_write, "f"),
            "output_usd": format(self.output, "f"),
            "other_usd": format(self.other, "f"),
            "estimated": self.estimated,
            "price_version": self.price_version,
        }


Endpoint = Literal[
    "chat", "messages", "embeddings", "responses", "count_tokens", "batches", "files", "other"
]
"""`other`: a request refused before it named an endpoint (an unknown route, a header block
over the limit); it still gets its ledger row. `count_tokens`, `batches` and `files` rows are
refusals of those routes (their successful calls cost nothing and leave no row); a batch's
result lines are recorded under the endpoint each line called."""


KEEP_NONE: dict[str, Any] = {"keep_none": True}
"""Field metadata: a decision field written to the ledger even when None (by default a
None field is left out, as the stage never set it)."""
HIDDEN: dict[str, Any] = {"hidden": True}
"""Field metadata: the stage's own bookkeeping, not written to the ledger."""


class Decision:
    """What one stage decided about one call, recorded in its ledger event.

    Each stage defines its own subclass (a dataclass, in the stage's module) and adds it
    with `call.decisions.add(...)`; `key` is its name in the ledger's `extra.decisions`
    (`route` goes to the event's `route` column instead). `as_json()` is the ledger's
    shape: the fields the stage set, by name (None fields left out unless marked
    `KEEP_NONE`); a subclass with another shape overrides it."""

    key: ClassVar[str] = ""

    def ledger_key(self) -> str:
        return type(self).key

    def as_json(self) -> Any:
        return fields_json(self)


def fields_json(obj: Any) -> dict[str, Any]:
    """A decision dataclass's fields as the ledger writes them (see `Decision`)."""
    out: dict[str, Any] = {}
    for f in fields(obj):
        value = getattr(obj, f.name)
        if f.metadata.get("hidden") or (value is None and not f.metadata.get("keep_none")):
            continue
        out[f.metadata.get("name", f.name)] = _to_json(value)
    return out


def _to_json(value: Any) -> Any:
    if isinstance(value, Decision):
        return value.as_json()
    if is_dataclass(value) and not isinstance(value, type):
        return fields_json(value)
    if isinstance(value, dict):
        return {k: _to_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_to_json(v) for v in value]
    return value


@dataclass
class Internal(Decision):
    """Marks a call the gateway made itself (a judge, a label twin, a cascade's side call):
    recorded as `"internal": purpose`, and never routed or prompt-logged again."""

    key: ClassVar[str] = "internal"
    purpose: str

    def as_json(self) -> Any:
        return self.purpose


class Recorded(Decision):
    """A decision read back from JSON (a deferred call restored from the state store): kept
    as it was written, so its ledger row says what the live call decided."""

    def __init__(self, key: str, value: Any) -> None:
        self._key = key
        self.value = value

    def ledger_key(self) -> str:
        return self._key

    def as_json(self) -> Any:
        return self.value


D = TypeVar("D", bound=Decision)


class Decisions:
    """A call's decisions, at most one per key, typed: `call.decisions.get(RouteDecision)`
    is the route stage's `RouteDecision` or None. `"route" in call.decisions` tests a key
    (also for decisions restored from JSON)."""

    __slots__ = ("_items",)

    def __init__(self, items: Iterable[Decision] = ()) -> None:
        self._items: dict[str, Decision] = {d.ledger_key(): d for d in items}

    def add(self, decision: Decision) -> None:
        self._items[decision.ledger_key()] = decision

    def get(self, kind: type[D]) -> D | None:
        found = self._items.get(kind.key)
        return found if isinstance(found, kind) else None

    def ensure(self, kind: type[D]) -> D:
        """This call's decision of that kind, created empty when there is none yet."""
        found = self.get(kind)
        if found is None:
            found = kind()
            self.add(found)
        return found

    def update(self, other: Decisions) -> None:
        self._items.update(other._items)

    def copy(self) -> Decisions:
        return Decisions(self._items.values())

    def __contains__(self, key: object) -> bool:
        return key in self._items

    def __iter__(self) -> Iterator[Decision]:
        return iter(self._items.values())

    def __bool__(self) -> bool:
        return bool(self._items)

    def __repr__(self) -> str:
        return f"Decisions({list(self._items.values())!r})"

    def as_json(self) -> dict[str, Any]:
        """Key → the decision's JSON, as the ledger (and the deferral queue) store it."""
        return {key: d.as_json() for key, d in self._items.items()}

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> Decisions:
        return cls(Recorded(k, v) for k, v in (data or {}).items())


UpstreamHook = Callable[["Call", API], "Call"]
"""`hook(call, upstream_api)`: the call to send to a deployment of that wire format."""


@dataclass(slots=True)
class Call:
    """One request on its way through the pipeline.

    The edge builds it; stages read it and record their decisions on it (never on the HTTP
    request). `body` is the request in `api`'s wire format; `model` starts as the requested
    model and is what routing changes. Savings are credited per technique as stages act.
    """

    endpoint: Endpoint
    api: API
    body: dict[str, Any]
    requested_model: str
    tags: Tags = field(default_factory=Tags)
    request_id: str = field(default_factory=new_request_id)
    stream: bool = False
    received_at: float = field(default_factory=time.time)
    started: float = field(default_factory=time.perf_counter)
    model: str = ""
    """The model that will serve the call (routing may change it)."""
    decisions: Decisions = field(default_factory=Decisions)
    """What each stage decided, typed (recorded in the ledger event)."""
    savings: dict[str, Decimal] = field(default_factory=dict)
    """Technique → USD it saved on this call (filled by the stage that acted)."""
    cache_outcome: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    """Lower-cased request headers the stages may consult (x-spendgate-*)."""
    upstream_hooks: list[UpstreamHook] = field(default_factory=list)
    """How a stage that shaped `body` for one upstream wire format adapts it to another:
    the dispatcher sends each attempt `for_upstream(format of that deployment)`, so it
    never reads a stage's decision to undo it (the prefix stage's breakpoints on an OpenAI
    body meant for Anthropic are dropped for an OpenAI-format fallback)."""

    def __post_init__(self) -> None:
        if not self.model:
            self.model = self.requested_model

    def for_upstream(self, api: API) -> Call:
        """This call as sent to a deployment speaking `api` (itself when no hook applies)."""
        call = self
        for hook in self.upstream_hooks:
            call = hook(call, api)
        return call

    def with_body(self, body: dict[str, Any]) -> Call:
        return replace(self, body=body)
