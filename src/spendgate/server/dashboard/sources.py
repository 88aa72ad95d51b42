"""The budgets panel, fed by the budgets package when it is on.

`spendgate.budgets` keeps its `BudgetManager` in the gateway's stage context
(`extra["budgets"]`) when the config has a `budgets:` section. The dashboard must render
whether or not that is so, and a failure there must never break the page: no manager, or
an error reading it, is "no budgets" (the error is logged).
"""

from __future__ import annotations

import logging
from typing import Any

__all__ = ["MAX_BUDGET_ROWS", "budget_rows", "budgets_for"]

log = logging.getLogger(__package__)

MAX_BUDGET_ROWS = 50
"""Per-value budgets (`tenant: "*"`) can have thousands of scopes; show the closest ones."""


def _scope_text(scope: dict[str, str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(scope.items())) or "all traffic"


async def budget_rows(gateway: Any) -> list[dict[str, Any]] | None:
    """Each USD budget scope with its spend this period, closest to its limit first; None
    when budgets are off. Runs on the gateway's loop (the counters may be async Redis)."""
    manager = gateway.stage_context.extra.get("budgets")
    if manager is None:
        return None
    rows: list[dict[str, Any]] = []
    try:
        for rule in manager.rules:
            if getattr(rule, "kind", None) != "budget":
                continue  # rate limits are not spend
            usage = await manager.usage(rule)
            if not usage and "*" not in rule.scope.values():
                usage = [{"scope": rule.scope, "spent_usd": "0", "fraction": 0.0}]
            for u in usage:
                rows.append(
                    {
                        "name": rule.name,
                        "scope": _scope_text(u.get("scope") or {}),
                        "scope_keys": dict(u.get("scope") or rule.scope),
                        "period": rule.period,
                        "hard": rule.mode == "hard",
                        "limit_usd": format(rule.limit_usd.normalize(), "f"),
                        "spent_usd": str(u.get("spent_usd", "0")),
                        "used": float(u.get("fraction") or 0.0),
                        "resets_at": u.get("resets_at"),
                    }
                )
    except Exception:
        log.exception("reading budgets failed; the dashboard shows none")
        return None
    rows.sort(key=lambda r: -r["used"])
    return rows[:MAX_BUDGET_ROWS]


def budgets_for(rows: list[dict[str, Any]] | None, filters: dict[str, str]) -> Any:
    """The budgets that cover the filtered traffic: a budget scoped to another team (or
    feature, tenant…) than the filter names is left out; a global one stays."""
    if rows is None or not filters:
        return rows
    kept = []
    for row in rows:
        scope = row.get("scope_keys") or {}
        if all(scope.get(k) in (None, "*", v) for k, v in filters.items()):
            kept.append(row)
    return kept
