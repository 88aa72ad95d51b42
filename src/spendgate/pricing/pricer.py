"""The one place that prices usage the way a deployment bills it.

"What does this usage cost on deployment D?" has three answers that must agree everywhere —
the bill (accounting), the worst case reserved against budgets, and every counterfactual a
stage credits as a saving (a cache hit's avoided cost, routing's requested-vs-served price,
trimmed input, provider prompt caching). Each needs the same choices: which model name the
catalog is asked for (the upstream name, the snapshot the provider answered with, or the
public name), which price provider, the deployment's negotiated `price:` override, and the
service tier. `Pricer` makes them once; stages get it from their context.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any, Protocol

from spendgate.call import Cost, Usage
from spendgate.pricing.catalog import PriceCatalog
from spendgate.pricing.sheet import AUDIO_BUCKETS, BUCKETS, PriceSheet, cost_of

__all__ = ["BillingDeployment", "Pricer"]


class BillingDeployment(Protocol):
    """What pricing needs of a deployment (`providers.base.Deployment` has it)."""

    @property
    def name(self) -> str: ...

    @property
    def models(self) -> Mapping[str, str]:
        """Public model name → upstream name."""
        ...

    @property
    def price(self) -> Any:
        """A `PriceOverride`, or None to use the catalog."""
        ...

    def upstream_model(self, model: str) -> str: ...

    def price_provider(self, model: str) -> str | None: ...


class Pricer:
    def __init__(
        self, catalog: PriceCatalog, deployments: Iterable[BillingDeployment] = ()
    ) -> None:
        self.catalog = catalog
        self._by_name: dict[str, BillingDeployment] = {}
        self._by_model: dict[str, BillingDeployment] = {}
        for dep in deployments:
            self._by_name[dep.name] = dep
            for model in dep.models:
                self._by_model.setdefault(model, dep)

    @property
    def version(self) -> str:
        return self.catalog.version

    def deployment(self, name: str | None) -> BillingDeployment | None:
        return self._by_name.get(name or "")

    def serving(self, model: str) -> BillingDeployment | None:
        """The deployment that would serve `model` first (the counterfactuals' default)."""
        return self._by_model.get(model)

    def cost(
        self,
        model: str,
        usage: Usage,
        *,
        deployment: str | BillingDeployment | None = None,
        served_as: str | None = None,
        service_tier: str | None = None,
        when: datetime | None = None,
    ) -> Cost | None:
        """What `usage` costs on `model` (its public name) as `deployment` bills it — by
        default the first deployment serving the model, else the catalog by name.

        `served_as` is the name the provider answered with (a dated snapshot); it is tried
        first, then the deployment's upstream name, then the public name. Unknown → None."""
        sheet = self.sheet(
            model, deployment=deployment, served_as=served_as, service_tier=service_tier,
            when=when,
        )  # fmt: skip
        return None if sheet is None else cost_of(sheet, usage)

    def sheet(
        self,
        model: str,
        *,
        deployment: str | BillingDeployment | None = None,
        served_as: str | None = None,
        service_tier: str | None = None,
        when: datetime | None = None,
    ) -> PriceSheet | None:
        dep = self._dep(model, deployment)
        if dep is None:
            names = [n for n in (served_as, model) if n]
            provider = None
            override = None
        else:
            names = [n for n in (served_as, dep.upstream_model(model), model) if n]
            provider = dep.price_provider(model)
            override = dep.price
        if override is not None:
            return self.catalog.sheet(model, service_tier=service_tier, override=override)
        for name in dict.fromkeys(names):  # in order, without repeats
            resolved = self.catalog.resolve(name, provider)
            if resolved is not None:
                return resolved.sheet_at(when, service_tier)
        return None

    def total(self, model: str, usage: Usage, **kwargs: Any) -> Decimal | None:
        cost = self.cost(model, usage, **kwargs)
        return None if cost is None else cost.total

    def unit_prices(
        self, model: str, *, deployment: str | BillingDeployment | None = None
    ) -> dict[str, Decimal | None]:
        """USD per million tokens per bucket (base tier), all None when unknown."""
        sheet = self.sheet(model, deployment=deployment)
        if sheet is None:
            return dict.fromkeys((*BUCKETS, "reasoning", *AUDIO_BUCKETS, "per_request"))
        return sheet.per_mtok()

    def _dep(
        self, model: str, deployment: str | BillingDeployment | None
    ) -> BillingDeployment | None:
        if deployment is None:
            return self.serving(model)
        if isinstance(deployment, str):
            return self._by_name.get(deployment) or self.serving(model)
        return deployment
