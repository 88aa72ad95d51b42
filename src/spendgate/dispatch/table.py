"""`ModelTable`: public model name → the deployments that serve it.

A leaf (it imports only the deployment type) because stages, budgets, batches and the
dispatcher all need it, and none of them may import the others to get it."""

from __future__ import annotations

from collections.abc import Iterable

from spendgate.providers.base import Deployment

__all__ = ["ModelTable"]


class ModelTable:
    """Public model name → the deployments that serve it, in preference order."""

    def __init__(self, deployments: Iterable[Deployment]) -> None:
        self.deployments: dict[str, Deployment] = {}
        self._by_model: dict[str, list[Deployment]] = {}
        for dep in deployments:
            self.deployments[dep.name] = dep
            for model in dep.models:
                self._by_model.setdefault(model, []).append(dep)

    def serving(self, model: str) -> list[Deployment]:
        return self._by_model.get(model, [])

    def models(self) -> list[str]:
        return sorted(self._by_model)
