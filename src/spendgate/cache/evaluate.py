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
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


def load_pairs(path: str | Path) -> Iterator[Pair]:
    """Rows of a `{"q1", "q2", "duplicate"}` JSON Lines file, gzip or plain."""
    p = Path(path)
    opener: Any = gzip.open if p.suffix == ".gz" else open
    with opener(p, "rt", encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                yield Pair(
                    str(row["q1"]), str(row["q2"]), bool(row["duplicate"]), row.get("source", "")
                )
            except (ValueError, KeyError, TypeError) as exc:
                raise ValueError(f"{p}:{n}: not a {{q1, q2, duplicate}} row ({exc})") from None


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
    pairs: list[Pair], *, embedder_name: str | None = None, threshold: float | None = None
) -> dict[str, Any]:
    """Precision/recall of the shipped matcher's decision on each pair (q1 as the query,
    q2 as the stored entry), plus cosine-only curves."""
    from spendgate.cache.semantic import SemanticMatcher

    matcher = SemanticMatcher(embedder_name=embedder_name, threshold=threshold)
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


def evaluate_retrieval(pairs: list[Pair], *, embedder_name: str | None = None) -> dict[str, Any]:
    """Index every distinct q2, look up every q1 through the semantic matcher."""
    from spendgate.cache.semantic import SemanticMatcher
    from spendgate.cache.verifier import same_question

    matcher = SemanticMatcher(embedder_name=embedder_name)
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
