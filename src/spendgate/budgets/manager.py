"""The budget manager: which rules cover a call, what it could cost at worst, and the
reserve → settle cycle against the counter store.

Worst case = counted input tokens × input price + output cap × output price, on the model
the call asks for, priced as its first deployment bills it (the larger of "all input
uncached" and "all input written to the prompt cache", since a later stage may add cache
breakpoints). The output cap is `max_completion_tokens` / `max_tokens` (× `n` choices), or
`default_max_output_tokens`. Settling replaces the reservation with `reply.cost`, so the
counters end up equal to the ledger's sums.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from spendgate.budgets.config import SCOPE_TAGS, BudgetRule, BudgetsConfig, RateLimitRule, Rule
from spendgate.budgets.decision import BudgetDecision
from spendgate.budgets.definitions import DefinitionStore
from spendgate.budgets.outbox import Outbox, Pending
from spendgate.budgets.periods import Period, human_delay, period_at
from spendgate.budgets.store import (
    Counter,
    CounterStore,
    MemoryStore,
    Settlement,
    StoreUnavailable,
)
from spendgate.call import Call, Usage, from_nanos, to_nanos
from spendgate.errors import GatewayError
from spendgate.pricing import Pricer, normalize_tier
from spendgate.providers.dialects import dialect_for
from spendgate.reply import Reply
from spendgate.tokens import (
    count_embedding_input,
    estimated_counts,
)

if TYPE_CHECKING:
    from spendgate.dispatch.table import ModelTable
    from spendgate.ledger import LedgerStore
    from spendgate.pricing import PriceCatalog

__all__ = [
    "Admission",
    "BudgetManager",
    "ScopedBudget",
    "ThresholdHook",
    "counter_prefix",
    "ledger_spend",
    "on_threshold",
    "usd",
]

log = logging.getLogger(__package__)  # "spendgate.budgets", the name operators filter on


@dataclass(frozen=True, slots=True)
class ScopedBudget:
    """One concrete budget: a rule applied to one scope (e.g. tenant=acme) in one period."""

    rule: BudgetRule
    scope: dict[str, str]
    period: str
    resets_at: float

    @property
    def name(self) -> str:
        return self.rule.name


ThresholdHook = Callable[[ScopedBudget, Decimal, Decimal, float], object]
"""`hook(budget, spent_usd, limit_usd, fraction)`, called once per crossing of a threshold
fraction by settled spend, in the process whose settlement crossed it (once across all
replicas with the Redis store). Runs on the event loop: hand slow work to a task/queue."""

on_threshold: list[ThresholdHook] = []
"""Process-wide subscribers (e.g. the alerts module); each manager also has its own list."""


def usd(nanos: int) -> str:
    """Nano-dollars as a plain USD string, no exponent (`0.000123`)."""
    value = from_nanos(nanos)
    return format(value.quantize(Decimal("0.000000001")).normalize(), "f")


def counter_prefix(rule: Rule) -> str:
    return ("b:" if isinstance(rule, BudgetRule) else "r:") + rule.name + ":"


def ledger_spend(
    rule: BudgetRule, ledger: LedgerStore, period: Period, *, until: float | None = None
) -> dict[str, tuple[dict[str, str], int]]:
    """Counter key → (concrete scope, nano-dollars the ledger holds for it in `period`, or
    in the part of it before `until`): what a budget's counters should read, computed from
    the source of truth."""
    dims = {"key": "key_id", "model": "requested_model"}
    wild = [t for t, v in rule.scope.items() if v == "*"]
    by = [dims.get(t, t) for t in wild]
    filters = {dims.get(t, t): v for t, v in rule.scope.items() if v != "*"}
    since = datetime.fromtimestamp(period.start, UTC)
    end = period.end if until is None else max(period.start, min(period.end, until))
    until_dt = datetime.fromtimestamp(end, UTC)
    out: dict[str, tuple[dict[str, str], int]] = {}
    for row in ledger.spend(by, since=since, until=until_dt, filters=filters or None):
        concrete = dict(rule.scope)
        values = [row.keys.get(dim) for dim in by]
        if any(v is None or v == "(none)" for v in values):
            continue  # calls without the tag are not under a per-value budget
        concrete.update({t: str(v) for t, v in zip(wild, values, strict=True)})
        key = f"b:{rule.name}:{_scope_text(concrete)}:{period.id}"
        out[key] = (concrete, int(row.cost_nanos or 0))
    return out


def _scope_text(scope: dict[str, str]) -> str:
    return "&".join(f"{k}={v}" for k, v in sorted(scope.items())) or "all"


def _scope_desc(scope: dict[str, str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(scope.items())) or "all traffic"


def _counters_for(
    matched: list[tuple[Rule, dict[str, str]]], now: float, nanos: int, tokens: int
) -> tuple[list[Counter], dict[str, ScopedBudget]]:
    """The counters a call reserves on (a budget's USD counter for its period; a limit's
    request and token counters for this minute), and the concrete budget of each USD one."""
    counters: list[Counter] = []
    budgets: dict[str, ScopedBudget] = {}
    for rule, concrete in matched:
        scope = _scope_text(concrete)
        hard = rule.mode == "hard"
        if isinstance(rule, BudgetRule):
            period = period_at(rule.period, now)
            key = f"b:{rule.name}:{scope}:{period.id}"
            limit = to_nanos(rule.limit_usd)
            counters.append(_counter(key, rule.name, "usd", limit, hard, nanos, period, concrete))
            budgets[key] = ScopedBudget(rule, concrete, period.id, period.end)
            continue
        window = period_at("minute", now)
        prefix = f"r:{rule.name}:{scope}"
        if rule.requests_per_minute:
            key = f"{prefix}:req:{window.id}"
            limit = rule.requests_per_minute
            counters.append(_counter(key, rule.name, "requests", limit, hard, 1, window, concrete))
        if rule.tokens_per_minute:
            key = f"{prefix}:tok:{window.id}"
            limit = rule.tokens_per_minute
            counters.append(
                _counter(key, rule.name, "tokens", limit, hard, tokens, window, concrete)
            )
    return counters, budgets


def _counter(
    key: str,
    rule: str,
    kind: str,
    limit: int,
    hard: bool,
    amount: int,
    period: Period,
    scope: dict[str, str],
) -> Counter:
    return Counter(
        key, rule, kind, limit, hard, amount, period.keep_until, period.end, scope, period.id
    )


@dataclass(slots=True)
class Admission:
    """What one call holds: its lease (the request id) and the counters it reserved on."""

    lease: str
    counters: list[Counter]
    nanos: int
    tokens: int
    decision: dict[str, Any]
    price_unknown: bool = False
    settled: bool = False
    budgets: dict[str, ScopedBudget] = field(default_factory=dict)
    """Counter key → the concrete budget (USD counters only), for threshold hooks."""
    received_at: float = 0.0
    once: bool = False
    """Admitted on this replica's local allowance while the store was away: never reserved
    in the store, so its settlement is applied there once (outbox) when it is back."""


class BudgetManager:
    def __init__(
        self,
        config: BudgetsConfig,
        *,
        catalog: PriceCatalog,
        table: ModelTable | None,
        pricer: Pricer | None = None,
        counters: CounterStore,
        definitions: DefinitionStore | None = None,
        ledger: LedgerStore | None = None,
        ledger_id: str = "ledger",
        flush_ledger: Callable[[float], bool] | None = None,
        outbox: Outbox | None = None,
    ) -> None:
        self.config = config
        self.catalog = catalog
        self.pricer = pricer or Pricer(catalog, table.deployments.values() if table else ())
        self.table = table
        self.counters = counters
        self.definitions = definitions
        self.ledger = ledger
        self.on_threshold: list[ThresholdHook] = []
        self.on_refusal: list[Callable[[str, str], object]] = []
        """`hook(rule, kind)` per refused call (kind: usd, requests, tokens, store, price)."""
        rules: list[Rule] = [*config.budgets, *config.limits]
        self.static: dict[str, Rule] = {r.name: r for r in rules}
        self.dynamic: dict[str, Rule] = {}
        self._seeded: set[str] = set()
        self._pending: set[asyncio.Task[None]] = set()
        self._reloading = False
        self._last_reload = 0.0
        self._thresholds = [Decimal(str(t)) for t in config.thresholds]
        # -- faults of a shared store (see docs/budgets.md, "Redis faults") --
        self.ledger_id = ledger_id
        """Names the ledger this process writes: replicas sharing it seed it once."""
        self.flush_ledger = flush_ledger
        self.outbox = outbox or Outbox(None)
        self._live: dict[str, Admission] = {}
        """Admissions not settled yet (re-held in the store after it came back empty)."""
        self._seen: dict[str, int] = {}
        """Counter key → spent + reserved as last seen in the store (fail-open shares)."""
        self._local: dict[str, int] = {}
        """Counter key → fail-open spend of this replica not in `_seen` yet (settled in the
        store or not): it counts in full against this replica's share."""
        self._landed: dict[str, int] = {}
        """Counter key → the part of `_local` settled in the store since `_seen` was taken:
        the next snapshot includes it, and only then does it leave `_local`."""
        self._early: dict[str, int] = {}
        """Counter key → what calls received before the epoch's cutoff added in the store
        by settling (reported to the seed, which leaves it out)."""
        self._replicas = 1
        self._registered = False
        self._replica_id = uuid.uuid4().hex[:12]
        self._drainer: asyncio.Task[None] | None = None
        self._store_back = asyncio.Event()
        self._heartbeat: asyncio.Task[None] | None = None
        self._reseed_handle: asyncio.TimerHandle | None = None
        self.fault_stats = {"outboxed": 0, "outbox_applied": 0, "fail_open_admitted": 0,
                            "fail_open_refused": 0, "reseeds": 0}  # fmt: skip
        if getattr(counters, "epochs", False):
            counters.on_epoch = self._on_epoch  # type: ignore[attr-defined]
        if definitions is not None:
            try:
                self._apply_dynamic(definitions.all())
            except Exception as exc:  # Redis down at start: carry on with YAML rules
                log.warning("could not load dynamic budget rules from %s: %s", definitions.url, exc)
        self._last_reload = time.monotonic()
        self._seed_all()

    # ----------------------------------------------------------------- rules
    @property
    def rules(self) -> list[Rule]:
        return [*self.static.values(), *self.dynamic.values()]

    def rule(self, name: str) -> Rule | None:
        return self.static.get(name) or self.dynamic.get(name)

    def source(self, name: str) -> str:
        return "config" if name in self.static else "dynamic"

    def set_rule(self, rule: Rule) -> None:
        """Create or replace a dynamic rule and persist it (every replica picks it up)."""
        if rule.name in self.static:
            raise ValueError(f"rule {rule.name!r} is defined in the config file; change it there")
        if self.definitions is not None:
            self.definitions.put(rule)
        # Copy on write: the event loop may be iterating the rules while the admin API
        # changes them from a worker thread.
        self.dynamic = {**self.dynamic, rule.name: rule}
        self._seed_all()

    def remove_rule(self, name: str) -> bool:
        if name in self.static:
            raise ValueError(f"rule {name!r} is defined in the config file; remove it there")
        found = name in self.dynamic
        self.dynamic = {k: v for k, v in self.dynamic.items() if k != name}
        if self.definitions is not None:
            found = self.definitions.delete(name) or found
        return found

    def reload_now(self) -> None:
        if self.definitions is not None:
            self._apply_dynamic(self.definitions.all())
            self._seed_all()

    def _apply_dynamic(self, rules: Sequence[Rule]) -> None:
        self.dynamic = {r.name: r for r in rules if r.name not in self.static}

    def _maybe_reload(self) -> None:
        interval = self.config.reload_interval_s
        if self.definitions is None or not interval or self._reloading:
            return
        now = time.monotonic()
        if now - self._last_reload < interval:
            return
        self._last_reload = now
        self._reloading = True
        self._track(asyncio.ensure_future(self._reload()))

    async def _reload(self) -> None:
        try:
            assert self.definitions is not None
            rules = await asyncio.to_thread(self.definitions.all)
            self._apply_dynamic(rules)
            self._seed_all()
        except Exception as exc:
            log.warning("could not reload budget rules from %s: %s", self.definitions, exc)
        finally:
            self._reloading = False

    def _seed_all(self) -> None:
        """Memory counters start from the ledger's spend in the current period, so a restart
        (or a rule made mid-period) does not hand out the budget again."""
        if not (
            self.config.seed_from_ledger
            and self.ledger is not None
            and isinstance(self.counters, MemoryStore)
        ):
            return
        now = time.time()
        for rule in self.rules:
            if not isinstance(rule, BudgetRule):
                continue
            period = period_at(rule.period, now)
            mark = f"{rule.name}|{_scope_text(rule.scope)}|{period.id}"
            if mark in self._seeded:
                continue
            self._seeded.add(mark)
            try:
                self._seed(rule, period)
            except Exception as exc:
                log.warning("could not seed budget %s from the ledger: %s", rule.name, exc)

    def _seed(self, rule: BudgetRule, period: Period) -> None:
        assert self.ledger is not None and isinstance(self.counters, MemoryStore)
        for key, (_, nanos) in ledger_spend(rule, self.ledger, period).items():
            if nanos:
                self.counters.seed_now(key, nanos, period.keep_until)

    # ----------------------------------------------------------------- matching
    def _matches(self, call: Call) -> list[tuple[Rule, dict[str, str]]]:
        out = []
        for rule in self.rules:
            concrete: dict[str, str] = {}
            for tag, want in rule.scope.items():
                attr = SCOPE_TAGS[tag]
                value = call.requested_model if attr == "model" else getattr(call.tags, attr)
                if value is None or (want != "*" and value != want):
                    break
                concrete[tag] = value
            else:
                out.append((rule, concrete))
        return out

    def _tokens(self, call: Call) -> tuple[int, int]:
        body = call.body
        model = call.requested_model
        if call.endpoint == "embeddings":
            return count_embedding_input(model, body.get("input")), 0
        dialect = dialect_for(call.api)
        with estimated_counts(upper=True):  # a worst case needs no tokenizer tables
            n_in = dialect.count_request(model, body)
        cap = (
            body.get("max_completion_tokens")
            or body.get("max_tokens")
            or body.get("max_output_tokens")
        )
        out = cap if isinstance(cap, int) and cap > 0 else self.config.default_max_output_tokens
        out *= dialect.answers_per_call(body)
        return n_in, out

    def worst_case(self, call: Call, n_in: int, n_out: int) -> Decimal | None:
        """The most the call can cost on its requested model; None when unpriced."""
        model = call.requested_model
        deps = self.table.serving(model) if self.table is not None else []
        if self.table is not None and not deps:
            return Decimal(0)  # not served: the dispatcher answers 404, which costs nothing
        tier = normalize_tier(call.body.get("service_tier"))
        base = self.pricer.cost(
            model, Usage(input_tokens=n_in, output_tokens=n_out), service_tier=tier
        )
        if base is None:
            return None
        worst = base.total
        if call.endpoint != "embeddings" and n_in:
            written = self.pricer.cost(
                model,
                Usage(input_tokens=n_in, output_tokens=n_out, cache_write_tokens=n_in),
                service_tier=tier,
            )
            if written is not None:
                worst = max(worst, written.total)
        return worst

    # ----------------------------------------------------------------- reserve
    async def admit(self, call: Call) -> Admission | None:
        """Reserve the call's worst case on every counter covering it, atomically, or raise
        the GatewayError that refuses it (429 hard budget/limit, 403 unpriced, 503 store)."""
        self._maybe_reload()
        matched = self._matches(call)
        if not matched:
            return None
        self._start_background()
        await self._register_replica()
        now = time.time()
        has_budget = any(isinstance(r, BudgetRule) for r, _ in matched)
        needs_tokens = has_budget or any(
            isinstance(r, RateLimitRule) and r.tokens_per_minute for r, _ in matched
        )
        n_in, n_out = self._tokens(call) if needs_tokens else (0, 0)
        nanos, unknown = self._worst_nanos(call, matched, n_in, n_out) if has_budget else (0, False)
        tokens = n_in + n_out
        counters, budgets = _counters_for(matched, now, nanos, tokens)
        decision: dict[str, Any] = {
            "rules": sorted({c.rule for c in counters}),
            "reserved_nanos": nanos if has_budget else None,
            "reserved_tokens": tokens if needs_tokens else None,
        }
        if unknown:
            decision["price_unknown"] = True
        call.decisions.add(BudgetDecision(decision))
        admission = Admission(
            call.request_id, counters, nanos, tokens, decision, unknown,
            budgets=budgets, received_at=call.received_at,
        )  # fmt: skip
        # settled before this reserve: in the snapshot it returns of these counters
        landed = {c.key: self._landed[c.key] for c in counters if c.key in self._landed}
        try:
            result = await self.counters.reserve(
                call.request_id, counters, now, self.config.lease_ttl_s
            )
        except StoreUnavailable as exc:
            return self._admit_store_down(call, admission, exc)
        self._replicas = max(1, getattr(self.counters, "replicas", 1))
        self._forget_landed(landed)
        if len(self.outbox):
            self._store_back.set()  # the store answers again: apply the outbox now
        for c, state in zip(counters, result.states, strict=True):
            if c.kind == "usd":
                self._seen[c.key] = state.spent + state.reserved + (c.amount if result.ok else 0)
        if not result.ok:
            first = counters[result.refused[0]]
            self._refused(first.rule, first.kind)
            raise self._refusal(counters, result.refused, result.states, decision, now)
        soft_over = sorted(
            {
                c.rule
                for c, s in zip(counters, result.states, strict=True)
                if not c.hard and s.spent + s.reserved + c.amount > c.limit
            }
        )
        if soft_over:
            decision["soft_exceeded"] = soft_over
        self._live[admission.lease] = admission
        return admission

    async def _register_replica(self) -> None:
        """Count this replica among the live ones (once) before its first reservation."""
        if not self._registered and getattr(self.counters, "epochs", False):
            self._registered = True
            try:
                beat = self.counters.heartbeat  # type: ignore[attr-defined]
                self._replicas = max(1, await beat(self._replica_id, self.config.heartbeat_s * 3))
            except StoreUnavailable:
                self._registered = False

    def _worst_nanos(
        self, call: Call, matched: list[tuple[Rule, dict[str, str]]], n_in: int, n_out: int
    ) -> tuple[int, bool]:
        """(nanos to reserve, price unknown); an unpriced model under a hard budget is refused
        when `budgets.unknown_price: reject`, else reserves the configured fallback."""
        worst = self.worst_case(call, n_in, n_out)
        if worst is not None:
            return to_nanos(worst), False
        hard_names = [r.name for r, _ in matched if isinstance(r, BudgetRule) and r.mode == "hard"]
        if hard_names and self.config.unknown_price == "reject":
            call.decisions.add(BudgetDecision({"rejected_by": hard_names, "price_unknown": True}))
            self._refused(hard_names[0], "price")
            raise GatewayError(
                403,
                f"The price of model `{call.requested_model}` is unknown, so budget "
                f"'{hard_names[0]}' cannot be enforced on it; this gateway refuses "
                "unpriced models under a hard budget (budgets.unknown_price: reject).",
                type="permission_error",
                param="model",
                code="budget_price_unknown",
            )
        return to_nanos(self.config.unknown_price_reserve_usd), True

    def _admit_store_down(
        self, call: Call, admission: Admission, exc: StoreUnavailable
    ) -> Admission:
        """The store did not answer: admit within this replica's local share of the last
        known headroom (`budgets.fail_open`), or raise the 503."""
        counters, decision = admission.counters, admission.decision
        decision["store_error"] = str(exc)[:200]
        self._refused("(store)", "store")
        release = Pending(call.request_id, call.received_at, False, counters,
                          [0] * len(counters))  # fmt: skip
        if not self.config.fail_open:
            if exc.maybe_applied:
                self._to_outbox(release, "reservation outcome unknown")
            raise GatewayError(
                503,
                "The budget store is unreachable and this gateway is configured to fail "
                "closed (budgets.fail_open: false); try again shortly.",
                type="server_error",
                code="budget_store_unavailable",
                headers={"retry-after": "1"},
            ) from None
        room = self._local_room(counters)
        if room is None:
            return self._admit_locally(admission)
        self.fault_stats["fail_open_refused"] += 1
        decision["fail_open_refused"] = room
        if exc.maybe_applied:  # give back a reservation Redis may still make
            self._to_outbox(release, "reservation outcome unknown")
        raise GatewayError(
            503,
            f"The budget store is unreachable and this gateway's local allowance for "
            f"budget '{room}' is used up (budgets.fail_open keeps each replica within "
            "its share of the budget's last known headroom); try again shortly.",
            type="server_error",
            code="budget_store_unavailable",
            headers={"retry-after": "1"},
        ) from None

    def _admit_locally(self, admission: Admission) -> Admission:
        counters, decision = admission.counters, admission.decision
        hard_usd = [c for c in counters if c.kind == "usd" and c.hard]
        decision["fail_open"] = True
        decision["fail_open_share"] = {
            "replicas": self._replicas,
            "seen_nanos": {c.key: self._seen.get(c.key) for c in hard_usd},
            "local_nanos": {c.key: self._local.get(c.key, 0) for c in hard_usd},
        }
        self.fault_stats["fail_open_admitted"] += 1
        for c in counters:
            if c.kind == "usd":
                self._local[c.key] = self._local.get(c.key, 0) + c.amount
        admission.once = True
        self._live[admission.lease] = admission
        return admission

    def _refused(self, rule: str, kind: str) -> None:
        for hook in self.on_refusal:
            try:
                hook(rule, kind)
            except Exception:
                log.exception("budget refusal hook %r failed", hook)

    def _refusal(
        self,
        counters: list[Counter],
        refused: list[int],
        states: Sequence[Any],
        decision: dict[str, Any],
        now: float,
    ) -> GatewayError:
        first = counters[refused[0]]
        state = states[refused[0]]
        names = sorted({counters[i].rule for i in refused})
        decision["rejected_by"] = names
        resets = max(counters[i].resets_at for i in refused)
        retry = max(1, math.ceil(resets - now))
        reset_iso = datetime.fromtimestamp(first.resets_at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        when = f"It resets at {reset_iso} (in {human_delay(first.resets_at - now)})."
        scope = _scope_desc(dict(first.scope))
        if first.kind == "usd":
            rule = self.rule(first.rule)
            period = rule.period if isinstance(rule, BudgetRule) else first.period
            alone = first.amount > first.limit
            need = (
                f"this request alone could cost up to ${usd(first.amount)}, more than the "
                "whole budget"
                if alone
                else f"this request could cost up to ${usd(first.amount)}"
            )
            message = (
                f"Budget '{first.rule}' ({scope}) is exhausted: ${usd(state.spent)} spent and "
                f"${usd(state.reserved)} held by calls in flight, of ${usd(first.limit)} per "
                f"{period}; {need}. {when}"
            )
            kind, code = "insufficient_quota", "budget_exceeded"
        else:
            unit = first.kind
            message = (
                f"Rate limit '{first.rule}' ({scope}) reached: {state.spent + state.reserved} "
                f"of {first.limit} {unit} per minute used; this request needs {first.amount}. "
                f"{when}"
            )
            kind, code = unit, "rate_limit_exceeded"
        return GatewayError(
            429,
            message,
            type=kind,
            code=code,
            headers={"retry-after": str(retry), "x-spendgate-budget": first.rule},
        )

    # ----------------------------------------------------------------- settle
    def _actuals(self, adm: Admission, reply: Reply | None) -> list[int]:
        if reply is None:  # the call failed before any reply: nothing was billed
            cost_nanos, tokens = 0, 0
        else:
            usage = reply.usage
            tokens = usage.total_tokens if usage is not None else 0
            if reply.cost is not None:
                cost_nanos = reply.cost.total_nanos
            else:  # unpriced: keep what was reserved, the best we know
                cost_nanos = adm.nanos if usage is not None or reply.status < 400 else 0
        return [
            1 if c.kind == "requests" else tokens if c.kind == "tokens" else cost_nanos
            for c in adm.counters
        ]

    async def settle(self, adm: Admission, reply: Reply | None) -> None:
        """Replace the reservation with what the call cost (0 when it failed)."""
        if adm.settled:
            return
        adm.settled = True
        await self._settle(adm, self._record_actuals(adm, reply))

    async def _settle(self, adm: Admission, actual: list[int]) -> None:
        self._live.pop(adm.lease, None)
        if adm.once:
            for c, amount in zip(adm.counters, actual, strict=True):
                if c.kind == "usd":
                    self._local[c.key] = self._local.get(c.key, 0) + amount - c.amount
        pending = Pending(adm.lease, adm.received_at, adm.once, adm.counters, actual)
        try:  # settlements commute (and are idempotent): no need to wait behind the outbox
            how = Settlement(received_at=adm.received_at, once=adm.once)
            spent = await self.counters.settle(adm.lease, adm.counters, actual, how)
        except StoreUnavailable as exc:
            self._to_outbox(pending, str(exc))
            adm.decision["settle_error"] = str(exc)[:200]
            adm.decision["settle_queued"] = True
            return
        self._settled_in_store(pending, spent)
        self._crossings(adm, spent)

    def _to_outbox(self, pending: Pending, why: str) -> None:
        self.outbox.put(pending)
        self.fault_stats["outboxed"] += 1
        if self.fault_stats["outboxed"] == 1 or len(self.outbox) == 1:
            log.warning("budget settlement %s queued in the outbox: %s", pending.lease, why)
        self._start_drainer()

    def _settled_in_store(self, pending: Pending, spent: list[tuple[int, int]]) -> None:
        if pending.once:
            for c, amount in zip(pending.counters, pending.actual, strict=True):
                if c.kind == "usd":
                    # In the store now, but not in `_seen` until the next snapshot: it
                    # stays in `_local` (moving it into `_seen` would divide our own spend
                    # over the replicas and hand two thirds of it back as allowance).
                    self._landed[c.key] = self._landed.get(c.key, 0) + amount
        cutoff = getattr(self.counters, "cutoff", 0.0)
        if pending.received_at < cutoff:
            # In the seed's window: what it added here is reported with the next seed
            # (its ledger row is submitted by then), which then leaves it out.
            for c, amount, (before, after) in zip(
                pending.counters, pending.actual, spent, strict=True
            ):
                if c.kind == "usd" and amount and after - before == amount:
                    self._early[c.key] = self._early.get(c.key, 0) + amount
            self._reseed_soon()

    def settle_soon(self, adm: Admission, reply: Reply | None) -> None:
        """From a completion callback (which cannot await): settle now when the store needs
        no I/O, else in a task that `aclose` waits for. The settled amounts are recorded in
        the decision right away either way; only threshold crossings of a task-settled call
        arrive after its ledger row was built (they still reach the hooks)."""
        if adm.settled:
            return
        adm.settled = True
        actual = self._record_actuals(adm, reply)
        if self.counters.synchronous:
            self._live.pop(adm.lease, None)
            self._crossings(adm, self.counters.settle_now(adm.lease, adm.counters, actual))
            return
        self._track(asyncio.ensure_future(self._settle(adm, actual)))

    # ----------------------------------------------------------------- store faults
    def _forget_landed(self, landed: dict[str, int]) -> None:
        """A snapshot was taken after these settlements landed: it holds them now."""
        for key, amount in landed.items():
            for table in (self._local, self._landed):
                left = table.get(key, 0) - amount
                if left > 0:
                    table[key] = left
                else:
                    table.pop(key, None)

    def _local_room(self, counters: list[Counter]) -> str | None:
        """While the store is away: None when this replica may admit the call on its local
        allowance, else the name of the budget whose allowance it would pass. A hard USD
        counter's allowance is this replica's share of the headroom last seen in the store
        (limit − spent − reserved, split over the live replicas), capped by
        `fail_open_allowance_usd`; a counter never seen gets the cap alone (0 when unset)."""
        cap = self.config.fail_open_allowance_usd
        cap_nanos = to_nanos(cap) if cap is not None else None
        for c in counters:
            if c.kind != "usd" or not c.hard:
                continue
            seen = self._seen.get(c.key)
            share = None if seen is None else max(0, c.limit - seen) // max(1, self._replicas)
            options = [x for x in (share, cap_nanos) if x is not None]
            room = min(options) if options else 0
            if self._local.get(c.key, 0) + c.amount > room:
                return c.rule
        return None

    def _start_background(self) -> None:
        if self._drainer is None and len(self.outbox):
            self._start_drainer()
        if (
            self._heartbeat is None
            and getattr(self.counters, "epochs", False)
            and self.config.heartbeat_s
        ):
            self._heartbeat = asyncio.ensure_future(self._beat())

    def _start_drainer(self) -> None:
        if self._drainer is None or self._drainer.done():
            self._drainer = asyncio.ensure_future(self._drain())

    async def _drain(self) -> None:
        """Apply queued settlements, oldest first, until the outbox is empty; back off
        while the store is away (each try is idempotent in the store)."""
        delay = self.config.outbox_retry_s
        while len(self.outbox):
            try:
                await self._drain_pass()
                delay = self.config.outbox_retry_s
            except StoreUnavailable:
                self._store_back.clear()
                with contextlib.suppress(TimeoutError):  # a reservation that worked wakes us
                    async with asyncio.timeout(delay):
                        await self._store_back.wait()
                delay = min(delay * 2, 5.0)
            except Exception:
                log.exception("budget outbox: applying a settlement failed; retrying")
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
        log.info("budget outbox drained")

    async def _drain_pass(self) -> None:
        for item in self.outbox.peek(200):
            how = Settlement(received_at=item.received_at, once=item.once, finished=True)
            spent = await self.counters.settle(item.lease, item.counters, item.actual, how)
            self.outbox.done(item)
            self.fault_stats["outbox_applied"] += 1
            self._settled_in_store(item, spent)

    async def _beat(self) -> None:
        """Tell the store this replica is alive and learn how many are (fail-open shares)."""
        interval = self.config.heartbeat_s
        while True:
            try:
                store: Any = self.counters
                await store.check_epoch()
                self._replicas = max(1, await store.heartbeat(self._replica_id, interval * 3))
            except StoreUnavailable:
                pass
            except Exception:
                log.exception("budget heartbeat failed")
            await asyncio.sleep(interval)

    async def _on_epoch(self, epoch: str, cutoff: float) -> None:
        """The store met a new epoch (first contact, or Redis came back empty): hold again
        the reservations of calls still running, then seed every current budget counter
        with the ledger's spend before the cutoff. Runs before any reservation in it."""
        store: Any = self.counters
        store.epoch, store.cutoff = epoch, cutoff  # the scripts below run in the new epoch
        self._early = {}
        now = time.time()
        known = self._replicas  # how many replicas were alive before the restart
        for adm in list(self._live.values()):
            if not adm.once and adm.counters:
                await store.reregister(adm.lease, adm.counters, now, self.config.lease_ttl_s)
        await self._reseed()
        if cutoff <= 0:
            return
        # Each replica seeds the ledger it writes: admit again only once the others did
        # too (they notice the restart at their next call or heartbeat), or after a wait.
        done = await store.mark_seeded(self._replica_id)
        deadline = time.monotonic() + self.config.reseed_wait_s
        while done < known and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
            done = await store.seeded_count()
        if done < known:
            log.warning(
                "after the budget store restarted, %d of %d replicas re-seeded within %.1fs; "
                "admitting anyway", done, known, self.config.reseed_wait_s,
            )  # fmt: skip

    def _reseed_soon(self) -> None:
        """Seed again once the ledger has the rows of calls received before the cutoff
        (debounced: a burst of such settlements gives one seed)."""
        if self._reseed_handle is not None:
            self._reseed_handle.cancel()
        loop = asyncio.get_running_loop()
        self._reseed_handle = loop.call_later(
            self.config.reseed_delay_s, lambda: self._track(asyncio.ensure_future(self._reseed()))
        )

    async def _reseed(self) -> None:
        store: Any = self.counters
        cutoff = store.cutoff
        if self.ledger is None or not self.config.seed_from_ledger or cutoff <= 0:
            return
        # Every call counted in `_early` has had its ledger row submitted (rows follow
        # settlements synchronously), so after a flush they are all in the ledger.
        early = dict(self._early)
        flushed = True
        if self.flush_ledger is not None:
            flushed = await asyncio.to_thread(self.flush_ledger, 5.0)
        spend: dict[str, tuple[int, float]] = {}
        for rule in self.rules:
            if not isinstance(rule, BudgetRule):
                continue
            period = period_at(rule.period, cutoff)
            found = await asyncio.to_thread(ledger_spend, rule, self.ledger, period, until=cutoff)
            for key, (_, nanos) in found.items():
                spend[key] = (nanos, period.keep_until)
        try:
            await store.seed_delta(
                self.ledger_id, spend, replica=self._replica_id,
                reported=early if flushed else None,
            )  # fmt: skip
        except StoreUnavailable as exc:
            log.warning("could not re-seed budget counters (store away): %s", exc)
            self._reseed_soon()
            return
        self.fault_stats["reseeds"] += 1

    def _record_actuals(self, adm: Admission, reply: Reply | None) -> list[int]:
        actual = self._actuals(adm, reply)
        for c, amount in zip(adm.counters, actual, strict=True):
            if c.kind == "usd":
                adm.decision["settled_nanos"] = amount
            elif c.kind == "tokens":
                adm.decision["settled_tokens"] = amount
        return actual

    def _crossings(self, adm: Admission, spent: list[tuple[int, int]]) -> None:
        crossed = []
        for c, (before, after) in zip(adm.counters, spent, strict=True):
            if c.kind != "usd" or after <= before:
                continue
            for t in self._thresholds:
                if before < c.limit * t <= after:
                    crossed.append({"rule": c.rule, "threshold": float(t), "scope": dict(c.scope)})
                    self._fire(adm.budgets[c.key], after, c.limit, float(t))
        if crossed:
            adm.decision["crossed"] = crossed

    def _fire(self, budget: ScopedBudget, spent: int, limit: int, fraction: float) -> None:
        for hook in (*on_threshold, *self.on_threshold):
            try:
                hook(budget, from_nanos(spent), from_nanos(limit), fraction)
            except Exception:
                log.exception("budget threshold hook %r failed", hook)

    def _track(self, task: asyncio.Future[None]) -> None:
        assert isinstance(task, asyncio.Task)
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    # ----------------------------------------------------------------- views
    async def usage(self, rule: Rule) -> list[dict[str, Any]]:
        """Live counters of a rule in its current period (admin API, CLI)."""
        now = time.time()
        if isinstance(rule, BudgetRule):
            period = period_at(rule.period, now)
        else:
            period = period_at("minute", now)
        found = await self.counters.scan(counter_prefix(rule))
        out = []
        for key, state in sorted(found.items()):
            rest = key[len(counter_prefix(rule)) :]
            if isinstance(rule, BudgetRule):
                scope_part, period_id = rest.rsplit(":", 1)
                unit = "usd"
            else:
                scope_part, unit_tag, period_id = rest.rsplit(":", 2)
                unit = "requests" if unit_tag == "req" else "tokens"
            if period_id != period.id:
                continue
            scope = (
                dict(p.split("=", 1) for p in scope_part.split("&")) if scope_part != "all" else {}
            )
            row: dict[str, Any] = {
                "scope": scope,
                "period": period.id,
                "resets_at": period.reset_iso(),
            }
            if isinstance(rule, BudgetRule):
                limit = to_nanos(rule.limit_usd)
                row.update(
                    spent_usd=usd(state.spent),
                    reserved_usd=usd(state.reserved),
                    limit_usd=usd(limit),
                    fraction=round(state.spent / limit, 6),
                )
            else:
                row.update(kind=unit, used=state.spent, reserved=state.reserved)
            out.append(row)
        return out

    async def aclose(self) -> None:
        """Wait for settlements still in flight (so no reservation outlives the process)."""
        while self._pending:
            await asyncio.gather(*list(self._pending), return_exceptions=True)
        for task in (self._drainer, self._heartbeat):
            if task is not None and not task.done():
                task.cancel()  # what is left in the outbox is applied at the next start
                await asyncio.gather(task, return_exceptions=True)
        try:  # one last pass, bounded: what Redis cannot take now waits for the next start
            async with asyncio.timeout(self.config.outbox_retry_s * 10):
                while len(self.outbox):
                    await self._drain_pass()
        except (StoreUnavailable, TimeoutError):
            pass
        if self._reseed_handle is not None:
            self._reseed_handle.cancel()
            self._reseed_handle = None
            try:
                async with asyncio.timeout(5):
                    await self._reseed()
            except (StoreUnavailable, TimeoutError):
                pass
        if len(self.outbox):
            log.warning("%d budget settlement(s) left in the outbox for the next start",
                        len(self.outbox))  # fmt: skip
        self.outbox.close()
        await self.counters.aclose()
        if self.definitions is not None:
            self.definitions.close()
