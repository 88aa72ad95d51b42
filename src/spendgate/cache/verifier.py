"""The learned pair verifier: decides whether a cached question answers a new one.

Cosine similarity alone cannot tell "is X safe" from "is X not safe", or "in 2019" from "in
2020": on held-out QQP, MiniLM cosine never reaches 0.95 precision (0.915 at ≥ 0.98). The
verifier looks at what cosine ignores — which important words are missing on either side
(weighted by the static model's per-token importance), numbers, negations, capitalised
names, question words, lexical overlap, length — plus the element-wise product and
difference of the two sentence vectors, and boosted trees (trained by
`scripts/train_cache_verifier.py` on the QQP training split; held-out protocol in
docs/cache.md) turn them into a probability.

On top of the model, hard vetoes that no score overrides: a negation or number mismatch is
never a hit. They cost little recall and remove the failure users notice most.

Two models ship: the static-feature verifier (`cache_verifier.npz`, the default) and the
`minilm` cascade's second stage (`cache_verifier_minilm.npz`), which adds `order_features`
and `accurate_features` of MiniLM vectors; see docs/cache.md for both curves.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from itertools import pairwise
from pathlib import Path

import numpy as np

from spendgate.cache.embedder import Embedded
from spendgate.stopwords import FUNCTION_WORDS

__all__ = [
    "DEFAULT_MODEL_PATH",
    "MINILM_MODEL_PATH",
    "Verifier",
    "accurate_features",
    "entity_veto",
    "hard_veto",
    "load_verifier",
    "order_features",
    "pair_features",
    "same_question",
    "surface_form",
]

DEFAULT_MODEL_PATH = Path(__file__).resolve().parent.parent / "data" / "cache_verifier.npz"
"""The static-feature verifier: the whole decision for `embedder: static` (the default), and
the cheap first stage (gate) of the `minilm` cascade."""
MINILM_MODEL_PATH = Path(__file__).resolve().parent.parent / "data" / "cache_verifier_minilm.npz"
"""The `minilm` cascade's second stage: the static features, `order_features`, and
`accurate_features` of the two MiniLM vectors (166 features)."""

_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
_CAPWORD = re.compile(r"(?<![.?!]\s)(?<!^)\b[A-Z][a-zA-Z0-9]+")
NEGATIONS = frozenset({
    "not", "no", "never", "none", "nobody", "nothing", "neither", "nor", "without", "cannot",
    "can't", "don't", "doesn't", "didn't", "isn't", "aren't", "wasn't", "weren't", "won't",
    "wouldn't", "shouldn't", "couldn't", "hasn't", "haven't", "hadn't", "mustn't", "n't",
    "unsafe", "illegal",
})  # fmt: skip
QUESTION_WORDS = [
    "what", "how", "why", "which", "who", "whom", "whose", "when", "where", "is", "are", "was",
    "were", "can", "could", "do", "does", "did", "should", "would", "will", "has", "have",
]  # fmt: skip
STOPWORDS = FUNCTION_WORDS | {"about", "any", "get", "here", "just", "some"}
N_SCALAR = 26


@dataclass(slots=True)
class _Text:
    words: list[str]
    wordset: frozenset[str]
    content: frozenset[str]
    numbers: frozenset[str]
    negations: int
    qword: str
    names: frozenset[str]
    trigrams: frozenset[str]
    bigrams: frozenset[str]
    norm: str


@lru_cache(maxsize=4096)
def _analyse(text: str) -> _Text:
    low = text.lower()
    words = _WORD.findall(low)
    wordset = frozenset(words)
    negs = sum(1 for w in words if w in NEGATIONS or w.endswith("n't"))
    qword = next((w for w in words[:3] if w in QUESTION_WORDS), "")
    norm = " ".join(words)
    grams = frozenset(norm[i : i + 3] for i in range(max(0, len(norm) - 2)))
    return _Text(
        words=words,
        wordset=wordset,
        content=frozenset(w for w in words if w not in STOPWORDS),
        numbers=frozenset(n.replace(",", "") for n in _NUMBER.findall(low)),
        negations=negs,
        qword=qword,
        names=frozenset(m.lower() for m in _CAPWORD.findall(text.strip())),
        trigrams=grams,
        bigrams=frozenset(f"{x} {y}" for x, y in pairwise(words)),
        norm=norm,
    )


def _jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


_SPACES = re.compile(r"\s+")


def surface_form(text: str) -> str:
    """Lower case, single spaces, no trailing `?.!`: what a person would not call different
    (only that: "C++" and "C" stay apart)."""
    return _SPACES.sub(" ", text.strip().lower()).rstrip(" ?.!")


def same_question(q: str, c: str) -> bool:
    """Identical up to case, spacing and end punctuation: accepted without the model
    (QQP's labels put even such pairs at ~0.9, below the shipped threshold)."""
    return surface_form(q) == surface_form(c)


def hard_veto(q: str, c: str) -> bool:
    """True when the two questions differ in a way that changes the answer, whatever the
    model thinks: a different count of negations, or different numbers on both sides."""
    a, b = _analyse(q), _analyse(c)
    if a.negations != b.negations:
        return True
    return bool(a.numbers) and bool(b.numbers) and a.numbers != b.numbers


def entity_veto(q: str, c: str) -> bool:
    """True when both questions name something (a capitalised word not starting a sentence)
    and they name nothing in common: "learn Python" / "learn Java". Used with the
    cross-encoder (the feature verifiers read name agreement as a feature instead)."""
    a, b = _analyse(q), _analyse(c)
    return bool(a.names) and bool(b.names) and not (a.names & b.names)


def _alignment(a: Embedded, b: Embedded) -> tuple[float, float, float]:
    """Soft alignment of a's tokens onto b's: importance-weighted mean of each token's best
    match, the weighted share with an exact match, and the heaviest unmatched token."""
    if a.tokens.shape[0] == 0 or b.tokens.shape[0] == 0:
        return 0.0, 0.0, 1.0
    sims = a.tokens @ b.tokens.T
    best = sims.max(axis=1)
    w = a.weights
    total = float(w.sum()) or 1.0
    soft = float((best * w).sum() / total)
    exact = best > 0.999
    hard = float(w[exact].sum() / total)
    missing = w[~exact]
    heaviest = float(missing.max() / (w.max() or 1.0)) if missing.size else 0.0
    return soft, hard, heaviest


def pair_features(q: str, qe: Embedded, c: str, ce: Embedded) -> np.ndarray:
    """Symmetric features of a (query, candidate) pair, scalars first, then |u−v| and u·v."""
    a, b = _analyse(q), _analyse(c)
    cos = float(qe.vector @ ce.vector)
    s1, h1, m1 = _alignment(qe, ce)
    s2, h2, m2 = _alignment(ce, qe)
    la, lb = len(a.words), len(b.words)
    num_union = a.numbers | b.numbers
    names_union = a.names | b.names
    content_diff = len(a.content ^ b.content)
    scalars = [
        cos,
        _jaccard(a.wordset, b.wordset),
        _jaccard(a.content, b.content),
        _jaccard(a.trigrams, b.trigrams),
        min(s1, s2),
        max(s1, s2),
        min(h1, h2),
        max(h1, h2),
        max(m1, m2),
        min(m1, m2),
        min(la, lb) / max(la, lb, 1),
        float(np.log1p(abs(la - lb))),
        float(a.numbers != b.numbers),
        float(bool(num_union)),
        float(a.negations != b.negations),
        float(a.qword == b.qword),
        len(a.names ^ b.names) / max(len(names_union), 1),
        float(np.log1p(content_diff)),
        float(a.norm == b.norm),
        float(np.log1p(min(la, lb))),
        _jaccard(a.bigrams, b.bigrams),
        float(a.words[:2] == b.words[:2]),
        float(a.words[-1:] == b.words[-1:]),
        float(len(a.content - b.content)) + float(len(b.content - a.content)),
        float(min(len(a.content - b.content), len(b.content - a.content))),
        float(bool(a.numbers) != bool(b.numbers)),
    ]
    assert len(scalars) == N_SCALAR
    return np.concatenate(
        [
            np.asarray(scalars, dtype=np.float32),
            np.abs(qe.vector - ce.vector),
            qe.vector * ce.vector,
        ]
    )


def _lcs(a: list[str], b: list[str]) -> int:
    if not a or not b:
        return 0
    prev = [0] * (len(b) + 1)
    for x in a[:64]:
        cur = [0]
        for j, y in enumerate(b[:64]):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def order_features(q: str, c: str) -> np.ndarray:
    """Word order, which bag-of-words vectors cannot see ("from Java to .NET" vs "from .NET
    to Java", "Denver about Seattle" vs "Seattle about Denver"): the share of concordant
    pairs among the shared content words' positions, a flag for the same content words in a
    different order, the longest common word subsequence over the longer side, and whether
    the words after the shared ones' first difference agree."""
    a, b = _analyse(q), _analyse(c)
    shared = [w for w in dict.fromkeys(a.words) if w in b.content and w in a.content]
    pos_b: dict[str, int] = {}
    for i, w in enumerate(b.words):
        pos_b.setdefault(w, i)
    seq = [pos_b[w] for w in shared]
    pairs = conc = 0
    for i in range(len(seq)):
        for j in range(i + 1, len(seq)):
            pairs += 1
            conc += seq[i] < seq[j]
    concordant = conc / pairs if pairs else 1.0
    same_set_reordered = float(bool(a.content) and a.content == b.content and concordant < 1.0)
    lcs = _lcs(a.words, b.words) / max(len(a.words), len(b.words), 1)
    ca = [w for w in a.words if w in a.content]
    cb = [w for w in b.words if w in b.content]
    return np.asarray(
        [concordant, same_set_reordered, lcs, float(ca == cb), float(pairs)], dtype=np.float32
    )


def accurate_features(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Features of two MiniLM vectors (unit length; one pair (d,) or a batch (n, d)):
    cosine and summaries of |u−v| and u⊙v (max, mean, spread, the five largest differences,
    the most negative products). (The full |u−v| and u⊙v did not help on validation.)"""
    u2, v2 = np.atleast_2d(u).astype(np.float32), np.atleast_2d(v).astype(np.float32)
    d = np.abs(u2 - v2)
    p = u2 * v2
    top = -np.partition(-d, 4, axis=1)[:, :5]
    low = np.partition(p, 4, axis=1)[:, :5]
    summary = np.stack(
        [p.sum(1), d.max(1), d.mean(1), d.std(1), top.mean(1), p.min(1), low.mean(1)], axis=1
    )
    out = summary.astype(np.float32)
    return out[0] if np.ndim(u) == 1 else out


class Verifier:
    """Gradient-boosted trees (trained with scikit-learn's HistGradientBoosting, exported to
    flat arrays) evaluated in numpy, all trees one level at a time, so the package needs no
    scikit-learn at run time. Ships with its default threshold."""

    def __init__(
        self,
        feature: np.ndarray,
        threshold_at: np.ndarray,
        left: np.ndarray,
        right: np.ndarray,
        leaf: np.ndarray,
        value: np.ndarray,
        baseline: float,
        depth: int,
        threshold: float,
        info: str = "",
        gate: float = 0.0,
    ) -> None:
        self.feature = feature.astype(np.int32)
        self.threshold_at = threshold_at.astype(np.float64)
        self.left = left.astype(np.int32)
        self.right = right.astype(np.int32)
        self.leaf = leaf.astype(bool)
        self.value = value.astype(np.float64)
        self.baseline = float(baseline)
        self.depth = int(depth)
        self.threshold = float(threshold)
        self.info = info
        self.gate = float(gate)
        """For a second-stage model: candidates whose first-stage (static) score is below
        this are rejected without computing the second stage's features."""
        # Flat arrays where a leaf points to itself (feature 0, threshold +inf), so a walk is
        # three gathers and a select per level, and stops once no row moves.
        n_trees, width = self.feature.shape
        self._base = (np.arange(n_trees) * width).astype(np.int64)
        own = np.arange(width)[None, :].repeat(n_trees, axis=0)
        self._feat = np.where(self.leaf, 0, self.feature).ravel()
        self._thr = np.where(self.leaf, np.inf, self.threshold_at).ravel()
        self._left = np.where(self.leaf, own, self.left).ravel().astype(np.int64)
        self._right = np.where(self.leaf, own, self.right).ravel().astype(np.int64)
        self._value = self.value.ravel()

    @property
    def n_trees(self) -> int:
        return int(self.feature.shape[0])

    def score(self, features: np.ndarray) -> np.ndarray:
        """Probability of "same question" for each row of `features`."""
        x = np.atleast_2d(features).astype(np.float64)
        rows = np.arange(x.shape[0])[:, None]
        idx = np.broadcast_to(self._base, (x.shape[0], self._base.size)).copy()
        for _ in range(self.depth):
            go_left = x[rows, self._feat[idx]] <= self._thr[idx]
            nxt = np.where(go_left, self._left[idx], self._right[idx]) + self._base
            if np.array_equal(nxt, idx):
                break
            idx = nxt
        raw = self._value[idx].sum(axis=1) + self.baseline
        return (1.0 / (1.0 + np.exp(-np.clip(raw, -30, 30)))).astype(np.float32)

    def save(self, path: Path) -> None:
        np.savez_compressed(
            path,
            feature=self.feature.astype(np.int16),
            threshold_at=self.threshold_at.astype(np.float32),
            left=self.left.astype(np.int16),
            right=self.right.astype(np.int16),
            leaf=self.leaf,
            value=self.value.astype(np.float32),
            baseline=np.float64(self.baseline),
            depth=np.int32(self.depth),
            threshold=np.float64(self.threshold),
            info=np.array(self.info),
            gate=np.float64(self.gate),
        )

    @classmethod
    def load(cls, path: Path) -> Verifier:
        with np.load(path, allow_pickle=False) as z:
            return cls(
                z["feature"],
                z["threshold_at"],
                z["left"],
                z["right"],
                z["leaf"],
                z["value"],
                float(z["baseline"]),
                int(z["depth"]),
                float(z["threshold"]),
                str(z["info"]),
                float(z["gate"]) if "gate" in z.files else 0.0,
            )


@lru_cache(maxsize=4)
def load_verifier(path: str | None = None) -> Verifier:
    """The shipped verifier (cached per process)."""
    return Verifier.load(Path(path) if path else DEFAULT_MODEL_PATH)
