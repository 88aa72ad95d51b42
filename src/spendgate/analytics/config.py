"""The `features:` config section: what each feature is worth, for feature economics.

```yaml
features:
  search:      {revenue_usd_per_month: 15000, segment: productivity}
  copilot:     {value_usd_per_month: 18000, segment: ai_native}
```

`revenue_usd_per_month` is money the feature brings in; `value_usd_per_month` is what the
business says it is worth when it earns nothing directly (hours saved, retention). When
both are given, revenue is compared with cost. `segment` picks the cost-per-active-user
band the feature is judged against (see `spendgate.analytics.reports.BANDS`).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, RootModel

__all__ = ["FeatureEntry", "FeaturesConfig", "Segment"]

Segment = Literal["productivity", "ai_native", "agentic"]


class FeatureEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    revenue_usd_per_month: Decimal | None = Field(default=None, ge=0)
    value_usd_per_month: Decimal | None = Field(default=None, ge=0)
    segment: Segment | None = None
    batchable: bool = False
    """The feature's calls can wait up to 24 h: every non-streaming call is deferred and sent
    as a batch at half price (the client gets 202 and fetches the answer later; see
    docs/responses-and-batches.md)."""

    @property
    def worth_usd_per_month(self) -> Decimal | None:
        """What cost is compared with: revenue when known, else the declared value."""
        if self.revenue_usd_per_month is not None:
            return self.revenue_usd_per_month
        return self.value_usd_per_month

    @property
    def worth_kind(self) -> str | None:
        if self.revenue_usd_per_month is not None:
            return "revenue"
        return "value" if self.value_usd_per_month is not None else None


class FeaturesConfig(RootModel[dict[str, FeatureEntry]]):
    """Feature name (as tagged by `x-spendgate-feature`) → what it is worth."""

    root: dict[str, FeatureEntry] = Field(default_factory=dict)

    def get(self, feature: str) -> FeatureEntry | None:
        return self.root.get(feature)
