"""Multi-model routing: with N models and their prices, the cheapest model whose predicted
quality meets the target.

One `LinearRouter` per model predicts P(that model answers well) (trained with target
`quality`). For a prompt, the candidates are the models whose predicted quality is at least
`target` × the best predicted quality; the cheapest of them serves. `target` = 1 always picks
the predicted-best model; lower targets trade quality for cost.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from spendgate.routing.evaluate import Row
from spendgate.routing.routers import LinearRouter
from spendgate.routing.train import TrainOptions, featurize, fit

__all__ = ["MultiModelRouter", "evaluate_multimodel", "read_multi", "train_multimodel"]


@dataclass
class MultiModelRouter:
    models: dict[str, LinearRouter]

    def predict(self, text: str) -> dict[str, float]:
        return {m: r.score_text(text) for m, r in self.models.items()}

    def choose(self, text: str, prices: Mapping[str, float], target: float = 0.95) -> str:
        """The cheapest model (by `prices`, e.g. USD per call or per MTok) whose predicted
        quality ≥ target × the best prediction. Unpriced models are never chosen."""
        return self.pick(self.predict(text), prices, target)

    @staticmethod
    def pick(predicted: Mapping[str, float], prices: Mapping[str, float], target: float) -> str:
        """The choice `choose` makes, from predictions already computed."""
        preds = {m: q for m, q in predicted.items() if m in prices}
        if not preds:
            raise ValueError("no priced model to choose from")
        best = max(preds.values())
        ok = [m for m, q in preds.items() if q >= target * best]
        return min(ok, key=lambda m: (prices[m], -preds[m]))

    def save(self, folder: str | Path) -> None:
        d = Path(folder)
        d.mkdir(parents=True, exist_ok=True)
        index = {}
        for i, (m, r) in enumerate(self.models.items()):
            r.save(d / f"model{i}.bin")
            index[m] = f"model{i}.bin"
        (d / "models.json").write_text(json.dumps(index, indent=1))

    @classmethod
    def load(cls, folder: str | Path) -> MultiModelRouter:
        from spendgate.routing.routers import load_router

        d = Path(folder)
        index = json.loads((d / "models.json").read_text())
        return cls({m: load_router(d / f) for m, f in index.items()})


def read_multi(path: str | Path) -> list[dict[str, Any]]:
    """Rows with a `scores` object for several models (the shared routing format)."""
    p = Path(path)
    opener = gzip.open if p.suffix == ".gz" else open
    with opener(p, "rt", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def train_multimodel(
    rows: Sequence[dict[str, Any]], models: Sequence[str], options: TrainOptions | None = None
) -> MultiModelRouter:
    """One quality predictor per model, all fitted on the same featurized prompts (rows
    must score every model)."""
    opt = replace(options or TrainOptions(), target="quality")
    usable = [r for r in rows if all(r["scores"].get(m) is not None for m in models)]
    if not usable:
        raise ValueError("no rows score every model")
    base = [
        Row(
            id=str(r.get("id")),
            source=str(r.get("source", "")),
            prompt=str(r["prompt"]),
            strong=0.0,
            weak=0.0,
        )
        for r in usable
    ]
    feats = featurize(base, opt.buckets)
    out = {}
    for m in models:
        labelled = [
            replace(b, strong=float(r["scores"][m])) for b, r in zip(base, usable, strict=True)
        ]
        out[m] = fit(replace(feats, rows=labelled), m, "", opt)
    return MultiModelRouter(out)


def evaluate_multimodel(
    router: MultiModelRouter,
    rows: Sequence[dict[str, Any]],
    prices: Mapping[str, float],
    targets: Sequence[float] = (1.0, 0.95, 0.9, 0.8),
) -> dict[str, Any]:
    """Mean quality and mean price per prompt at each target, next to every single model
    and the per-prompt oracle (cheapest model that got the best score)."""
    n = len(rows)
    single = {m: sum(float(r["scores"][m]) for r in rows) / n for m in prices}
    oracle_q = oracle_c = 0.0
    for r in rows:
        best = max(float(r["scores"][m]) for m in prices)
        cheapest = min((m for m in prices if float(r["scores"][m]) == best), key=prices.__getitem__)
        oracle_q += best
        oracle_c += prices[cheapest]
    result: dict[str, Any] = {
        "n": n,
        "single_models": {
            m: {"quality": round(q, 4), "price": prices[m]} for m, q in single.items()
        },
        "oracle": {"quality": round(oracle_q / n, 4), "price": round(oracle_c / n, 6)},
        "targets": {},
    }
    for t in targets:
        q = c = 0.0
        for r in rows:
            m = router.choose(r["prompt"], prices, t)
            q += float(r["scores"][m])
            c += prices[m]
        result["targets"][str(t)] = {"quality": round(q / n, 4), "price": round(c / n, 6)}
    return result
