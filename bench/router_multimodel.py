"""Multi-model routing on RouterDC's seven open 7–8B models (../shared/data/routing/).

    .venv/bin/python bench/router_multimodel.py [--json] [--steps 150]

Trains one quality predictor per model on 80% of the prompts (split by a hash of the id),
then on the other 20% picks, per prompt, the cheapest model whose predicted quality is at
least `target` × the best prediction, for several targets. Prints mean quality and mean
price next to each single model and the per-prompt oracle. The models have no list price,
so PRICES below are illustrative $/MTok (bigger/tuned models dearer) — pass your own to
`MultiModelRouter.choose` in practice.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import zlib
from pathlib import Path

from spendgate.routing.multimodel import evaluate_multimodel, read_multi, train_multimodel
from spendgate.routing.train import TrainOptions

DATA = Path(os.environ.get("SPENDGATE_DATA", "/work/shared/data")) / "routing"
PRICES = {
    "mistralai/Mistral-7B-v0.1": 0.10,
    "itpossible/Chinese-Mistral-7B-v0.1": 0.10,
    "HuggingFaceH4/zephyr-7b-beta": 0.12,
    "meta-math/MetaMath-Mistral-7B": 0.12,
    "cognitivecomputations/dolphin-2.6-mistral-7b": 0.12,
    "meta-llama/Meta-Llama-3-8B": 0.15,
    "cognitivecomputations/dolphin-2.9-llama3-8b": 0.20,
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--steps", type=int, default=150)
    args = ap.parse_args()
    path = DATA / "open7b_models.jsonl.gz"
    if not path.exists():
        sys.exit(f"no data at {path}")
    rows = read_multi(path)
    test = [r for r in rows if zlib.crc32(str(r["id"]).encode()) % 5 == 0]
    train = [r for r in rows if zlib.crc32(str(r["id"]).encode()) % 5 != 0]
    router = train_multimodel(train, list(PRICES), TrainOptions(steps=args.steps))
    res = evaluate_multimodel(router, test, PRICES, targets=(1.0, 0.95, 0.9, 0.8, 0.7))
    res["train_rows"] = len(train)
    if args.json:
        print(json.dumps(res))
        return
    print(f"{res['n']} held-out prompts ({len(train)} to train)")
    for m, v in res["single_models"].items():
        print(f"  always {m:48s} quality {v['quality']:.4f}  price {v['price']:.3f}")
    for t, v in res["targets"].items():
        print(f"  router target {t:5s}{'':34s} quality {v['quality']:.4f}  price {v['price']:.4f}")
    o = res["oracle"]
    print(f"  oracle{'':50s} quality {o['quality']:.4f}  price {o['price']:.4f}")


if __name__ == "__main__":
    main()
