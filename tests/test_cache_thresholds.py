"""Per-entry error-bounded thresholds: what an entry learns from verified outcomes."""

from __future__ import annotations

import random

import pytest

from spendgate.cache.thresholds import (
    ABOVE_ALL,
    EntryStats,
    ThresholdPolicy,
    answers_agree,
    normalise_answer,
)


def prior(score: float) -> float:
    """A verifier whose validation precision above t is 0.85 + 0.14 t (0.99 at t = 1)."""
    return 0.85 + 0.14 * score


def policy(**kw: float) -> ThresholdPolicy:
    return ThresholdPolicy(prior, rng=random.Random(0), **kw)  # type: ignore[arg-type]


def test_no_outcomes_means_the_static_threshold_for_delta() -> None:
    p = policy()
    # precision >= 0.98 from t >= 0.93 on (0.85 + 0.14 * 0.93 = 0.9802)
    base = p.base_threshold(0.02)
    assert 0.92 <= base <= 0.95
    assert p.threshold(EntryStats(), 0.02) == base
    # A looser bound gives a lower threshold; an unreachable one serves only the same text.
    assert p.base_threshold(0.10) < base
    assert p.base_threshold(0.001) == 1.0


def test_agreeing_outcomes_lower_an_entry_threshold() -> None:
    p = policy()
    base = p.base_threshold(0.02)
    stats = EntryStats()
    for _ in range(12):
        stats.record(0.6, True)
    learned = p.threshold(stats, 0.02)
    assert learned < base
    # …but never far below where the evidence is: agreeing outcomes at 0.6 say nothing
    # about 0.35.
    assert learned > 0.3


def test_a_disagreement_tightens_at_once_and_for_good() -> None:
    p = policy()
    stats = EntryStats()
    for _ in range(20):
        stats.record(0.6, True)
    assert p.threshold(stats, 0.02) < 0.6
    stats.record(0.97, False)
    assert p.threshold(stats, 0.02) > 0.97
    assert p.decide(stats, 0.96, 0.02) == "explore"  # a near miss: compared, not served
    stats.record(1.0, False)  # even the same text gave another answer
    assert p.threshold(stats, 0.02) == ABOVE_ALL
    assert p.decide(stats, 1.0, 0.02) != "hit"


def test_decisions_hit_verify_explore_miss() -> None:
    p = policy(verify_rate=0.25)
    stats = EntryStats()
    decisions = [p.decide(stats, 0.99, 0.02) for _ in range(400)]
    assert set(decisions) == {"hit", "verify"}
    assert 60 <= decisions.count("verify") <= 140  # ~25 %
    assert p.decide(stats, 0.7, 0.02) == "explore"
    assert p.decide(stats, 0.1, 0.02) == "miss"
    assert policy(verify_rate=0.0).decide(stats, 0.99, 0.02) == "hit"


def test_outcome_window_is_bounded() -> None:
    stats = EntryStats()
    for i in range(100):
        stats.record(0.5, i % 2 == 0, max_obs=16)
    assert len(stats.obs) == 16


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        ('{"label": "billing", "p": 1}', '{"p": 1, "label": "billing"}', True),
        ("Billing.", "billing", True),
        ('{"label": "billing"}', '{"label": "refund"}', False),
        (["a", "b"], ["a", "b"], True),
    ],
)
def test_answer_equivalence(a: object, b: object, same: bool) -> None:
    assert answers_agree(a, b, mode="answer") is same


def test_text_answers_use_the_similarity_bar() -> None:
    sim = lambda a, b: 0.95 if "Paris" in a and "Paris" in b else 0.2  # noqa: E731
    assert answers_agree("It is Paris.", "Paris is the capital.", similarity=sim)
    assert not answers_agree("It is Paris.", "It is Lyon.", similarity=sim)
    assert not answers_agree("It is Paris.", "Paris is the capital.", mode="answer")
    assert normalise_answer("  Yes! ") == "yes"
    # The default judge: word overlap.
    assert answers_agree("Paris is the capital of France.", "The capital of France is Paris")
    assert not answers_agree("Paris is the capital of France.", "Lyon is a city in France.")
