"""`BudgetDecision`: the budget stage's record on a call (`extra.decisions.budget`).

Its own leaf module because the manager, which fills it, and the stage, which owns it,
import each other's neighbours: both import this, it imports only `spendgate.call`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from spendgate.call import Decision

__all__ = ["BudgetDecision"]


@dataclass
class BudgetDecision(Decision):
    """What admission reserved or refused, and how it settled. The manager fills `detail`
    as admission and settlement go on (rules, reserved_nanos/tokens, rejected_by,
    price_unknown, fail_open…, settled_nanos/tokens, crossed); the ledger shape is that
    mapping as is."""

    key: ClassVar[str] = "budget"
    detail: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> Any:
        return self.detail
