"""Adapting the router to a feature's own labels, held out (leave one benchmark family out).

    .venv/bin/python bench/router_adapt.py [--k 200] [--seeds 0,1,2] [--json] [--cache DIR]

The protocol of docs/routing.md, "held out", with adaptation on top: for each benchmark
family F (mmlu, gsm8k, mtbench, arc, math, code, chinese), a base router is trained with the
shipped recipe on every *other* family (so it never saw F), then, per source of F, the
adaptive router gets the first K labelled prompts of a seeded shuffle (at most half the
source) and is scored on the rest — exactly `spendgate eval router --adapt K`, with a base
router that never saw the source. Pairs: RouteLLM rows GPT-4-1106 vs Mixtral-8x7B, RouterDC
rows dolphin-2.9-llama3-8b vs Mistral-7B-v0.1 (the RouterDC train/test splits of a benchmark
are one source). Prints per source and macro APGR / CPT(50%) for the adapted router, the
unadapted base, random and oracle, averaged over the seeds. The trained base routers are
cached in --cache (training them takes ~2 minutes on one core).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from spendgate.routing.adaptive import evaluate_adaptation
from spendgate.routing.routers import LinearRouter, load_router

ROOT = Path(__file__).resolve().parent.parent


def _recipe() -> Any:
    """The shipped router's training script (its data loading, families and recipe)."""
    spec = importlib.util.spec_from_file_location(
        "train_default_router", ROOT / "scripts" / "train_default_router.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def held_out_routers(recipe: Any, rows: list[Any], cache: Path) -> dict[str, LinearRouter]:
    """One base router per family, trained without it (cached as files)."""
    cache.mkdir(parents=True, exist_ok=True)
    families = sorted({recipe.family(r.source) for r in rows})
    paths = {f: cache / f"lofo-{f}.bin" for f in families}
    if not all(p.exists() for p in paths.values()):
        import numpy as np

        from spendgate.routing.train import TrainOptions, featurize, fit

        opts = TrainOptions(target="difficulty", steps=200)
        feats = featurize(rows, opts.buckets)
        y = np.asarray(recipe.difficulty(rows))
        fam = np.asarray([recipe.family(r.source) for r in rows])
        for f in families:
            keep = fam != f
            router = fit(feats.subset(keep), "strong", "weak", opts, None, y[keep])
            router.save(paths[f])
            print(f"trained base router without {f}", file=sys.stderr, flush=True)
    return {f: load_router(p) for f, p in paths.items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--k", type=int, default=200)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--cache", default=os.environ.get("TMPDIR", "/tmp") + "/spendgate-lofo")
    args = ap.parse_args()
    recipe = _recipe()
    if not recipe.DATA.exists():
        sys.exit(f"no data at {recipe.DATA}")
    raw = recipe.load()
    routers = held_out_routers(recipe, raw, Path(args.cache))
    rows = [replace(r, source=recipe.eval_source(r.source)) for r in raw]
    seeds = [int(s) for s in args.seeds.split(",")]
    per_source: dict[str, dict[str, Any]] = {}
    for fam, base in routers.items():
        fam_rows = [r for r in rows if recipe.family(r.source) == fam]
        runs = [evaluate_adaptation(fam_rows, base, args.k, seed) for seed in seeds]
        for source in runs[0]["sources"]:
            figs: dict[str, Any] = {
                "labels": runs[0]["sources"][source]["labels"],
                "scored": runs[0]["sources"][source]["scored"],
            }
            for policy in ("adapted", "unadapted", "random", "oracle"):
                figs[policy] = {
                    key: round(
                        sum(run["sources"][source][policy][key] for run in runs) / len(runs), 4
                    )
                    for key in ("apgr", "cpt50", "strong_share_at_95")
                }
            per_source[source] = figs
            if not args.json:
                a, u = figs["adapted"], figs["unadapted"]
                print(
                    f"{source:28s} labels {figs['labels']:4d}  adapted APGR {a['apgr']:.3f} "
                    f"CPT50 {a['cpt50']:.0%}   unadapted {u['apgr']:.3f} / {u['cpt50']:.0%}   "
                    f"oracle {figs['oracle']['apgr']:.3f}",
                    flush=True,
                )
    macro = {
        policy: {
            key: round(sum(s[policy][key] for s in per_source.values()) / len(per_source), 4)
            for key in ("apgr", "cpt50", "strong_share_at_95")
        }
        for policy in ("adapted", "unadapted", "random", "oracle")
    }
    result = {"k": args.k, "seeds": seeds, "sources": per_source, "macro": macro}
    if args.json:
        print(json.dumps(result))
        return
    for policy, m in macro.items():
        print(
            f"macro {policy:10s} APGR {m['apgr']:.3f}  CPT(50%) {m['cpt50']:.1%}  "
            f"strong share at 95% quality {m['strong_share_at_95']:.1%}"
        )


if __name__ == "__main__":
    main()
