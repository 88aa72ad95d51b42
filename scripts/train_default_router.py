"""Train the shipped default router and measure it on data it never saw.

Data: /work/shared/data/routing/ (or $SPENDGATE_DATA/routing/) — RouteLLM's GPT-4 vs
Mixtral labels and RouterDC's seven open 7–8B models. The open7b pair used as
"strong/weak" is dolphin-2.9-llama3-8b (best on average) vs Mistral-7B-v0.1 (the base model).

Thresholds (`quality_95`, `quality_90`, `strong_30`, `strong_50`) are chosen on out-of-fold
scores (5 folds by id hash) over all rows of both files, so they are not read off the rows
the shipped model was fitted on.

Held-out protocol (leave one benchmark family out): the sources are grouped into families —
mmlu, gsm8k, mtbench, arc, math, code, chinese — and the same benchmark in both files is one
family (MMLU and GSM8K prompts appear in both). For each family F, a router is trained on
every other family (both files) and scored on each source of F. No prompt of a family is seen
while that family is evaluated. The shipped router is then trained on all families.

Label (`--target difficulty`, the default): 1 − the mean quality of *every* model scored on
the prompt (7 models for RouterDC rows, 2 for RouteLLM rows) — how hard the prompt is, which
transfers to unseen benchmarks better than one pair's wins (`--target win`).

    .venv/bin/python scripts/train_default_router.py [--json] [--no-lobo] [-o PATH]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import sys
import zlib
from pathlib import Path

from spendgate.routing.calibrate import calibrate
from spendgate.routing.evaluate import Row, evaluate, read_rows
from spendgate.routing.routers import LinearRouter
from spendgate.routing.train import TrainOptions, featurize, fit

DATA = Path(os.environ.get("SPENDGATE_DATA", "/work/shared/data")) / "routing"
ROUTELLM = (
    "routellm_gpt4_vs_mixtral.jsonl.gz",
    "gpt-4-1106-preview",
    "mistralai/Mixtral-8x7B-Instruct-v0.1",
)
OPEN7B = (
    "open7b_models.jsonl.gz",
    "cognitivecomputations/dolphin-2.9-llama3-8b",
    "mistralai/Mistral-7B-v0.1",
)
OUT = Path(__file__).resolve().parent.parent / "src" / "spendgate" / "data" / "router_default.bin"


def family(source: str) -> str:
    s = source.lower()
    for key, fam in (
        ("mmlu", "mmlu"),
        ("gsm8k", "gsm8k"),
        ("mtbench", "mtbench"),
        ("arc_", "arc"),
        ("math", "math"),
        ("ceval", "chinese"),
        ("humaneval", "code"),
        ("mbpp", "code"),
        ("javascript", "code"),
    ):
        if key in s:
            return "chinese" if s.startswith("routerdc-cmmlu") else fam
    return s


def eval_source(source: str) -> str:
    """Open7b train/test splits of one benchmark are evaluated together."""
    return (
        source.replace("_train", "").replace("_test", "").replace("-train", "").replace("-test", "")
    )


def load() -> list[Row]:
    rows: list[Row] = []
    for fname, strong, weak in (ROUTELLM, OPEN7B):
        rows += read_rows(DATA / fname, strong, weak)
    return rows


def difficulty(rows: list[Row]) -> list[float]:
    """1 − mean quality over all models scored on each row's prompt (same file, source, id)."""
    mean: dict[tuple[str, str], float] = {}
    for fname, _, _ in (ROUTELLM, OPEN7B):
        with gzip.open(DATA / fname, "rt", encoding="utf-8") as fh:
            for n, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                obj = json.loads(line)
                key = (str(obj.get("source", "")), str(obj.get("id", n)))
                if key in mean:
                    raise ValueError(f"{fname}: duplicate (source, id) {key}")
                vals = [float(v) for v in obj["scores"].values()]
                mean[key] = sum(vals) / len(vals)
    return [1.0 - min(max(mean[(r.source, r.id)], 0.0), 1.0) for r in rows]


def _figures(rows: list[Row], scores: list[float]) -> dict[str, float]:
    res = evaluate(rows, scores)
    return {
        "n": res["n"],
        **{k: res["router"][k] for k in ("apgr", "cpt50", "cpt80", "strong_share_at_95")},
        "oracle_apgr": res["oracle"]["apgr"],
    }


def main() -> None:
    import numpy as np

    ap = argparse.ArgumentParser()
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--no-lobo", action="store_true", help="only train the shipped router")
    ap.add_argument("-o", "--output", default=str(OUT))
    ap.add_argument("--target", default="difficulty", choices=["difficulty", "win", "weak_fails"])
    ap.add_argument("--steps", type=int, default=200)
    args = ap.parse_args()
    if not DATA.exists():
        sys.exit(f"no data at {DATA}")
    rows = load()
    opts = TrainOptions(target=args.target, steps=args.steps)
    feats = featurize(rows, opts.buckets)
    y = np.asarray(difficulty(rows)) if args.target == "difficulty" else None

    def train(keep: np.ndarray, meta: dict[str, object] | None = None) -> LinearRouter:
        return fit(feats.subset(keep), "strong", "weak", opts, meta, None if y is None else y[keep])

    fam = np.asarray([family(r.source) for r in rows])
    src = np.asarray([eval_source(r.source) for r in rows])
    report: dict[str, object] = {}
    say = (lambda *a, **k: None) if args.json else print
    if not args.no_lobo:
        held: dict[str, dict[str, float]] = {}
        pooled = np.zeros(len(rows))
        for f in sorted(set(fam)):
            router = train(fam != f)
            for i in np.flatnonzero(fam == f):
                pooled[i] = router.logit_text(rows[i].prompt)
            for s in sorted(set(src[fam == f])):
                idx = np.flatnonzero(src == s)
                held[s] = _figures([rows[i] for i in idx], [pooled[i] for i in idx])
                say(f"held-out {s:28s} {held[s]}", flush=True)
        macro = {
            k: round(float(np.mean([h[k] for h in held.values()])), 4)
            for k in ("apgr", "cpt50", "cpt80", "strong_share_at_95")
        }
        say("macro average over held-out sources", macro)
        per_file = {}
        for pref in ("routellm", "routerdc"):
            sel = [i for i, r in enumerate(rows) if r.source.startswith(pref)]
            per_file[pref] = _figures([rows[i] for i in sel], [pooled[i] for i in sel])
            say(f"pooled held-out {pref}", per_file[pref])
        # in-domain reference: 5-fold cross-validation on RouteLLM's MMLU prompts
        idx = np.flatnonzero(src == "routellm-mmlu")
        cv = np.zeros(len(rows))
        for k in range(5):
            test = np.zeros(len(rows), dtype=bool)
            test[idx[np.arange(len(idx)) % 5 == k]] = True
            router = train((src == "routellm-mmlu") & ~test)
            for i in np.flatnonzero(test):
                cv[i] = router.logit_text(rows[i].prompt)
        in_domain = _figures([rows[i] for i in idx], [cv[i] for i in idx])
        say("in-domain 5-fold CV routellm-mmlu", in_domain)
        report.update(
            held_out=held,
            macro_average=macro,
            pooled_held_out=per_file,
            in_domain_mmlu_cv=in_domain,
        )
    final = train(
        np.ones(len(rows), dtype=bool),
        meta={
            "trained_on": [ROUTELLM[0], OPEN7B[0]],
            "pairs": [list(ROUTELLM[1:]), list(OPEN7B[1:])],
            "label": (
                "1 - mean quality over all scored models"
                if args.target == "difficulty"
                else args.target
            ),
        },
    )
    # thresholds from out-of-fold scores (5-fold), not from the rows the model memorised
    oof = np.zeros(len(rows))
    fold = np.asarray([zlib.crc32(r.id.encode()) % 5 for r in rows])
    for k in range(5):
        router = train(fold != k)
        for i in np.flatnonzero(fold == k):
            oof[i] = router.score_text(rows[i].prompt)
    final.meta["thresholds"] = calibrate(rows, [float(x) for x in oof])
    final.meta["strong"], final.meta["weak"] = None, None
    final.name = "default"
    final.save(args.output)
    size = Path(args.output).stat().st_size
    report.update(artifact_bytes=size, thresholds=final.meta["thresholds"])
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        print(f"wrote {args.output} ({size} bytes), thresholds {final.meta['thresholds']}")


if __name__ == "__main__":
    main()
