"""The `budget` stage: first in the pipeline, so a refused call costs nothing.

Before: reserve the call's worst case on every budget and rate limit covering it (or refuse
with 429). After: settle to the actual cost. A whole (non-stream) reply is finished here and
settled before the stage returns, so the settlement (and any threshold crossing) is in the
call's ledger row; a stream settles from its completion callback (with Redis, in a task the
gateway waits for on shutdown).
"""

from __future__ import annotations

import weakref
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from spendgate.budgets.config import BudgetsConfig
from spendgate.budgets.definitions import DefinitionStore, open_definitions
from spendgate.budgets.manager import BudgetManager, ScopedBudget, ThresholdHook
from spendgate.budgets.outbox import Outbox, default_outbox_dir
from spendgate.budgets.store import CounterStore, MemoryStore
from spendgate.call import Call
from spendgate.reply import Reply
from spendgate.stages import Next, StageContext

if TYPE_CHECKING:
    from spendgate.accounting import Accountant
    from spendgate.config import Settings

__all__ = ["BudgetStage", "build", "current_manager", "definitions_url", "open_counters"]

_latest: weakref.ReferenceType[BudgetManager] | None = None


def current_manager() -> BudgetManager | None:
    """The manager of the gateway built last in this process (for the admin routes when the
    admin app does not expose its gateway)."""
    return _latest() if _latest is not None else None


class BudgetStage:
    name = "budget"

    def __init__(self, manager: BudgetManager, accountant: Accountant | None = None) -> None:
        self.manager = manager
        self.accountant = accountant

    def _priced(self, call: Call, reply: Reply) -> Reply:
        """Price the reply as the ledger will (a cache hit, which never reached the
        dispatcher, costs its zero usage; a served call its usage on the serving
        deployment), so the settlement equals the ledger row's cost."""
        if self.accountant is not None and not reply.priced:
            self.accountant.price(call, reply)
        return reply

    async def handle(self, call: Call, call_next: Next) -> Reply:
        admission = await self.manager.admit(call)
        if admission is None:
            return await call_next(call)
        try:
            reply = await call_next(call)
        except Exception:
            await self.manager.settle(admission, None)  # release: nothing was billed
            raise
        except BaseException:  # cancelled: cannot await any more
            self.manager.settle_soon(admission, None)
            raise
        if reply.is_stream or reply.deferred:  # completes later: settle when it does
            reply.on_done(lambda r: self.manager.settle_soon(admission, self._priced(call, r)))
            return reply
        reply.finish()  # a whole reply is complete: price it now (idempotent later)
        await self.manager.settle(admission, self._priced(call, reply))
        return reply

    async def aclose(self) -> None:
        await self.manager.aclose()


def definitions_url(config: BudgetsConfig, settings: Settings) -> str:
    if config.definitions != "auto":
        return config.definitions
    return config.store if config.uses_redis else settings.storage.keys


def open_counters(config: BudgetsConfig) -> CounterStore:
    if not config.uses_redis:
        return MemoryStore()
    from spendgate.budgets.redis_store import RedisStore

    return RedisStore(config.store, config.key_prefix, config.redis_timeout_s)


def open_outbox(config: BudgetsConfig, settings: Settings) -> Outbox:
    if config.outbox == "memory":
        return Outbox(None)
    if config.outbox == "auto":
        return Outbox(default_outbox_dir(settings.storage.ledger))
    return Outbox(config.outbox)


def ledger_identity(url: str) -> str:
    """A short name for the ledger this process writes: replicas that share one (the same
    PostgreSQL URL, or the same SQLite file on the same host) seed it once between them."""
    import hashlib
    import os
    import socket

    from spendgate.ledger.spool import default_spool_dir

    scheme = url.partition("://")[0].lower()
    if scheme.startswith("postgres"):
        name = url
    else:
        local = default_spool_dir(url)
        path = os.path.realpath(str(local)) if local is not None else f"memory-{os.getpid()}"
        name = f"{socket.gethostname()}:{path}"
    return hashlib.blake2b(name.encode(), digest_size=6).hexdigest()


def open_rule_store(config: BudgetsConfig, settings: Settings) -> DefinitionStore:
    return open_definitions(
        definitions_url(config, settings), config.key_prefix, config.redis_timeout_s
    )


def build(ctx: StageContext) -> BudgetStage | None:
    """On when the config has a `budgets:` section (even an empty one: rules may then be
    added with the CLI or the admin API)."""
    global _latest
    if ctx.settings.budgets is None:
        return None
    config: BudgetsConfig = ctx.settings.budgets
    counters = open_counters(config)
    writer = ctx.accountant.writer if ctx.accountant is not None else None
    manager = BudgetManager(
        config,
        catalog=ctx.catalog,
        table=ctx.table,
        pricer=ctx.pricer,
        counters=counters,
        definitions=open_rule_store(config, ctx.settings),
        ledger=ctx.store,
        ledger_id=ledger_identity(ctx.settings.storage.ledger),
        flush_ledger=writer.flush if writer is not None else None,
        outbox=open_outbox(config, ctx.settings) if counters.epochs else None,
    )
    ctx.budgets = manager
    manager.on_threshold.append(_alerts_hook(ctx))
    _add_metrics(manager, ctx.metrics.registry)
    _latest = weakref.ref(manager)
    return BudgetStage(manager, ctx.accountant)


def _add_metrics(manager: BudgetManager, registry: Any) -> None:
    """`spendgate_budget_refusals_total{rule,kind}` (kind `store` counts store outages, also
    when failing open) and `spendgate_budget_crossings_total{rule,threshold}`. Rule names
    come from the operator, so the label sets stay small."""
    from prometheus_client import Counter

    refusals = Counter(
        "spendgate_budget_refusals",
        "Calls refused by a budget or rate limit (kind: usd, requests, tokens, price, store)",
        ["rule", "kind"],
        registry=registry,
    )
    crossings = Counter(
        "spendgate_budget_crossings",
        "Budget threshold crossings by settled spend",
        ["rule", "threshold"],
        registry=registry,
    )
    manager.on_refusal.append(lambda rule, kind: refusals.labels(rule, kind).inc())
    manager.on_threshold.append(
        lambda budget, _s, _l, fraction: crossings.labels(budget.name, f"{fraction:g}").inc()
    )


def _alerts_hook(ctx: StageContext) -> ThresholdHook:
    """Forward crossings to the alerts service (`ctx.alerts`) when one is installed; it is
    looked up per crossing because the gateway installs it after building stages."""

    def forward(budget: ScopedBudget, spent: Decimal, limit: Decimal, fraction: float) -> None:
        if ctx.alerts is None:
            return
        ctx.alerts.notify_budget_threshold(
            budget=budget.name,
            threshold=fraction,
            spent_usd=spent,
            limit_usd=limit,
            period=budget.period,
            scope=budget.scope,
            mode=budget.rule.mode,
            resets_at=datetime.fromtimestamp(budget.resets_at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        )

    return forward
