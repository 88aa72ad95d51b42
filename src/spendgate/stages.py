"""The stage contract: `Stage`, `Next` and `StageContext` — what every stage module needs,
and nothing else.

A leaf on purpose: stage modules import it, and it imports no stage module (only the
shared nouns and, for types, the services a stage may be handed). The list of stages and
their order live in `spendgate.pipeline`, which imports the stage modules; so the
dependency points one way, pipeline → stages → this contract.

A stage is one object with one method, `handle(call, call_next)`: it may answer by itself
(a cache hit, a budget refusal), change the call and pass it on (trim, route), or act on
the finished reply by registering `reply.on_done(...)` (settle a reservation, store in
cache). Each stage module has `build(ctx) -> Stage | None` (None when its settings turn
it off).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from spendgate.call import Call
from spendgate.reply import Reply

if TYPE_CHECKING:
    from spendgate.accounting import Accountant
    from spendgate.alerts.service import AlertService
    from spendgate.batches.lane import DeferLane
    from spendgate.budgets.manager import BudgetManager
    from spendgate.config import Settings
    from spendgate.dispatch.table import ModelTable
    from spendgate.ledger import LedgerStore
    from spendgate.metrics import Metrics
    from spendgate.pricing import PriceCatalog, Pricer
    from spendgate.state import StateStore

__all__ = ["Next", "Stage", "StageContext"]

Next = Callable[[Call], Awaitable[Reply]]
"""The rest of the pipeline after a stage (the dispatcher at the end)."""


class Stage(Protocol):
    name: str

    async def handle(self, call: Call, call_next: Next) -> Reply: ...


@dataclass
class StageContext:
    """What a stage may use besides the call: shared services, never the HTTP edge.

    The optional services are typed fields, each set by the one party that owns it (named
    on the field); readers (the admin API, the dashboard, tests) use them directly."""

    settings: Settings
    catalog: PriceCatalog
    pricer: Pricer
    """Prices usage as a deployment bills it: every saving a stage credits goes through it."""
    table: ModelTable
    metrics: Metrics
    store: LedgerStore
    run_internal: Callable[[Call], Awaitable[Reply]] | None = None
    """Send a call through the gateway itself (e.g. a history summary by a cheap model);
    set once the pipeline exists. Internal calls get their own ledger events."""
    record: Callable[[Call, Reply], object] | None = None
    """Write the ledger event of a call a stage sent downstream itself and will not return
    (e.g. a cascade's weak answer that was escalated): its cost must still be counted."""
    accountant: Accountant | None = None
    """The ledger's pricer: a stage that needs a reply's actual cost (budget settlement)
    prices it here, so it settles to exactly what the ledger row will say."""
    state: StateStore | None = None
    """The gateway's state store (stored responses, batches, the deferral queue); set by
    the gateway before it builds the stages."""
    budgets: BudgetManager | None = None
    """Set by the budget stage when budgets are on (the admin API and dashboard read it)."""
    defer_lane: DeferLane | None = None
    """Set by the defer stage when deferral is on (the `/v1/deferred` route reads it)."""
    alerts: AlertService | None = None
    """Set by `spendgate.alerts.service.install` after the stages are built; the budget
    stage forwards threshold crossings to it, looking it up per crossing."""
