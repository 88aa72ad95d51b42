"""Routing metrics, RouteLLM's definitions, on labelled data (`../shared/data/routing/` format).

Each row has per-model quality `scores` (1/0 correctness or a judge score in [0, 1]).
Sending the top-k% of prompts by router score to the strong model gives a quality curve:
PGR(k) = (quality(k) − weak) / (strong − weak); APGR = area under PGR over k ∈ [0, 1]
(random = 0.5); CPT(x) = the smallest strong-call share with PGR ≥ x. Ties in the router's
score are broken pessimistically-neutral by averaging (a router that cannot tell prompts
apart gets the random curve, not a lucky one).
"""

from __future__ import annotations

import gzip
import json
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "Curve",
    "Row",
    "curve",
    "evaluate",
    "oracle_scores",
    "read_rows",
]

GRID = 100


@dataclass(frozen=True, slots=True)
class Row:
    id: str
    source: str
    prompt: str
    strong: float
    weak: float
    strong_cost: float | None = None
    weak_cost: float | None = None


def _open(path: str | Path) -> Iterator[str]:
    p = Path(path)
    opener = gzip.open if p.suffix == ".gz" else open
    with opener(p, "rt", encoding="utf-8") as fh:
        yield from fh


def _prompt_of(obj: dict[str, Any]) -> str:
    prompt = obj.get("prompt")
    if isinstance(prompt, str):
        return prompt
    turns = obj.get("turns")
    if isinstance(turns, list) and turns:
        return str(turns[-1])
    return ""


def read_rows(
    path: str | Path, strong: str, weak: str, sources: Sequence[str] | None = None
) -> list[Row]:
    """Rows scored for both models. Raises ValueError naming the problem (bad line, unknown
    model) so the CLI can say it plainly."""
    rows: list[Row] = []
    seen_models: set[str] = set()
    for n, line in enumerate(_open(path), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except ValueError:
            raise ValueError(f"{path}:{n}: not a JSON object") from None
        if not isinstance(obj, dict) or not isinstance(obj.get("scores"), dict):
            raise ValueError(f"{path}:{n}: each line needs a `scores` object")
        scores = obj["scores"]
        seen_models.update(scores)
        if sources and obj.get("source") not in sources:
            continue
        s, w = scores.get(strong), scores.get(weak)
        if s is None or w is None:
            continue
        raw_costs = obj.get("costs_usd")
        costs: dict[str, Any] = raw_costs if isinstance(raw_costs, dict) else {}
        sc, wc = costs.get(strong), costs.get(weak)
        rows.append(
            Row(
                id=str(obj.get("id", n)),
                source=str(obj.get("source", "")),
                prompt=_prompt_of(obj),
                strong=float(s),
                weak=float(w),
                strong_cost=float(sc) if sc is not None else None,
                weak_cost=float(wc) if wc is not None else None,
            )
        )
    if not rows:
        known = ", ".join(sorted(seen_models)) or "none"
        raise ValueError(f"{path}: no rows score both {strong!r} and {weak!r} (models: {known})")
    return rows


@dataclass
class Curve:
    """Quality as a function of the strong-call share, on a grid of GRID+1 points."""

    shares: list[float]
    pgr: list[float]
    quality: list[float]
    strong_q: float
    weak_q: float

    @property
    def apgr(self) -> float:
        # trapezoid over [0, 1]
        pts = self.pgr
        return sum((pts[i] + pts[i + 1]) / 2 for i in range(len(pts) - 1)) / (len(pts) - 1)

    def cpt(self, x: float) -> float:
        for share, p in zip(self.shares, self.pgr, strict=True):
            if p >= x - 1e-12:
                return share
        return 1.0

    def share_for_quality(self, fraction: float) -> float:
        """Smallest strong-call share whose quality ≥ `fraction` × strong quality."""
        target = fraction * self.strong_q
        for share, q in zip(self.shares, self.quality, strict=True):
            if q >= target - 1e-12:
                return share
        return 1.0


def curve(rows: Sequence[Row], scores: Sequence[float]) -> Curve:
    """Route the top-k share by score to strong, for k on the grid; ties are averaged."""
    n = len(rows)
    order = sorted(range(n), key=lambda i: -scores[i])
    gain = [rows[i].strong - rows[i].weak for i in order]
    # average the gain within tied groups so the order inside a tie does not matter
    i = 0
    while i < n:
        j = i
        while j + 1 < n and scores[order[j + 1]] == scores[order[i]]:
            j += 1
        if j > i:
            avg = sum(gain[i : j + 1]) / (j + 1 - i)
            gain[i : j + 1] = [avg] * (j + 1 - i)
        i = j + 1
    prefix = [0.0]
    for g in gain:
        prefix.append(prefix[-1] + g)
    weak_q = sum(r.weak for r in rows) / n
    strong_q = sum(r.strong for r in rows) / n
    gap = strong_q - weak_q
    shares, pgr, quality = [], [], []
    for k in range(GRID + 1):
        share = k / GRID
        pos = share * n
        lo = math.floor(pos)
        extra = prefix[lo] + (prefix[min(lo + 1, n)] - prefix[lo]) * (pos - lo)
        q = weak_q + extra / n
        shares.append(share)
        quality.append(q)
        pgr.append((q - weak_q) / gap if gap > 0 else 1.0)
    return Curve(shares, pgr, quality, strong_q, weak_q)


def oracle_scores(rows: Sequence[Row]) -> list[float]:
    """The perfect router: strong only where it beats weak, biggest gains first."""
    return [r.strong - r.weak for r in rows]


def _summary(
    c: Curve,
    rows: Sequence[Row],
    costs: tuple[list[float], list[float]] | None,
    scores: Sequence[float],
) -> dict[str, Any]:
    share95 = c.share_for_quality(0.95)
    out: dict[str, Any] = {
        "apgr": round(c.apgr, 4),
        "cpt50": round(c.cpt(0.5), 4),
        "cpt80": round(c.cpt(0.8), 4),
        "strong_share_at_95": round(share95, 4),
        "cost_saving_at_95": None,
    }
    if costs is not None:
        strong_c, weak_c = costs
        all_strong = sum(strong_c)
        n = len(rows)
        k = round(share95 * n)
        order = sorted(range(n), key=lambda i: -scores[i])
        chosen = set(order[:k])
        spent = sum(strong_c[i] if i in chosen else weak_c[i] for i in range(n))
        out["cost_saving_at_95"] = round(1 - spent / all_strong, 4) if all_strong > 0 else None
    return out


def evaluate(
    rows: Sequence[Row],
    scores: Sequence[float],
    costs: tuple[list[float], list[float]] | None = None,
) -> dict[str, Any]:
    """The CLI's `--json` object: router vs random vs oracle, plus the router's curve."""
    c = curve(rows, scores)
    n = len(rows)
    random_scores = [0.0] * n  # all tied: exactly the expected random curve
    o = oracle_scores(rows)
    rc, oc = curve(rows, random_scores), curve(rows, o)
    return {
        "n": n,
        "strong_quality": round(c.strong_q, 4),
        "weak_quality": round(c.weak_q, 4),
        "router": {**_summary(c, rows, costs, scores), "curve": [round(p, 4) for p in c.pgr]},
        "random": _summary(rc, rows, costs, random_scores),
        "oracle": _summary(oc, rows, costs, o),
    }
