"""Budgets and rate limits: reserve a call's worst-case cost on every budget covering it,
refuse (hard) or alert (soft) when it would not fit, settle to the actual cost afterwards.

Subscribe to threshold crossings with `spendgate.budgets.on_threshold.append(hook)`.
"""

from spendgate.budgets.config import BudgetRule, BudgetsConfig, RateLimitRule
from spendgate.budgets.manager import (
    Admission,
    BudgetManager,
    ScopedBudget,
    ThresholdHook,
    on_threshold,
)
from spendgate.budgets.store import Counter, CounterStore, MemoryStore, StoreUnavailable

__all__ = [
    "Admission",
    "BudgetManager",
    "BudgetRule",
    "BudgetsConfig",
    "Counter",
    "CounterStore",
    "MemoryStore",
    "RateLimitRule",
    "ScopedBudget",
    "StoreUnavailable",
    "ThresholdHook",
    "on_threshold",
]
