"""Offline evaluation of the compressor on question/context/answers data.

Answer retention, per example:
- short answers (every answer ≤ `LONG_ANSWER_WORDS` words, e.g. NaturalQuestions): 1 when
  one answer string is still in the compressed context (case-insensitive), else 0;
- long abstractive answers (QMSum): ROUGE-L recall of the best answer against the compressed
  context, divided by the same recall against the full context (capped at 1) — i.e. the share
  of the answer's recoverable content that compression kept. Dividing by the full-context
  figure matters: a human summary shares only part of its words with the transcript at all.

Speed: CPU time of the calling thread spent in the method alone (tokenizer counts
included), per 1k input tokens, after one warm-up call. CPU time rather than wall time
because the figure is "on one core" and this machine is shared; `bench/compress.py` prints
wall time too.
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
from typing import Any

from spendgate.tokens import count_text
from spendgate.trim.compress import DEFAULT_WEIGHTS, Weights, compress_text, keep_first
from spendgate.trim.compress import question_overlap as overlap_baseline
from spendgate.trim.spans import compression_counter

__all__ = [
    "LONG_ANSWER_WORDS",
    "MethodResult",
    "evaluate",
    "in_split",
    "lcs_length",
    "load_rows",
    "retention",
    "rouge_l_recall",
]

LONG_ANSWER_WORDS = 12
_TOK = re.compile(r"\w+", re.UNICODE)


def in_split(row: dict[str, Any], split: str) -> bool:
    """`tune`: rows whose id hashes even (what the weights were tuned on); `held-out`: odd."""
    if split == "all":
        return True
    digest = int(hashlib.sha1(str(row.get("id", "")).encode()).hexdigest(), 16)
    return (digest % 2 == 0) == (split == "tune")


def load_rows(path: str | Path, limit: int | None = None) -> list[dict[str, Any]]:
    """Rows of a `.jsonl` or `.jsonl.gz` file with `question`, `context` and `answers`."""
    p = Path(path)
    opener: Callable[..., Any] = gzip.open if p.suffix == ".gz" else open
    rows: list[dict[str, Any]] = []
    with opener(p, "rt", encoding="utf-8") as fh:
        for line in fh:
            if not line.strip():
                continue
            row = json.loads(line)
            if not isinstance(row.get("context"), str) or not row.get("answers"):
                raise ValueError(f"{p}: each row needs `context` (string) and `answers` (list)")
            rows.append(row)
            if limit is not None and len(rows) >= limit:
                break
    return rows


def lcs_length(a: list[str], b: list[str]) -> int:
    """Length of the longest common subsequence, bit-parallel (Hyyrö 2004): O(len(b)) big-int
    steps, so a 50-word answer against a 10k-word transcript takes a millisecond or two."""
    if not a or not b:
        return 0
    m = len(a)
    masks: dict[str, int] = {}
    for i, tok in enumerate(a):
        masks[tok] = masks.get(tok, 0) | (1 << i)
    full = (1 << m) - 1
    s = full
    for tok in b:
        mk = masks.get(tok)
        if mk is None:
            continue
        u = s & mk
        s = ((s + u) | (s - u)) & full
    return m - bin(s).count("1")


def _toks(text: str) -> list[str]:
    return _TOK.findall(text.lower())


def rouge_l_recall(answer: str, context: str) -> float:
    ref = _toks(answer)
    return lcs_length(ref, _toks(context)) / len(ref) if ref else 0.0


def retention(row: dict[str, Any], compressed: str) -> float:
    answers = [str(a) for a in row["answers"]]
    if all(len(a.split()) <= LONG_ANSWER_WORDS for a in answers):
        low = compressed.lower()
        return 1.0 if any(a.lower() in low for a in answers) else 0.0
    best = 0.0
    for a in answers:
        full = rouge_l_recall(a, row["context"])
        if full > 0:
            best = max(best, min(1.0, rouge_l_recall(a, compressed) / full))
    return best


@dataclass
class MethodResult:
    name: str
    n: int
    target_ratio: float
    achieved_ratio: float
    answer_retention: float
    ms_per_1k_tokens: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "target_ratio": self.target_ratio,
            "achieved_ratio": round(self.achieved_ratio, 4),
            "answer_retention": round(self.answer_retention, 4),
            "ms_per_1k_tokens": round(self.ms_per_1k_tokens, 3),
        }


def _run(
    name: str,
    rows: list[dict[str, Any]],
    ratio: float,
    model: str,
    fn: Callable[[dict[str, Any]], str],
) -> MethodResult:
    def count(t: str) -> int:
        return count_text(model, t)

    before = after = 0
    kept = 0.0
    seconds = 0.0
    if rows:
        fn(rows[0])  # warm-up: loads word statistics and tokenizer tables once
    for row in rows:
        t0 = time.thread_time()
        out = fn(row)
        seconds += time.thread_time() - t0
        before += count(row["context"])
        after += count(out)
        kept += retention(row, out)
    n = len(rows)
    return MethodResult(
        name=name,
        n=n,
        target_ratio=ratio,
        achieved_ratio=after / before if before else 1.0,
        answer_retention=kept / n if n else 0.0,
        ms_per_1k_tokens=seconds * 1000 / (before / 1000) if before else 0.0,
    )


def evaluate(
    rows: list[dict[str, Any]],
    ratio: float,
    *,
    model: str = "gpt-4o",
    weights: Weights = DEFAULT_WEIGHTS,
    baselines: bool = True,
) -> Iterator[MethodResult]:
    """spendgate's compressor first, then (optionally) keep-first and question-overlap."""

    count, _estimated = compression_counter(model)
    yield _run(
        "spendgate",
        rows,
        ratio,
        model,
        lambda r: (
            compress_text(r["context"], r.get("question"), ratio, count, weights=weights).text
        ),
    )
    if baselines:
        yield _run(
            "keep_first", rows, ratio, model, lambda r: keep_first(r["context"], ratio, count)
        )
        yield _run(
            "question_overlap",
            rows,
            ratio,
            model,
            lambda r: overlap_baseline(r["context"], r.get("question") or "", ratio, count),
        )
