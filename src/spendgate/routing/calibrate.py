"""Choosing the threshold for a target, on calibration data.

A router's score is only useful with a threshold: calls scoring ≥ it go to the strong model.
Two targets people ask for:
- `quality`: keep ≥ q of the strong model's quality (e.g. 0.95) with as few strong calls as
  possible → the threshold at the smallest strong share whose quality reaches q × strong.
- `strong_share`: send at most s of the calls (e.g. 0.30) to the strong model → the score
  quantile at 1 − s.
Both are read off the calibration rows' scores, so the threshold transfers as long as the
traffic's score distribution resembles the calibration data's — recalibrate on your own
logged traffic (`spendgate train-router` does it and stores the result in the file).
"""

from __future__ import annotations

from collections.abc import Sequence

from spendgate.routing.evaluate import Row, curve

__all__ = ["calibrate", "threshold_for_quality", "threshold_for_share"]


def threshold_for_share(scores: Sequence[float], share: float) -> float:
    """Threshold that sends (at most) `share` of these scores to the strong model."""
    if not scores:
        raise ValueError("no calibration scores")
    ranked = sorted(scores, reverse=True)
    k = int(share * len(ranked))
    if k <= 0:
        return min(1.0, ranked[0] + 1e-9)
    if k >= len(ranked):
        return 0.0
    # the k-th highest score, nudged above the next one so ties do not push the share over
    return (ranked[k - 1] + ranked[k]) / 2 if ranked[k - 1] > ranked[k] else ranked[k - 1] + 1e-12


def threshold_for_quality(rows: Sequence[Row], scores: Sequence[float], fraction: float) -> float:
    """Threshold that keeps ≥ `fraction` of strong quality on these rows."""
    share = curve(rows, scores).share_for_quality(fraction)
    return threshold_for_share(scores, share)


def calibrate(rows: Sequence[Row], scores: Sequence[float]) -> dict[str, float]:
    """The thresholds stored with a trained router (names usable as `routing.threshold`)."""
    return {
        "quality_95": round(threshold_for_quality(rows, scores, 0.95), 6),
        "quality_90": round(threshold_for_quality(rows, scores, 0.90), 6),
        "strong_30": round(threshold_for_share(scores, 0.30), 6),
        "strong_50": round(threshold_for_share(scores, 0.50), 6),
    }
