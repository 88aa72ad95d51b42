"""A router that learns from one feature's own labels, on top of a prompt-only base router.

Why: a router trained on public benchmarks falls toward random on traffic it never saw
(docs/routing.md, "held out"); a few hundred labels from the feature itself are the
evidence that transfers. A label is what quality sampling and the judge produce for one
prompt: the strong model's quality and the weak model's quality on it, each in [0, 1].

The model is Bayesian linear regression of "the weak answer falls short" (1 − weak
quality) on φ(prompt) = [1, base router logit / 4, 64-d static embedding]. The prior mean
reproduces the base router's ranking (intercept 0.5, slope 1 on logit/4, the sigmoid's
tangent at 0), so with no labels the adaptive router *is* the base router; each label moves
the posterior by a Sherman–Morrison update of the inverse precision (O(d²), d = 66, tens of
microseconds). The posterior's width gives an upper-confidence score (LinUCB's bonus):
`score + explore · width` — where the feature's own evidence is thin, the call goes to the
strong model. Labels are "1 − weak quality" rather than "strong − weak": on the held-out
benchmarks it ranks prompts better (docs/routing.md, "Adapting").

`evaluate_adaptation` is the offline protocol behind `spendgate eval router --adapt K`.
"""

from __future__ import annotations

import math
import random
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from spendgate.call import Call
from spendgate.routing.evaluate import Row, curve
from spendgate.routing.features import call_text
from spendgate.routing.routers import LinearRouter, Router

__all__ = [
    "AdaptiveRouter",
    "FeatureModel",
    "Phi",
    "Prior",
    "evaluate_adaptation",
    "featurizer",
]

EMBED_DIM = 64
DIM = 2 + EMBED_DIM


@dataclass(frozen=True)
class Prior:
    """Prior precisions (in label units; the noise variance is folded in) and the UCB bonus.

    Tuned on the held-out protocol (docs/routing.md): the base slope and intercept are
    loosely held (each feature refits how far to trust the base router), the embedding
    weights tightly (64 of them, learnt from a few hundred labels)."""

    intercept: float = 0.1
    slope: float = 0.1
    embedding: float = 30.0
    noise: float = 0.25
    """Label variance used for the posterior width (a [0, 1] label: at most 0.25)."""


EMBED_CHARS = 600
"""The embedding reads the first and last 300 characters: tokenizing is most of its cost
(~0.35 ms per 1,000 characters), and a prompt's topic shows at its ends."""


def _clip_text(text: str) -> str:
    if len(text) <= EMBED_CHARS:
        return text
    half = EMBED_CHARS // 2
    return text[:half] + "\n" + text[-half:]


Phi = np.ndarray
"""One prompt's feature vector, (DIM,) float64."""


def featurizer(base: Router) -> Callable[[str, int, bool], tuple[Phi, float]]:
    """φ(text) and the base router's score, using the semantic cache's static embedder."""
    from spendgate.cache.embedder import get_embedder

    embedder = get_embedder("static")

    def phi(text: str, turns: int = 1, tools: bool = False) -> tuple[Phi, float]:
        if isinstance(base, LinearRouter):
            logit = base.logit_text(text, turns, tools)
            score = 1.0 / (1.0 + math.exp(-max(min(logit, 40.0), -40.0)))
        else:
            score = base.score_text(text, turns, tools)
            p = min(max(score, 1e-4), 1 - 1e-4)
            logit = math.log(p / (1 - p))
        out = np.empty(DIM)
        out[0] = 1.0
        out[1] = max(min(logit, 8.0), -8.0) / 4.0
        out[2:] = embedder.embed_many([_clip_text(text)])[0]
        return out, score

    return phi


class FeatureModel:
    """The posterior of one feature: mean weights `w`, inverse precision `cov` (times the
    noise variance it is a covariance), and the label count."""

    def __init__(self, prior: Prior | None = None) -> None:
        p = prior or Prior()
        self.prior = p
        precision = np.full(DIM, float(p.embedding))
        precision[0], precision[1] = p.intercept, p.slope
        self.mean0 = np.zeros(DIM)
        self.mean0[0], self.mean0[1] = 0.5, 1.0
        self.cov = np.diag(1.0 / precision)
        self.b = precision * self.mean0
        self.w = self.mean0.copy()
        self.n = 0

    def predict(self, phi: Phi) -> float:
        """Posterior mean of P(the weak answer falls short)."""
        return float(self.w @ phi)

    def width(self, phi: Phi) -> float:
        """Posterior standard deviation of the prediction (the UCB bonus per unit)."""
        return math.sqrt(max(self.prior.noise * float(phi @ self.cov @ phi), 0.0))

    def update(self, phi: Phi, y: float) -> None:
        """Add one label (`y` = 1 − weak quality): a rank-one update of the inverse precision."""
        cphi = self.cov @ phi
        self.cov -= np.outer(cphi, cphi) / (1.0 + float(phi @ cphi))
        self.b += phi * y
        self.w = self.cov @ self.b
        self.n += 1

    def state(self) -> dict[str, Any]:
        return {"b": self.b.tolist(), "cov": self.cov.tolist(), "n": self.n}

    def load_state(self, state: dict[str, Any]) -> None:
        b = np.asarray(state["b"], dtype=float)
        cov = np.asarray(state["cov"], dtype=float)
        if b.shape != (DIM,) or cov.shape != (DIM, DIM):
            raise ValueError("adaptive router state has the wrong shape")
        self.b, self.cov, self.n = b, cov, int(state["n"])
        self.w = self.cov @ self.b


GRID = np.linspace(0.0, 1.0, 101)
RESAMPLES = 60
CHECK_EVERY = 5
"""Labels between two trust checks (a check costs ~2 ms)."""
TRUST = 0.8
"""The posterior is trusted when its prequential ranking beats the base router's in at least
this share of bootstrap resamples of the label window."""


def _apgr_many(scores: np.ndarray, strong: np.ndarray, weak: np.ndarray) -> np.ndarray:
    """APGR of each row of `scores` (resamples × labels) against its labels, vectorized
    (ties are not averaged: this only compares two rankings). NaN where the strong model is
    not better on average (no gap to recover)."""
    n = scores.shape[1]
    order = np.argsort(-scores, axis=1, kind="stable")
    gain = np.take_along_axis(strong - weak, order, axis=1)
    prefix = np.concatenate([np.zeros((len(gain), 1)), np.cumsum(gain, axis=1)], axis=1)
    pos = GRID * n
    lo = np.floor(pos).astype(int)
    hi = np.minimum(lo + 1, n)
    extra = prefix[:, lo] + (prefix[:, hi] - prefix[:, lo]) * (pos - lo)
    gap = (strong - weak).mean(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        pgr = (extra / n) / gap[:, None]
        area = ((pgr[:, 1:] + pgr[:, :-1]) / 2).mean(axis=1)
    return np.where(gap > 0, area, np.nan)


def _wins(
    adapted: np.ndarray,
    base: np.ndarray,
    strong: np.ndarray,
    weak: np.ndarray,
    rng: np.random.Generator,
) -> bool:
    """Whether the adapted ranking beats the base one on `TRUST` of paired resamples."""
    idx = rng.integers(0, len(adapted), size=(RESAMPLES, len(adapted)))
    s, w = strong[idx], weak[idx]
    a = _apgr_many(adapted[idx], s, w)
    b = _apgr_many(base[idx], s, w)
    valid = ~(np.isnan(a) | np.isnan(b))
    if valid.sum() < RESAMPLES // 2:
        return False
    return bool((a[valid] > b[valid]).mean() >= TRUST)


class AdaptiveRouter:
    """A base router plus one `FeatureModel`, behind the router interface (`score_text`):
    what `spendgate eval router --adapt` measures and what the gateway keeps per feature.

    The posterior is used only while it ranks the feature's prompts better than the base
    router does, judged *prequentially*: each label is first scored by the model as it was
    before learning it (an honest out-of-sample prediction), and over the last `check`
    labels the two rankings' APGR is compared on 60 paired bootstrap resamples (every 5th
    label); the posterior must win in 80% of them. Until it does (and before `min_check` labels),
    scores are the prior mean: the base router's ranking. On benchmarks where the base
    router already ranks well (ARC), a few hundred noisy labels would otherwise make it
    worse."""

    def __init__(
        self,
        base: Router,
        prior: Prior | None = None,
        explore: float = 0.0,
        check: int = 200,
        min_check: int = 30,
    ) -> None:
        self.base = base
        self.name = f"adaptive({base.name})"
        self.model = FeatureModel(prior)
        self.explore = explore
        self.min_check = min_check
        self.trusted = False
        self._preq: deque[tuple[float, float, float, float]] = deque(maxlen=check)
        self._rng = np.random.default_rng(0)
        self._phi = featurizer(base)

    def features(self, text: str, turns: int = 1, tools: bool = False) -> tuple[Phi, float]:
        return self._phi(text, turns, tools)

    def mean(self, phi: Phi) -> float:
        """P(the weak answer falls short): the posterior's if it has earned trust, else the
        prior's (which ranks like the base router)."""
        return self.model.predict(phi) if self.trusted else float(self.model.mean0 @ phi)

    def score_phi(self, phi: Phi) -> float:
        s = self.mean(phi)
        if self.explore > 0:
            s += self.explore * self.model.width(phi)
        return s

    def score_text(self, text: str, turns: int = 1, tools: bool = False) -> float:
        return self.score_phi(self.features(text, turns, tools)[0])

    def score(self, call: Call) -> float:
        text, turns, tools = call_text(call.body)
        return self.score_text(text, max(turns, 1), tools)

    def learn_phi(self, phi: Phi, strong: float, weak: float) -> None:
        """One label for a prompt whose features are `phi`."""
        weak = min(max(weak, 0.0), 1.0)
        self._preq.append((self.model.predict(phi), float(self.model.mean0 @ phi), strong, weak))
        self.model.update(phi, 1.0 - weak)
        self._recheck()

    def learn(self, text: str, strong: float, weak: float) -> None:
        self.learn_phi(self.features(text)[0], strong, weak)

    def _recheck(self, force: bool = False) -> None:
        if len(self._preq) < self.min_check:
            self.trusted = False
            return
        if not force and (self.model.n - self.min_check) % CHECK_EVERY:
            return
        p = np.asarray(self._preq)
        self.trusted = _wins(p[:, 0], p[:, 1], p[:, 2], p[:, 3], self._rng)

    def state(self) -> dict[str, Any]:
        return {"model": self.model.state(), "preq": [list(p) for p in self._preq]}

    def load_state(self, state: dict[str, Any]) -> None:
        self.model.load_state(state["model"])
        self._preq.clear()
        for p in state.get("preq", []):
            self._preq.append((float(p[0]), float(p[1]), float(p[2]), float(p[3])))
        self._recheck(force=True)


def _saving(
    rows: Sequence[Row], scores: Sequence[float], share: float, costs: tuple[list[float], ...]
) -> float | None:
    strong_c, weak_c = costs
    total = sum(strong_c)
    if total <= 0:
        return None
    k = round(share * len(rows))
    chosen = set(sorted(range(len(rows)), key=lambda i: -scores[i])[:k])
    spent = sum(strong_c[i] if i in chosen else weak_c[i] for i in range(len(rows)))
    return round(1 - spent / total, 4)


def _figures(
    rows: Sequence[Row], scores: Sequence[float], costs: tuple[list[float], list[float]] | None
) -> dict[str, Any]:
    c = curve(rows, scores)
    share = c.share_for_quality(0.95)
    return {
        "apgr": round(c.apgr, 4),
        "cpt50": round(c.cpt(0.5), 4),
        "strong_share_at_95": round(share, 4),
        "cost_saving_at_95": None if costs is None else _saving(rows, scores, share, costs),
    }


def evaluate_adaptation(
    rows: Sequence[Row],
    base: Router,
    k: int,
    seed: int = 0,
    costs: tuple[list[float], list[float]] | None = None,
    prior: Prior | None = None,
) -> dict[str, Any]:
    """Per source: a fresh `AdaptiveRouter` over `base` learns the first `k` prompts of the
    source in a seeded shuffle (at most half the source, so something is left to score),
    one label at a time; the rest are scored by it, by the unadapted base, by random and by
    the oracle. Macro averages weigh every source equally."""
    by_source: dict[str, list[int]] = {}
    for i, r in enumerate(rows):
        by_source.setdefault(r.source, []).append(i)
    sources: dict[str, Any] = {}
    for source in sorted(by_source):
        idx = list(by_source[source])
        random.Random(f"{seed}:{source}").shuffle(idx)
        n_labels = min(k, len(idx) // 2)
        learn, test = idx[:n_labels], idx[n_labels:]
        router = AdaptiveRouter(base, prior)
        for i in learn:
            router.learn(rows[i].prompt, rows[i].strong, rows[i].weak)
        test_rows = [rows[i] for i in test]
        test_costs = None
        if costs is not None:
            test_costs = ([costs[0][i] for i in test], [costs[1][i] for i in test])
        phis = [router.features(r.prompt) for r in test_rows]
        adapted = [router.score_phi(p) for p, _ in phis]
        unadapted = [s for _, s in phis]
        oracle = [r.strong - r.weak for r in test_rows]
        sources[source] = {
            "n": len(idx),
            "labels": n_labels,
            "scored": len(test),
            "adapted": _figures(test_rows, adapted, test_costs),
            "unadapted": _figures(test_rows, unadapted, test_costs),
            "random": _figures(test_rows, [0.0] * len(test_rows), test_costs),
            "oracle": _figures(test_rows, oracle, test_costs),
        }
    macro: dict[str, Any] = {}
    for name in ("adapted", "unadapted", "random", "oracle"):
        vals = [s[name] for s in sources.values()]
        macro[name] = {
            key: (
                None
                if any(v[key] is None for v in vals)
                else round(sum(v[key] for v in vals) / len(vals), 4)
            )
            for key in ("apgr", "cpt50", "strong_share_at_95", "cost_saving_at_95")
        }
    return {"k": k, "seed": seed, "sources": sources, "macro": macro}
