"""Train a `LinearRouter` on logged quality data (`spendgate train-router`).

Label per prompt (`TrainOptions.target`): `win` — did the strong model beat the weak one? For
1/0 correctness that is `strong > weak`; for judge scores a soft label `0.5 + 2·(strong −
weak)` clipped to [0, 1]. `difficulty` — 1 − the mean quality of every model scored on the
prompt (a soft label; pass the per-row means as `fit(..., targets=...)`, else the mean of the
strong and weak scores is used): how hard the prompt is transfers across benchmarks better
than one pair's wins, and it is what the shipped default router is trained on.

The model is L2-regularised logistic regression over hashed word n-grams plus dense shape
features, fitted full-batch with Adam in numpy (numpy is needed to train, not to serve).
Rows are weighted so each source counts by the square root of its size: one huge benchmark
(MMLU is 14k of the 15.5k RouteLLM rows) must not drown the others, which is what lets the
router carry over to benchmarks it never saw.
"""

from __future__ import annotations

import math
import time
from array import array
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from spendgate.routing.evaluate import Row
from spendgate.routing.features import DENSE_NAMES, dense_features, hashed_features
from spendgate.routing.routers import LinearRouter

__all__ = ["Features", "TrainOptions", "featurize", "fit", "label", "train_router"]


@dataclass(frozen=True)
class TrainOptions:
    buckets: int = 1 << 16
    l2: float = 1e-5
    steps: int = 300
    lr: float = 0.05
    balance_sources: bool = True
    target: str = "win"
    """`win`: strong beats weak (what routing gains); `weak_fails`: 1 − weak quality (a
    difficulty signal with more positive labels); `difficulty`: 1 − mean quality over all
    scored models (see module docstring); `quality`: the strong model's quality."""


def label(strong: float, weak: float) -> float:
    """P(strong needed) target for one prompt (see module docstring)."""
    if strong in (0.0, 1.0) and weak in (0.0, 1.0):
        return 1.0 if strong > weak else 0.0
    return min(1.0, max(0.0, 0.5 + 2.0 * (strong - weak)))


@dataclass
class Features:
    """Rows turned into arrays once, so held-out protocols can refit on subsets cheaply."""

    rows: Sequence[Row]
    buckets: int
    row_idx: Any
    cols: Any
    vals: Any
    dense: Any

    def subset(self, keep: Any) -> Features:
        """The rows where the boolean numpy mask `keep` is true."""
        import numpy as np

        idx = np.flatnonzero(keep)
        remap = np.full(len(self.rows), -1, dtype=np.int64)
        remap[idx] = np.arange(len(idx))
        sel = keep[self.row_idx]
        return Features(
            rows=[self.rows[int(i)] for i in idx],
            buckets=self.buckets,
            row_idx=remap[self.row_idx[sel]],
            cols=self.cols[sel],
            vals=self.vals[sel],
            dense=self.dense[idx],
        )


def featurize(rows: Sequence[Row], buckets: int = 1 << 16) -> Features:
    import numpy as np

    row_idx: list[int] = []
    cols: list[int] = []
    vals: list[float] = []
    dense = np.zeros((len(rows), len(DENSE_NAMES)))
    for i, r in enumerate(rows):
        for h, v in hashed_features(r.prompt, buckets).items():
            row_idx.append(i)
            cols.append(h)
            vals.append(v)
        dense[i] = dense_features(r.prompt)
    return Features(
        rows=rows,
        buckets=buckets,
        row_idx=np.asarray(row_idx, dtype=np.int64),
        cols=np.asarray(cols, dtype=np.int64),
        vals=np.asarray(vals),
        dense=dense,
    )


def _targets(rows: Sequence[Row], target: str) -> list[float]:
    if target == "quality":
        return [min(max(r.strong, 0.0), 1.0) for r in rows]
    if target == "weak_fails":
        return [1.0 - min(max(r.weak, 0.0), 1.0) for r in rows]
    if target == "win":
        return [label(r.strong, r.weak) for r in rows]
    if target == "difficulty":
        return [1.0 - min(max((r.strong + r.weak) / 2.0, 0.0), 1.0) for r in rows]
    raise ValueError(f"unknown target {target!r} (difficulty, quality, weak_fails, win)")


def fit(
    feats: Features,
    strong: str,
    weak: str,
    options: TrainOptions | None = None,
    meta: dict[str, Any] | None = None,
    targets: Sequence[float] | None = None,
) -> LinearRouter:
    """Fit a router on featurized rows; `meta` (provenance, calibration) goes in the file.

    `targets` (one soft label in [0, 1] per row) overrides the labels `options.target` would
    derive from the rows' strong/weak scores, e.g. per-prompt difficulty over many models."""
    import numpy as np

    opt = options or TrainOptions()
    rows = feats.rows
    if not rows:
        raise ValueError("no training rows")
    if feats.buckets != opt.buckets:
        raise ValueError("features were hashed into a different bucket count")
    started = time.perf_counter()
    n, b = len(rows), opt.buckets
    ri, ci, vv, dense = feats.row_idx, feats.cols, feats.vals, feats.dense
    d_dense = dense.shape[1]
    if targets is not None:
        if len(targets) != n:
            raise ValueError(f"{len(targets)} targets for {n} rows")
        y = np.clip(np.asarray(targets, dtype=float), 0.0, 1.0)
    else:
        y = np.asarray(_targets(rows, opt.target))
    if opt.balance_sources:
        counts = Counter(r.source for r in rows)
        sw = np.asarray([1.0 / math.sqrt(counts[r.source]) for r in rows])
    else:
        sw = np.ones(n)
    sw *= n / sw.sum()
    w = np.zeros(b)
    wd = np.zeros(d_dense)
    base = float(np.clip(np.average(y, weights=sw), 1e-3, 1 - 1e-3))
    wd[0] = math.log(base / (1 - base))
    params = [w, wd]
    m = [np.zeros_like(p) for p in params]
    v2 = [np.zeros_like(p) for p in params]
    beta1, beta2, eps = 0.9, 0.999, 1e-8
    for step in range(1, opt.steps + 1):
        z = np.bincount(ri, weights=w[ci] * vv, minlength=n) + dense @ wd
        p = 1.0 / (1.0 + np.exp(-np.clip(z, -40, 40)))
        err = (p - y) * sw / n
        grads = [
            np.bincount(ci, weights=err[ri] * vv, minlength=b) + opt.l2 * w,
            dense.T @ err + opt.l2 * np.r_[0.0, wd[1:]],
        ]
        for k, (param, g) in enumerate(zip(params, grads, strict=True)):
            m[k] = beta1 * m[k] + (1 - beta1) * g
            v2[k] = beta2 * v2[k] + (1 - beta2) * g * g
            mh = m[k] / (1 - beta1**step)
            vh = v2[k] / (1 - beta2**step)
            param -= opt.lr * mh / (np.sqrt(vh) + eps)
    info = dict(meta or {})
    info.update(
        strong=strong,
        weak=weak,
        rows=n,
        sources=dict(sorted(Counter(r.source for r in rows).items())),
        options={k: getattr(opt, k) for k in opt.__dataclass_fields__},
        train_seconds=round(time.perf_counter() - started, 2),
    )
    return LinearRouter(
        weights=array("f", w.astype(np.float32).tobytes()),
        dense=[float(x) for x in wd],
        meta=info,
    )


def train_router(
    rows: Sequence[Row],
    strong: str,
    weak: str,
    options: TrainOptions | None = None,
    meta: dict[str, Any] | None = None,
    targets: Sequence[float] | None = None,
) -> LinearRouter:
    """Featurize `rows` and fit a router on them."""
    opt = options or TrainOptions()
    return fit(featurize(rows, opt.buckets), strong, weak, opt, meta, targets)
