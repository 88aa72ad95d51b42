"""The closed loop: per-feature learners fed by sampled labels, with a rollback guard.

For a sampled share of the calls the adaptive router decides (`routing.adapt.sample`), the
same request also goes to the *other* tier as an internal call (its own ledger row,
`route.rule = "adapt_label"`), and the judge grades the weak answer against the strong one
(`spendgate.routing.judge`; LLM judges run through the gateway as the `spendgate-eval`
feature). The label (strong quality, weak quality) updates the feature's `AdaptiveRouter`
and its guard window. Labelling runs after the user's reply, never in its way.

States per feature:
- `shadow` — the adaptive router decides and records (`would_serve`), the requested model
  serves. Labels measure what its decisions *would* have delivered.
- `active` — its decisions serve.
- `rolled_back` — the guard saw the delivered quality (over the last `window` labels, at
  least `min_labels`) fall below `target` × the strong model's; the requested model serves
  again and labelling continues as in shadow, on a fresh window.
With `mode: auto`, a feature in shadow or rolled back is promoted to active once a window of
at least `min_labels` fresh labels meets the target; `mode: active` starts active (the
guard still rolls back); `mode: shadow` never serves its decisions.

The decision threshold is re-chosen after each label on the labelled window to keep
`target + margin` of the strong model's quality with the fewest strong calls
(`calibrate.threshold_for_quality`); with `value_usd` set instead, a call goes strong when
P(weak falls short) × value_usd exceeds what the strong model costs more on it (the cost in
the reward). Before `min_labels` labels, the base router's threshold applies.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections import OrderedDict, deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from spendgate.routing.adaptive import AdaptiveRouter, Phi, Prior
from spendgate.routing.calibrate import threshold_for_quality
from spendgate.routing.evaluate import Row
from spendgate.routing.routers import Router

__all__ = ["FeatureLearner", "Learners", "Observation"]

log = logging.getLogger("spendgate.routing")


@dataclass(frozen=True)
class Observation:
    """One label: both tiers' quality on a prompt, and what the policy chose for it."""

    phi: Phi
    strong: float
    weak: float
    chose_strong: bool


def _to_learner_scale(base_threshold: float) -> float:
    """The prior mean predicts 0.5 + logit / 4; map a base-router probability threshold
    onto that scale so an unlabelled learner decides like the base router."""
    p = min(max(base_threshold, 1e-6), 1 - 1e-6)
    return 0.5 + max(min(math.log(p / (1 - p)), 8.0), -8.0) / 4.0


class FeatureLearner:
    """One feature's adaptive router, label window, threshold and guard state."""

    def __init__(
        self,
        base: Router,
        base_threshold: float,
        *,
        mode: str = "shadow",
        target: float = 0.95,
        margin: float = 0.02,
        min_labels: int = 30,
        window: int = 200,
        explore: float = 1.0,
        prior: Prior | None = None,
    ) -> None:
        self.router = AdaptiveRouter(base, prior, explore)
        self.mode = mode
        self.state = "active" if mode == "active" else "shadow"
        self.target = target
        self.margin = margin
        self.min_labels = min_labels
        self.window: deque[Observation] = deque(maxlen=window)
        self.base_threshold = _to_learner_scale(base_threshold)
        self.threshold = self.base_threshold
        self.rollbacks = 0
        self.promotions = 0

    # ------------------------------------------------------------------ deciding
    @property
    def serving(self) -> bool:
        """Whether this feature's decisions are served (else the requested model is)."""
        return self.state == "active"

    def quality(self) -> float | None:
        """Delivered quality / strong quality over the window (None: too few labels)."""
        if len(self.window) < self.min_labels:
            return None
        strong = sum(o.strong for o in self.window)
        got = sum(o.strong if o.chose_strong else o.weak for o in self.window)
        if strong <= 0:
            return 1.0 if got >= strong else 0.0
        return got / strong

    def summary(self) -> dict[str, Any]:
        q = self.quality()
        return {
            "state": self.state,
            "labels": self.router.model.n,
            "trusted": self.router.trusted,
            "window": len(self.window),
            "quality": None if q is None else round(q, 4),
            "target": self.target,
            "rollbacks": self.rollbacks,
        }

    # ------------------------------------------------------------------ learning
    def observe(self, obs: Observation) -> str | None:
        """Learn one label; returns "rolled_back" / "promoted" when the state changed."""
        self.router.learn_phi(obs.phi, obs.strong, obs.weak)
        self.window.append(obs)
        if len(self.window) >= self.min_labels:
            self._recalibrate()
        q = self.quality()
        if q is None:
            return None
        if self.state == "active" and q < self.target:
            self.state = "rolled_back"
            self.rollbacks += 1
            self.window.clear()
            log.warning("routing: feature rolled back to the requested model (quality %.3f)", q)
            return "rolled_back"
        if self.state != "active" and self.mode == "auto" and q >= self.target:
            self.state = "active"
            self.promotions += 1
            return "promoted"
        return None

    def _recalibrate(self) -> None:
        rows = [
            Row(id=str(i), source="", prompt="", strong=o.strong, weak=o.weak)
            for i, o in enumerate(self.window)
        ]
        router = self.router
        weights = router.model.w if router.trusted else router.model.mean0
        scores = (np.stack([o.phi for o in self.window]) @ weights).tolist()
        goal = min(1.0, self.target + self.margin)
        self.threshold = threshold_for_quality(rows, scores, goal)

    # ------------------------------------------------------------------ persistence
    def to_json(self) -> dict[str, Any]:
        return {
            "router": self.router.state(),
            "state": self.state,
            "threshold": self.threshold,
            "rollbacks": self.rollbacks,
            "promotions": self.promotions,
            "window": [[o.phi.tolist(), o.strong, o.weak, o.chose_strong] for o in self.window],
        }

    def load_json(self, data: dict[str, Any]) -> None:
        self.router.load_state(data["router"])
        state = str(data.get("state", "shadow"))
        if self.mode == "shadow" and state == "active":
            state = "shadow"  # the operator turned serving off since
        self.state = state if state in ("shadow", "active", "rolled_back") else "shadow"
        self.threshold = float(data.get("threshold", self.base_threshold))
        self.rollbacks = int(data.get("rollbacks", 0))
        self.promotions = int(data.get("promotions", 0))
        self.window.clear()
        for phi, strong, weak, chose in data.get("window", []):
            self.window.append(Observation(np.asarray(phi, dtype=float), strong, weak, chose))


class Learners:
    """Feature → `FeatureLearner`, created on first use, LRU-bounded, optionally persisted
    to a JSON file (written on shutdown, read at startup)."""

    def __init__(
        self, factory: Any, max_features: int = 1000, state_path: str | None = None
    ) -> None:
        self.factory = factory
        self.max_features = max_features
        self.state_path = Path(state_path) if state_path else None
        self._learners: OrderedDict[str, FeatureLearner] = OrderedDict()
        if self.state_path is not None and self.state_path.exists():
            self._load()

    def get(self, feature: str) -> FeatureLearner:
        learner = self._learners.get(feature)
        if learner is None:
            learner = self.factory()
            self._learners[feature] = learner
            while len(self._learners) > self.max_features:
                self._learners.popitem(last=False)
        else:
            self._learners.move_to_end(feature)
        return learner

    def peek(self, feature: str) -> FeatureLearner | None:
        return self._learners.get(feature)

    def summary(self) -> dict[str, Any]:
        return {f: learner.summary() for f, learner in self._learners.items()}

    def save(self) -> None:
        if self.state_path is None:
            return
        data = {f: learner.to_json() for f, learner in self._learners.items()}
        tmp = self.state_path.with_suffix(self.state_path.suffix + ".tmp")
        tmp.write_text(json.dumps({"version": 1, "features": data}))
        os.replace(tmp, self.state_path)

    def _load(self) -> None:
        assert self.state_path is not None
        try:
            data = json.loads(self.state_path.read_text())
            for feature, state in data.get("features", {}).items():
                learner = self.factory()
                learner.load_json(state)
                self._learners[feature] = learner
        except (OSError, ValueError, KeyError, TypeError) as exc:
            # A damaged state file must not stop the gateway: start learning afresh.
            log.warning(
                "routing.adapt.state %s unreadable (%s); starting afresh", self.state_path, exc
            )
            self._learners.clear()
