"""Which stages a gateway runs, in which order, built from settings.

Each optimization package exposes `build(ctx: StageContext) -> Stage | None` in its
`stage` module (None when its settings switch it off). The order is fixed here, once:

    budget → cache → trim → route → prefix → defer → (dispatcher)

Budgets first, so a refused call costs nothing; cache before trim and route, because a hit
needs neither; prefix after them, because prompt-cache breakpoints must see the final
prompt; defer last, so a call sent as a batch is the one every other stage shaped.
"""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from spendgate.call import Call
from spendgate.reply import Reply

if TYPE_CHECKING:
    from spendgate.accounting import Accountant
    from spendgate.config import Settings
    from spendgate.ledger import LedgerStore
    from spendgate.metrics import Metrics
    from spendgate.pipeline import ModelTable, Stage
    from spendgate.pricing import PriceCatalog, Pricer

__all__ = ["STAGE_ORDER", "StageContext", "build_stages"]

STAGE_ORDER: tuple[tuple[str, str], ...] = (
    ("budget", "spendgate.budgets.stage"),
    ("cache", "spendgate.cache.stage"),
    ("trim", "spendgate.trim.stage"),
    ("route", "spendgate.routing.stage"),
    ("prefix", "spendgate.cache.prefix"),
    ("defer", "spendgate.batches.stage"),
)


@dataclass
class StageContext:
    """What a stage may use besides the call: shared services, never the HTTP edge."""

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
    extra: dict[str, Any] = field(default_factory=dict)
    accountant: Accountant | None = None
    """The ledger's pricer: a stage that needs a reply's actual cost (budget settlement)
    prices it here, so it settles to exactly what the ledger row will say."""


def build_stages(ctx: StageContext) -> list[Stage]:
    stages: list[Stage] = []
    for _name, module_name in STAGE_ORDER:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name == module_name:
                continue  # that capability is not built yet
            raise
        stage = module.build(ctx)
        if stage is not None:
            stages.append(stage)
    return stages
