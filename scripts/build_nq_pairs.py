"""Build a non-Quora evaluation set for the semantic cache from NaturalQuestions-open
(`../shared/data/compression/nq_open_10docs.jsonl.gz`, 1,594 real Google queries with gold
answers; CC BY-SA 3.0).

Why: all-MiniLM-L6-v2, whose weights the shipped cross-encoder starts from, was pre-trained
on Quora duplicate questions, so QQP figures may be flattered. NQ-open questions are real
search queries no part of the model was trained on, and they come with gold answers, which
is what a cache is judged by: serving question B's stored answer for question A is right
exactly when their answers agree.

    .venv/bin/python scripts/build_nq_pairs.py [--min-cosine 0.6] [--out-dir /tmp/sg_nq]

writes
- `nq_pairs.jsonl`: every pair of distinct questions whose static-model cosine is
  >= `--min-cosine` (the pairs a semantic cache would retrieve and verify), labelled
  `duplicate` when their normalised gold answer sets intersect ("who won the mens single
  ice skating 2018" / "who won the men's ice skating 2018"); the rest (same topic, other
  answer: "2017" / "2018" seasons, other people) are the hard negatives. Some positives are
  coincidences of a short answer ("2017" for two different events): a verifier should reject
  those, so recall on this set is bounded below 1 while precision is the figure that
  matters.
- `nq_stream.jsonl`: every question once as `{"query", "answer"}` (answer: the sorted
  normalised gold answers), in a seeded random order, for `--mode replay`.

    spendgate eval cache /tmp/sg_nq/nq_pairs.jsonl --split all
    spendgate eval cache /tmp/sg_nq/nq_stream.jsonl --mode replay --delta 0.02
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "compression" / "nq_open_10docs.jsonl.gz"


def _norm(answer: str) -> str:
    return " ".join(answer.lower().replace("the ", " ").split()).strip(" .")


def main() -> int:
    from spendgate.cache.embedder import StaticEmbedder

    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(DATA))
    ap.add_argument("--min-cosine", type=float, default=0.6)
    ap.add_argument("--out-dir", default="/tmp/sg_nq")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    with gzip.open(args.data, "rt", encoding="utf-8") as fh:
        rows = [json.loads(line) for line in fh if line.strip()]
    questions = [str(r["question"]) for r in rows]
    answers = [frozenset(_norm(a) for a in r["answers"]) for r in rows]
    vec = StaticEmbedder().embed_many(questions)
    sims = vec @ vec.T
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    n_pos = n = 0
    with open(out / "nq_pairs.jsonl", "w", encoding="utf-8") as fh:
        for i in range(len(questions)):
            for j in range(i + 1, len(questions)):
                if sims[i, j] < args.min_cosine or questions[i] == questions[j]:
                    continue
                dup = bool(answers[i] & answers[j])
                n += 1
                n_pos += dup
                row = {"q1": questions[i], "q2": questions[j], "duplicate": dup,
                       "source": "nq-open-answers"}  # fmt: skip
                fh.write(json.dumps(row) + "\n")
    order = list(range(len(questions)))
    random.Random(args.seed).shuffle(order)
    with open(out / "nq_stream.jsonl", "w", encoding="utf-8") as fh:
        for i in order:
            fh.write(json.dumps({"query": questions[i], "answer": sorted(answers[i])}) + "\n")
    print(
        f"{n} pairs at cosine >= {args.min_cosine} ({n_pos} with agreeing answers), "
        f"{len(questions)} stream queries -> {out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
