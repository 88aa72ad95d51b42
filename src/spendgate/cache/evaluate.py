"""Evaluation of the semantic matcher on labelled question pairs (`spendgate eval cache`).

Pairs mode scores each (q1, q2) pair as the cache would score a query against a stored
entry: the shipped verifier at its shipped threshold, with the hard vetoes. Retrieval mode
is the whole lookup: every `q2` is stored, every `q1` is looked up, and a hit counts as
correct only when the entry returned is the pair's own duplicate partner.

The held-out split is a deterministic function of the text (so anyone can reproduce it):
a pair is held out when the blake2b hash of its lexicographically smaller normalised
question falls in bucket 0–1 of 10. Training used the other pairs minus every pair that
shares a question with a held-out pair.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

__all__ = [
    "Pair",
    "evaluate_pairs",
    "evaluate_retrieval",
    "is_heldout",
    "load_pairs",
    "normalise",
    "question_bucket",
]

_SPACE = re.compile(r"\s+")


@dataclass(frozen=True, slots=True)
class Pair:
    q1: str
    q2: str
    duplicate: bool
    source: str = ""


def normalise(text: str) -> str:
    return _SPACE.sub(" ", text.strip().lower())


def question_bucket(text: str) -> int:
    digest = hashlib.blake2b(normalise(text).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % 10


def is_heldout(q1: str, q2: str) -> bool:
    return question_bucket(min(normalise(q1), normalise(q2))) < 2


T = TypeVar("T")


def _rows(p: Path, shape: str, make: Callable[[dict[str, Any]], T]) -> Iterator[T]:
    """`make(row)` for each row of a JSON Lines file, gzip or plain; a row `make` cannot
    read is a ValueError naming the file, line and the `shape` expected."""
    opener: Any = gzip.open if p.suffix == ".gz" else open
    with opener(p, "rt", encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                yield make(json.loads(line))
            except (ValueError, KeyError, TypeError) as exc:
                raise ValueError(f"{p}:{n}: not a {shape} row ({exc})") from None


def load_pairs(path: str | Path) -> Iterator[Pair]:
    """Rows of a `{"q1", "q2", "duplicate"}` JSON Lines file, gzip or plain."""
    return _rows(
        Path(path),
        "{q1, q2, duplicate}",
        lambda row: Pair(
            str(row["q1"]), str(row["q2"]), bool(row["duplicate"]), row.get("source", "")
        ),
    )


def _metrics(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    tp = int((pred & truth).sum())
    fp = int((pred & ~truth).sum())
    positives = int(truth.sum())
    hits = tp + fp
    n = len(truth)
    return {
        "precision": round(tp / hits, 4) if hits else 1.0,
        "recall": round(tp / positives, 4) if positives else 0.0,
        "hit_rate": round(hits / n, 4) if n else 0.0,
        "false_hits_per_1k": round(1000 * fp / n, 2) if n else 0.0,
    }


def _curve(scores: np.ndarray, truth: np.ndarray) -> list[dict[str, float]]:
    out = []
    for t in (0.3, 0.4, 0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 0.98):
        out.append({"threshold": t, **_metrics(scores >= t, truth)})
    return out


def _latency(samples: list[float]) -> dict[str, float]:
    arr = np.asarray(samples) * 1000
    if arr.size == 0:
        return {"p50": 0.0, "p99": 0.0}
    return {
        "p50": round(float(np.percentile(arr, 50)), 4),
        "p99": round(float(np.percentile(arr, 99)), 4),
    }


def evaluate_pairs(
    pairs: list[Pair],
    *,
    embedder_name: str | None = None,
    threshold: float | None = None,
    verifier_name: str | None = None,
) -> dict[str, Any]:
    """Precision/recall of the shipped matcher's decision on each pair (q1 as the query,
    q2 as the stored entry), plus cosine-only curves."""
    from spendgate.cache.semantic import SemanticMatcher

    matcher = SemanticMatcher(
        embedder_name=embedder_name, threshold=threshold, verifier_name=verifier_name
    )
    cut = matcher.threshold
    # The stored side's vectors are computed when an entry is stored, not at lookup.
    stored_acc: list[np.ndarray | None] = [None] * len(pairs)
    if matcher.accurate is not None:
        vecs = matcher.accurate.embed_many([p.q2 for p in pairs])
        stored_acc = list(vecs)
    scores = np.zeros(len(pairs), dtype=np.float32)
    cosines = np.zeros(len(pairs), dtype=np.float32)
    acc_cosines = np.zeros(len(pairs), dtype=np.float32)
    timings: list[float] = []
    for i, pair in enumerate(pairs):
        matcher._accurate_cache.clear()  # every query is embedded afresh, as at lookup
        started = time.perf_counter()
        score = matcher.pair_score(pair.q1, pair.q2, stored_acc[i])
        timings.append(time.perf_counter() - started)
        scores[i] = score
        cosines[i] = float(
            matcher.embedder.embed(pair.q1).vector @ matcher._embedded(pair.q2).vector
        )
        acc = stored_acc[i]
        if acc is not None:
            qa = matcher.accurate_vector(pair.q1)
            acc_cosines[i] = float(acc @ qa) if qa is not None else 0.0
    truth = np.asarray([p.duplicate for p in pairs], dtype=bool)
    out: dict[str, Any] = {
        "pairs": len(pairs),
        "embedder": matcher.name,
        "threshold": round(cut, 4),
        "default": _metrics(scores >= cut, truth),
        "curve": _curve(scores, truth),
        "cosine_only": [
            {"threshold": t, **_metrics(cosines >= t, truth)} for t in (0.8, 0.9, 0.95, 0.98)
        ],
        "latency_ms": _latency(timings),
        "latency_note": "embed query + features + verifier (cascade), per pair; the stored "
        "side's MiniLM vector is computed at store time",
    }
    if matcher.accurate is not None:
        out["minilm_cosine_only"] = [
            {"threshold": t, **_metrics(acc_cosines >= t, truth)} for t in (0.8, 0.9, 0.95, 0.98)
        ]
    return out


def evaluate_retrieval(
    pairs: list[Pair], *, embedder_name: str | None = None, verifier_name: str | None = None
) -> dict[str, Any]:
    """Index every distinct q2, look up every q1 through the semantic matcher."""
    from spendgate.cache.semantic import SemanticMatcher
    from spendgate.cache.verifier import same_question

    matcher = SemanticMatcher(embedder_name=embedder_name, verifier_name=verifier_name)
    texts: dict[str, int] = {}
    for p in pairs:
        key = normalise(p.q2)
        if key not in texts:
            texts[key] = len(texts)
    entries = list(texts)
    originals = {normalise(p.q2): p.q2 for p in pairs}
    vectors = matcher.embedder.embed_many([originals[k] for k in entries])
    index = matcher.new_index()
    index.add_many(vectors, list(range(len(entries))))
    stored = [originals[k] for k in entries]
    # As at store time: each entry's MiniLM vector is computed once, outside the lookup.
    stored_acc = matcher.accurate.embed_many(stored) if matcher.accurate is not None else None
    correct = wrong = identical_wrong = 0
    timings: list[float] = []
    positives = sum(1 for p in pairs if p.duplicate)
    for p in pairs:
        started = time.perf_counter()
        matcher._accurate_cache.clear()
        found = matcher.match(
            p.q1, index, lambda i: stored[i],
            accurate_of=None if stored_acc is None else (lambda i: stored_acc[i]),
        )  # fmt: skip
        timings.append(time.perf_counter() - started)
        if found is None:
            continue
        if p.duplicate and found == texts[normalise(p.q2)]:
            correct += 1
        else:
            wrong += 1
            # QQP repeats questions across pairs: the entry returned may be the query's own
            # text, stored as another pair's q2. Strictly a "wrong entry"; counted apart.
            identical_wrong += same_question(p.q1, stored[found])
    hits = correct + wrong
    n = len(pairs)
    distinct_hits = hits - identical_wrong
    distinct_wrong = wrong - identical_wrong
    return {
        "pairs": n,
        "entries": len(entries),
        "embedder": matcher.name,
        "default": {
            "precision": round(correct / hits, 4) if hits else 1.0,
            "recall": round(correct / positives, 4) if positives else 0.0,
            "hit_rate": round(hits / n, 4) if n else 0.0,
            "false_hits_per_1k": round(1000 * wrong / n, 2) if n else 0.0,
        },
        "curve": [],
        "identical_text_hits_counted_wrong": identical_wrong,
        "excluding_identical_text": {
            "precision": round(correct / distinct_hits, 4) if distinct_hits else 1.0,
            "false_hits_per_1k": round(1000 * distinct_wrong / n, 2) if n else 0.0,
        },
        "latency_ms": _latency(timings),
        "latency_note": "embed + search + verify, per lookup",
    }


# ---------------------------------------------------------------- replay


@dataclass(frozen=True, slots=True)
class StreamItem:
    query: str
    answer: str
    known_different: frozenset[str] = frozenset()
    """Answers known to differ from this one (QQP: clusters a non-duplicate label separates
    from this question's). With it, a pair of answers neither equal nor known different is
    *unjudged*: QQP never compared most pairs of its questions."""


def qqp_stream(
    pairs: list[Pair], *, seed: int = 0, traffic: str = "once", queries: int = 0
) -> list[StreamItem]:
    """Questions of `pairs`, answered by their duplicate cluster (questions joined by a
    `duplicate` label, transitively): serving the answer of another cluster is a wrong
    answer. Two questions never compared by a label count as different, so the realized
    error rate is an upper bound.

    `traffic="once"`: every distinct question once, in a seeded random order. `"zipf"`:
    `queries` draws where a cluster's popularity follows Zipf's law (s = 1, clusters ranked
    in a seeded random order) and each draw asks a random member question of the cluster,
    as real traffic re-asks popular questions in several wordings. Exact repeats of a text
    already asked are the exact tier's business: the replay skips them."""
    parent: dict[str, str] = {}

    def root(x: str) -> str:
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    original: dict[str, str] = {}
    for p in pairs:
        a, b = normalise(p.q1), normalise(p.q2)
        original.setdefault(a, p.q1)
        original.setdefault(b, p.q2)
        ra, rb = root(a), root(b)
        if p.duplicate and ra != rb:
            parent[ra] = rb
    different: dict[str, set[str]] = {}
    for p in pairs:
        if not p.duplicate:
            ra, rb = root(normalise(p.q1)), root(normalise(p.q2))
            different.setdefault(ra, set()).add(rb)
            different.setdefault(rb, set()).add(ra)
    keys = sorted(original)
    rng = np.random.default_rng(seed)
    rng.shuffle(keys)
    if traffic == "once":
        return [
            StreamItem(original[k], root(k), frozenset(different.get(root(k), ()))) for k in keys
        ]
    members: dict[str, list[str]] = {}
    for k in keys:
        members.setdefault(root(k), []).append(k)
    clusters = list(members)
    weights = 1.0 / np.arange(1, len(clusters) + 1)
    picks = rng.choice(len(clusters), size=queries or len(keys), p=weights / weights.sum())
    out = []
    for c in picks:
        group = members[clusters[int(c)]]
        cl = clusters[int(c)]
        q = original[group[int(rng.integers(len(group)))]]
        out.append(StreamItem(q, cl, frozenset(different.get(cl, ()))))
    return out


def load_stream(
    path: str | Path,
    *,
    split: str = "auto",
    seed: int = 0,
    traffic: str = "once",
    queries: int = 0,
) -> list[StreamItem]:
    """A replay stream: `{"query", "answer"}` rows (a structured feature's traffic, in file
    order), or labelled pairs (QQP: see `qqp_stream`; held-out pairs by default)."""
    p = Path(path)
    opener: Any = gzip.open if p.suffix == ".gz" else open
    with opener(p, "rt", encoding="utf-8") as fh:
        first = next((line for line in fh if line.strip()), "")
    if not first:
        return []
    row = json.loads(first)
    if "query" in row and "answer" in row:
        return list(
            _rows(
                p,
                "{query, answer}",
                lambda r: StreamItem(str(r["query"]), json.dumps(r["answer"], sort_keys=True)),
            )
        )
    pairs = list(load_pairs(p))
    if split == "auto":
        split = "heldout" if any(x.source == "qqp" for x in pairs[:100]) else "all"
    if split == "heldout":
        pairs = [x for x in pairs if is_heldout(x.q1, x.q2)]
    return qqp_stream(pairs, seed=seed, traffic=traffic, queries=queries)


class _Scorer:
    """The matcher's best candidate per (query, entries so far), with cross-encoder scores
    remembered per text pair, so replays of one stream under several policies verify each
    pair once."""

    def __init__(self, matcher: Any) -> None:
        self.matcher = matcher
        self.memo: dict[tuple[str, str], float] = {}

    def best(self, text: str, index: Any, texts: list[str]) -> tuple[int, float] | None:
        m = self.matcher
        qe = m._embedded(text)
        found = index.search(qe.vector, m.candidates)
        same, ids, others = m.shortlist(text, found, texts.__getitem__)
        if same is not None:
            return same, 1.0
        if not ids:
            return None
        scores = []
        for o in others:
            key = (text, o)
            if key not in self.memo:
                self.memo[key] = m.pair_score(text, o)
            scores.append(min(self.memo[key], 0.99999))
        k = int(np.argmax(scores))
        return ids[k], float(scores[k])


def replay(
    stream: list[StreamItem],
    scorer: _Scorer,
    *,
    delta: float | None,
    threshold: float | None = None,
    verify_rate: float = 0.05,
    explore: bool = True,
    seed: int = 0,
) -> dict[str, Any]:
    """One pass of `stream` through a semantic cache, as the stage runs it: a query not
    served from the cache is answered upstream and stored; with `delta`, per-entry
    thresholds learn from explorations and sampled verifications; without, one static
    `threshold` (default: the shipped one) decides."""
    run = _Replay(stream, scorer, delta, threshold, verify_rate, explore, seed)
    seen: set[str] = set()
    for item in stream:
        key = normalise(item.query)
        if key in seen:
            run.n["exact"] += 1  # the exact tier answers a repeated text; not the semantic's
            continue
        seen.add(key)
        run.step(item)
    return run.result(len(stream))


class _Replay:
    """The cache one `replay` fills, and what it counted."""

    def __init__(
        self,
        stream: list[StreamItem],
        scorer: _Scorer,
        delta: float | None,
        threshold: float | None,
        verify_rate: float,
        explore: bool,
        seed: int,
    ) -> None:
        import random

        from spendgate.cache.index import VectorIndex
        from spendgate.cache.thresholds import EntryStats, ThresholdPolicy

        self.scorer = scorer
        self.delta = delta
        self.explore = explore
        m = scorer.matcher
        self.policy = ThresholdPolicy(m.prior, verify_rate=verify_rate, rng=random.Random(seed))
        self.cut = m.threshold if threshold is None else threshold
        self.index = VectorIndex(m.embedder.dim)
        self.texts: list[str] = []
        self.answers: list[str] = []
        self.stats: list[EntryStats] = []
        self.n: dict[str, int] = dict.fromkeys(
            ("hits", "wrong", "unjudged", "verified", "verify_wrong", "explored",
             "explore_agreed", "exact"),
            0,
        )  # fmt: skip
        self.labelled = any(item.known_different for item in stream)

    def judge(self, entry: int, item: StreamItem) -> bool | None:
        """Did the entry's answer answer this query? None: nobody knows (QQP never compared
        the two questions)."""
        from spendgate.cache.verifier import same_question

        if self.answers[entry] == item.answer or same_question(self.texts[entry], item.query):
            return True
        if not self.labelled or self.answers[entry] in item.known_different:
            return False
        return None

    def decide(self, entry: int, score: float) -> str:
        if self.delta is None:
            return "hit" if score >= 1.0 or score >= self.cut else "miss"
        decision = self.policy.decide(self.stats[entry], score, self.delta)
        return "miss" if decision == "explore" and not self.explore else decision

    def step(self, item: StreamItem) -> None:
        from spendgate.cache.thresholds import EntryStats

        found = self.scorer.best(item.query, self.index, self.texts) if self.texts else None
        if found is not None:
            eid, score = found
            decision = self.decide(eid, score)
            agreed = self.judge(eid, item)
            if decision == "hit":
                self.n["hits"] += 1
                self.n["wrong"] += agreed is False
                self.n["unjudged"] += agreed is None
                return  # served: nothing new is stored
            if decision in ("verify", "explore") and agreed is not None:
                self.stats[eid].record(score, agreed)
                if decision == "verify":
                    self.n["verified"] += 1
                    self.n["verify_wrong"] += not agreed
                else:
                    self.n["explored"] += 1
                    self.n["explore_agreed"] += agreed
        self.index.add(self.scorer.matcher._embedded(item.query).vector, len(self.texts))
        self.texts.append(item.query)
        self.answers.append(item.answer)
        self.stats.append(EntryStats())

    def result(self, total: int) -> dict[str, Any]:
        c = self.n
        n = total - c["exact"]
        hits, wrong, unjudged = c["hits"], c["wrong"], c["unjudged"]
        return {
            "delta": self.delta,
            "exact_repeats_skipped": c["exact"],
            "threshold": None if self.delta is not None else round(self.cut, 6),
            "queries": n,
            "hits": hits,
            "wrong_hits": wrong,
            "hit_rate": round(hits / n, 4) if n else 0.0,
            "unjudged_hits": unjudged,
            "error_rate": round(wrong / (hits - unjudged), 4) if hits > unjudged else 0.0,
            "verified": c["verified"],
            "verified_disagreed": c["verify_wrong"],
            "explored": c["explored"],
            "explored_agreed": c["explore_agreed"],
            "upstream_calls": n - hits,
            "savings_share": round(hits / n, 4) if n else 0.0,
        }


STATIC_GRID = (0.5, 0.7, 0.8, 0.9, 0.95, 0.97, 0.98, 0.99, 0.995, 0.998, 0.999, 0.9995, 0.9999)


def evaluate_replay(
    stream: list[StreamItem],
    *,
    delta: float = 0.02,
    verify_rate: float = 0.05,
    seed: int = 0,
    verifier_name: str | None = None,
) -> dict[str, Any]:
    """The adaptive (per-entry, error-bounded) policy against static thresholds on the same
    stream: realized error rate, hit rate, and the static hit rate at the same error."""
    from spendgate.cache.semantic import SemanticMatcher

    matcher = SemanticMatcher(verifier_name=verifier_name)
    scorer = _Scorer(matcher)
    started = time.perf_counter()
    adaptive = replay(stream, scorer, delta=delta, verify_rate=verify_rate, seed=seed)
    adaptive_s = time.perf_counter() - started
    shipped = replay(stream, scorer, delta=None)
    static = [replay(stream, scorer, delta=None, threshold=t) for t in STATIC_GRID]
    base = replay(stream, scorer, delta=None, threshold=min(1.0, _base(matcher, delta)))
    within = [s for s in static if s["error_rate"] <= max(adaptive["error_rate"], 1e-9)]
    best_static = max(within, key=lambda s: s["hit_rate"]) if within else None
    ratio = None
    if best_static is not None and best_static["hit_rate"] > 0:
        ratio = round(adaptive["hit_rate"] / best_static["hit_rate"], 2)
    return {
        "stream": len(stream),
        "verifier": matcher.name,
        "delta": delta,
        "verify_rate": verify_rate,
        "adaptive": adaptive,
        "static_shipped_default": shipped,
        "static_at_delta": base,
        "static_curve": static,
        "best_static_at_same_error": best_static,
        "hit_rate_ratio_vs_best_static": ratio,
        "replay_s": round(adaptive_s, 1),
    }


def _base(matcher: Any, delta: float) -> float:
    from spendgate.cache.thresholds import ThresholdPolicy

    return ThresholdPolicy(matcher.prior).base_threshold(delta)
