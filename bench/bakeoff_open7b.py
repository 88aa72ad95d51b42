"""The bake-off's pick, checked offline on RouterDC's seven open 7–8B models.

    .venv/bin/python bench/bakeoff_open7b.py [--sample 200] [--target 0.95] [--seeds 0-9] [--json]

Each source of ../shared/data/routing/open7b_models.jsonl.gz (train/test splits of a
benchmark pooled) plays one feature whose team asked for its strongest model (the best mean
score on the whole source). The bake-off draws `--sample` prompts, uses the file's scores as
the judge (absolute, like the rubric judge), prices each answer at the illustrative $/MTok
below on the prompt's size (chars / 4 input tokens + 256 output tokens), and picks with
`spendgate.routing.bakeoff.summarize` — the code `spendgate bakeoff` runs. The pick is then
checked on the *whole* source: within target = its mean score ≥ target × the strongest
model's; and where some model within target costs ≥ 30% less than the strongest, did the
pick find one that cheap. Repeated over seeds (different draws).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import sys
from collections import defaultdict
from decimal import Decimal
from pathlib import Path

from spendgate.routing.bakeoff import summarize

DATA = Path(os.environ.get("SPENDGATE_DATA", "/work/shared/data")) / "routing"
PRICES = {
    "mistralai/Mistral-7B-v0.1": Decimal("0.10"),
    "itpossible/Chinese-Mistral-7B-v0.1": Decimal("0.10"),
    "HuggingFaceH4/zephyr-7b-beta": Decimal("0.12"),
    "meta-math/MetaMath-Mistral-7B": Decimal("0.12"),
    "cognitivecomputations/dolphin-2.6-mistral-7b": Decimal("0.12"),
    "meta-llama/Meta-Llama-3-8B": Decimal("0.15"),
    "cognitivecomputations/dolphin-2.9-llama3-8b": Decimal("0.20"),
}
"""Illustrative $/MTok (the models have no list price): the same as bench/router_multimodel.py."""


def pooled(source: str) -> str:
    for cut in ("_train", "_test", "-train", "-test"):
        source = source.replace(cut, "")
    return source


def cost(model: str, prompt: str) -> Decimal:
    tokens = len(prompt) // 4 + 256
    return PRICES[model] * tokens / Decimal(1_000_000)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sample", type=int, default=200)
    ap.add_argument("--target", type=float, default=0.95)
    ap.add_argument("--seeds", default="0-9")
    ap.add_argument("--confidence", type=float, default=0.5)
    ap.add_argument(
        "--requested",
        choices=["overall", "per-source"],
        default="overall",
        help="the team asked for the strongest model over the file, or per source",
    )
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    path = DATA / "open7b_models.jsonl.gz"
    if not path.exists():
        sys.exit(f"no data at {path}")
    lo, _, hi = args.seeds.partition("-")
    seeds = list(range(int(lo), int(hi or lo) + 1))
    by_source: dict[str, list[dict[str, object]]] = defaultdict(list)
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        for line in fh:
            row = json.loads(line)
            by_source[pooled(row["source"])].append(row)
    models = list(PRICES)
    overall = {m: 0.0 for m in models}
    total = 0
    for rows in by_source.values():
        for r in rows:
            for m in models:
                overall[m] += float(r["scores"][m])  # type: ignore[index]
        total += len(rows)
    best_overall = max(models, key=lambda m: overall[m])
    per_source = {}
    for source, rows in sorted(by_source.items()):
        mean = {m: sum(float(r["scores"][m]) for r in rows) / len(rows) for m in models}  # type: ignore[index]
        strongest = (
            best_overall
            if args.requested == "overall"
            else max(models, key=lambda m: (mean[m], -PRICES[m]))
        )
        ok = [m for m in models if mean[m] >= args.target * mean[strongest]]
        cheap_ok = [m for m in ok if PRICES[m] <= Decimal("0.7") * PRICES[strongest]]
        picks = []
        for seed in seeds:
            sample = random.Random(f"{seed}:{source}").sample(rows, min(args.sample, len(rows)))
            grades = {m: [float(r["scores"][m]) for r in sample] for m in models}  # type: ignore[index]
            costs = {m: [cost(m, str(r["prompt"])) for r in sample] for m in models}
            _, picked = summarize(
                strongest, grades, costs, target=args.target, seed=seed, confidence=args.confidence
            )
            picks.append(picked)
        within = sum(p in ok for p in picks) / len(picks)
        found = sum(PRICES[p] <= Decimal("0.7") * PRICES[strongest] for p in picks) / len(picks)
        per_source[source] = {
            "n": len(rows),
            "strongest": strongest,
            "strongest_quality": round(mean[strongest], 4),
            "cheaper_within_target_exists": bool(cheap_ok),
            "within_target": round(within, 3),
            "found_30pct_cheaper": round(found, 3),
            "picks": {m: picks.count(m) for m in sorted(set(picks))},
            "mean_cost_vs_strongest": round(
                float(sum(PRICES[p] for p in picks) / len(picks) / PRICES[strongest]), 3
            ),
        }
        if not args.json:
            s = per_source[source]
            print(
                f"{source:26s} n {len(rows):5d}  strongest {strongest.split('/')[-1]:24s} "
                f"within target {within:4.0%}  cheaper model exists "
                f"{'yes' if cheap_ok else 'no ':3s}  found ≥30% cheaper {found:4.0%}  "
                f"cost vs strongest {s['mean_cost_vs_strongest']:.2f}"
            )
    srcs = list(per_source.values())
    exists = [s for s in srcs if s["cheaper_within_target_exists"]]
    summary = {
        "sample": args.sample,
        "target": args.target,
        "seeds": seeds,
        "sources": per_source,
        "within_target_share": round(sum(s["within_target"] for s in srcs) / len(srcs), 4),  # type: ignore[misc]
        "sources_with_cheaper_model": len(exists),
        "found_30pct_cheaper_share": (
            round(sum(s["found_30pct_cheaper"] for s in exists) / len(exists), 4)  # type: ignore[misc]
            if exists
            else None
        ),
    }
    if args.json:
        print(json.dumps(summary))
        return
    print(
        f"picks within {args.target:.0%} of the strongest model's quality: "
        f"{summary['within_target_share']:.1%} of (source, draw) pairs over {len(srcs)} sources"
    )
    if exists:
        print(
            f"where a ≥30% cheaper model within target exists ({len(exists)} sources), the "
            f"pick was ≥30% cheaper in {summary['found_30pct_cheaper_share']:.1%} of draws"
        )


if __name__ == "__main__":
    main()
