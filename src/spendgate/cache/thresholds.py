"""Per-entry acceptance thresholds with an error bound (in the style of vCache,
arXiv 2502.03771): each cached entry learns from verified outcomes how close a new question
must be before its answer may be reused, so that served semantic hits stay wrong at most a
fraction `delta` of the time.

Where the outcomes come from (the stage and the replay evaluation do both):

- **exploration** (free): a lookup whose best candidate scored below the entry's threshold,
  but not far below (>= `explore_floor`), is a miss; the upstream answer it gets anyway is
  compared with the entry's stored answer, and the pair (score, agreed) is recorded.
- **verification** (sampled): a share `verify_rate` of would-be hits is sent upstream
  instead of served; the fresh answer is served and compared with the stored one. A
  disagreement tightens the entry at once.

How a threshold is chosen: for a candidate threshold t, the entry's error rate among hits
scoring >= t is given a Beta posterior. Its prior is the validation precision of the
verifier above t (`prior(t)`, from the shipped model's sidecar) with the weight of
`strength` observations; the evidence is the entry's own agreeing outcomes (those below t
count half: an answer that held at a lower score is evidence it holds higher up). The entry's
threshold is the lowest t from which the posterior mean error stays <= delta all the way up,
and never at or below a score at which the entry was observed to be wrong. With no outcomes
this is the validation threshold for precision 1 - delta: the static default it improves on.

The answer judge (`answers_agree`): for features whose answers are structured
(classification labels, extraction JSON) answers must be equal after normalisation
(`equivalence: answer`); for free text, their word-overlap F1 must reach a bar.
"""

from __future__ import annotations

import math
import random
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

__all__ = [
    "Decision",
    "EntryStats",
    "ThresholdPolicy",
    "answers_agree",
    "normalise_answer",
    "text_similarity",
]

Decision = Literal["hit", "verify", "explore", "miss"]
GRID = tuple(round(1.0 / (1.0 + math.exp(-0.25 * k)), 6) for k in range(-4, 41))
"""Candidate thresholds, even in logit space (0.27 … 0.99995): verifier probabilities crowd
near 1, where the useful thresholds are."""
ABOVE_ALL = 1.000001
"""A threshold no score reaches: the entry serves nothing (identical text aside)."""


@dataclass(slots=True)
class EntryStats:
    """One entry's verified outcomes, (score, the answers agreed), newest last."""

    obs: list[tuple[float, bool]] = field(default_factory=list)
    cached: dict[float, float] = field(default_factory=dict)
    """delta → threshold, cleared when an outcome arrives."""

    def record(self, score: float, agreed: bool, *, max_obs: int = 64) -> None:
        self.obs.append((float(score), bool(agreed)))
        if len(self.obs) > max_obs:
            del self.obs[0]
        self.cached.clear()


class ThresholdPolicy:
    """Chooses a per-entry threshold for an error bound `delta` and decides each lookup."""

    def __init__(
        self,
        prior: Callable[[float], float],
        *,
        strength: float = 4.0,
        below_weight: float = 0.5,
        explore_margin: float = 0.5,
        verify_rate: float = 0.05,
        rng: random.Random | None = None,
    ) -> None:
        self.prior = prior
        self.strength = strength
        self.below_weight = below_weight
        self.explore_margin = explore_margin
        self.verify_rate = verify_rate
        self.rng = rng or random.Random()
        self._base: dict[float, float] = {}

    def base_threshold(self, delta: float) -> float:
        """The threshold of an entry with no outcomes yet: the lowest score from which the
        validation precision stays >= 1 - delta (the static default for this delta)."""
        hit = self._base.get(delta)
        if hit is None:
            hit = self._base[delta] = self.threshold(EntryStats(), delta)
        return hit

    def threshold(self, stats: EntryStats, delta: float) -> float:
        cached = stats.cached.get(delta)
        if cached is not None:
            return cached
        wrong_at = max((s for s, ok in stats.obs if not ok), default=-1.0)
        agreed = sorted(s for s, ok in stats.obs if ok)
        best = ABOVE_ALL
        for t in sorted(GRID, reverse=True):
            if t <= wrong_at:
                break  # a disagreement at or above t: never serve this low again
            above = sum(1 for s in agreed if s >= t)
            below = len(agreed) - above
            evidence = above + self.below_weight * below
            err = self.strength * (1.0 - self.prior(t)) / (self.strength + evidence)
            if err > delta:
                break
            best = t
        if best == ABOVE_ALL and wrong_at < 1.0:
            best = 1.0  # the same text (score 1.0) still hits until an outcome says no
        stats.cached[delta] = best
        return best

    def decide(
        self, stats: EntryStats, score: float, delta: float, *, verify_rate: float | None = None
    ) -> Decision:
        """hit (serve), verify (sampled: call upstream, compare), explore (a miss whose
        upstream answer is compared with the entry's), or miss."""
        t = self.threshold(stats, delta)
        rate = self.verify_rate if verify_rate is None else verify_rate
        if score >= t:
            return "verify" if rate > 0 and self.rng.random() < rate else "hit"
        floor = min(t, self.base_threshold(delta)) - self.explore_margin
        return "explore" if score >= floor else "miss"


def normalise_answer(value: Any) -> str:
    """Structured answers compare equal when they mean the same: JSON with sorted keys,
    text with case, surrounding space and trailing punctuation folded."""
    if isinstance(value, str):
        text = value.strip()
        if text[:1] in "{[":
            try:
                return orjson.dumps(orjson.loads(text), option=orjson.OPT_SORT_KEYS).decode()
            except orjson.JSONDecodeError:
                pass
        return " ".join(text.lower().split()).rstrip(".!?")
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()


_WORDS = re.compile(r"\w+")


def text_similarity(a: str, b: str) -> float:
    """Word-overlap F1 of two answers (multisets of lowercased words). Two answers of one
    model to one question at temperature 0 are mostly the same words; mean-pooled sentence
    vectors of long answers, by contrast, all drift towards one generic vector."""
    wa = Counter(_WORDS.findall(a.lower()))
    wb = Counter(_WORDS.findall(b.lower()))
    if not wa or not wb:
        return 1.0 if wa == wb else 0.0
    common = sum((wa & wb).values())
    if common == 0:
        return 0.0
    precision, recall = common / sum(wb.values()), common / sum(wa.values())
    return 2 * precision * recall / (precision + recall)


def answers_agree(
    a: Any,
    b: Any,
    *,
    mode: Literal["answer", "text"] = "text",
    similarity: Callable[[str, str], float] = text_similarity,
    bar: float = 0.6,
) -> bool:
    """Would serving answer `a` for a question answered `b` be right? `answer`: equal after
    normalisation (labels, JSON). `text`: equal, or `similarity(a, b) >= bar`."""
    na, nb = normalise_answer(a), normalise_answer(b)
    if na == nb:
        return True
    if mode == "answer":
        return False
    return similarity(str(a), str(b)) >= bar
