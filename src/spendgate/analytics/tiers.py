"""Model tiers for spend trends: frontier / mid / small, by list price.

A tier is decided by the model's output price per million tokens (its input price when it
has no output price, e.g. embeddings), because output is what dominates the bill of a
typical chat call and what pricing pages headline:

| tier | output $/MTok | e.g. |
| --- | --- | --- |
| frontier | ≥ 8 | gpt-4o ($10), gpt-4.1 ($8), claude-sonnet-4 ($15), claude-opus-4 ($75) |
| mid | ≥ 2 and < 8 | o3-mini ($4.40), claude-3-5-haiku ($4) |
| small | < 2 | gpt-4.1-mini ($1.60), gpt-4o-mini ($0.60), text-embedding-3-small |
| unknown | no price | a model the catalog does not know |
"""

from __future__ import annotations

from decimal import Decimal

from spendgate.pricing import PriceCatalog

__all__ = ["FRONTIER_MIN", "MID_MIN", "TIERS", "TierClassifier"]

FRONTIER_MIN = Decimal(8)
MID_MIN = Decimal(2)
TIERS = ("frontier", "mid", "small", "unknown")


class TierClassifier:
    """Remembers each model's tier: the catalog lookup costs more than the report row."""

    def __init__(self, catalog: PriceCatalog) -> None:
        self._catalog = catalog
        self._tiers: dict[str, str] = {}

    def price_per_mtok(self, model: str) -> Decimal | None:
        prices = self._catalog.unit_prices(model)
        return prices.get("output") or prices.get("input")

    def __call__(self, model: str) -> str:
        tier = self._tiers.get(model)
        if tier is None:
            price = self.price_per_mtok(model) if model and model != "(none)" else None
            if price is None:
                tier = "unknown"
            elif price >= FRONTIER_MIN:
                tier = "frontier"
            elif price >= MID_MIN:
                tier = "mid"
            else:
                tier = "small"
            self._tiers[model] = tier
        return tier

    @staticmethod
    def definitions() -> dict[str, str]:
        return {
            "basis": "output price per million tokens (input price when there is none)",
            "frontier": f">= ${FRONTIER_MIN}/MTok",
            "mid": f">= ${MID_MIN} and < ${FRONTIER_MIN}/MTok",
            "small": f"< ${MID_MIN}/MTok",
            "unknown": "no price in the catalog",
        }
