"""Routing pieces on their own: metrics on hand-made data, calibration, router files,
training, multi-model choice and the CLI (on the shared data when present)."""

from __future__ import annotations

import gzip
import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest
from click.testing import CliRunner

from spendgate.cli import main
from spendgate.routing.calibrate import threshold_for_quality, threshold_for_share
from spendgate.routing.evaluate import Row, curve, evaluate, read_rows
from spendgate.routing.multimodel import MultiModelRouter, evaluate_multimodel, train_multimodel
from spendgate.routing.routers import LinearRouter, default_router, get_router, load_router
from spendgate.routing.train import TrainOptions, label, train_router

DATA = Path("/work/shared/data/routing")
ROUTELLM = DATA / "routellm_gpt4_vs_mixtral.jsonl.gz"
GPT4, MIXTRAL = "gpt-4-1106-preview", "mistralai/Mixtral-8x7B-Instruct-v0.1"


def rows_of(pairs: Sequence[tuple[float, float]]) -> list[Row]:
    return [
        Row(id=str(i), source="t", prompt=f"p{i}", strong=s, weak=w)
        for i, (s, w) in enumerate(pairs)
    ]


def test_curve_on_hand_made_rows() -> None:
    # 4 prompts: only #0 and #1 gain from strong; strong avg 0.75, weak avg 0.25
    rows = rows_of([(1, 0), (1, 0), (0, 0), (1, 1)])
    perfect = curve(rows, [0.9, 0.8, 0.1, 0.2])
    assert perfect.cpt(0.5) == 0.25 and perfect.cpt(1.0) == 0.5
    backwards = curve(rows, [0.1, 0.2, 0.9, 0.8])
    assert backwards.cpt(0.5) == 0.75
    tied = curve(rows, [0.5] * 4)
    assert tied.apgr == pytest.approx(0.5)  # an uninformative router is exactly random
    # PGR at 25% for the perfect order: one of two gains = 0.5
    assert perfect.pgr[25] == pytest.approx(0.5)
    assert perfect.apgr > tied.apgr > backwards.apgr


def test_evaluate_reports_router_random_oracle_and_costs() -> None:
    rows = rows_of([(1, 0), (0, 0), (1, 1), (1, 0)] * 5)
    costs = ([10.0] * 20, [1.0] * 20)
    res = evaluate(rows, [r.strong - r.weak for r in rows], costs)
    assert res["n"] == 20 and res["random"]["apgr"] == 0.5
    assert res["router"]["apgr"] == res["oracle"]["apgr"]
    # 95% of strong quality (0.75 → ≥ 0.7125): each 1% strong share adds 0.01 quality over
    # weak's 0.25 while gaining prompts last, so the first grid point is 47%; 9 prompts strong
    assert res["router"]["strong_share_at_95"] == 0.47
    assert res["router"]["cost_saving_at_95"] == pytest.approx(1 - (9 * 10 + 11 * 1) / 200)


def test_threshold_for_share_and_quality() -> None:
    scores = [i / 100 for i in range(100)]
    t = threshold_for_share(scores, 0.3)
    assert sum(s >= t for s in scores) == 30
    assert threshold_for_share(scores, 0.0) > max(scores)
    assert threshold_for_share(scores, 1.0) == 0.0
    rows = rows_of([(1, 0)] * 10 + [(1, 1)] * 10)
    sc = [1.0] * 10 + [0.0] * 10
    tq = threshold_for_quality(rows, sc, 1.0)
    assert sum(s >= tq for s in sc) == 10


def test_label() -> None:
    assert label(1.0, 0.0) == 1.0 and label(1.0, 1.0) == 0.0 and label(0.0, 1.0) == 0.0
    assert label(0.9, 0.6) == 1.0 and label(0.6, 0.6) == 0.5


def _synthetic() -> list[Row]:
    rows = []
    for i in range(200):
        hard = i % 2 == 0
        text = f"prove the theorem about lattice {i}" if hard else f"say hello to friend {i}"
        rows.append(
            Row(
                id=str(i),
                source="a" if i < 100 else "b",
                prompt=text,
                strong=1.0,
                weak=0.0 if hard else 1.0,
            )
        )
    return rows


def test_train_save_load_roundtrip(tmp_path: Path) -> None:
    rows = _synthetic()
    r = train_router(rows, "s", "w", TrainOptions(buckets=1 << 10, steps=60, target="win"))
    assert r.score_text("prove the theorem about lattice 999") > 0.8
    assert r.score_text("say hello to friend 999") < 0.2
    path = tmp_path / "r.bin"
    r.meta["thresholds"] = {"quality_95": 0.5}
    r.save(path)
    back = load_router(path)
    assert back.thresholds == {"quality_95": 0.5} and back.meta["strong"] == "s"
    assert back.score_text("prove it") == pytest.approx(r.score_text("prove it"), abs=1e-6)
    assert get_router(str(path)).score_text("x") == pytest.approx(r.score_text("x"), abs=1e-6)


def test_train_difficulty_targets() -> None:
    """`difficulty` learns 1 − mean quality; explicit per-row targets override the rows."""
    rows = _synthetic()
    opts = TrainOptions(buckets=1 << 10, steps=60, target="difficulty")
    r = train_router(rows, "s", "w", opts)
    assert r.score_text("prove the theorem about lattice 999") > r.score_text("say hello 999")
    # inverted explicit targets (e.g. difficulty over other models) flip the ranking
    flipped = [0.0 if row.weak == 0.0 else 1.0 for row in rows]
    r2 = train_router(rows, "s", "w", opts, targets=flipped)
    assert r2.score_text("prove the theorem about lattice 999") < r2.score_text("say hello 999")
    with pytest.raises(ValueError, match="targets for"):
        train_router(rows, "s", "w", opts, targets=[0.5])


def test_bad_router_files(tmp_path: Path) -> None:
    bad = tmp_path / "bad.bin"
    bad.write_bytes(b"nope")
    with pytest.raises(ValueError, match="bad magic"):
        load_router(bad)
    trunc = tmp_path / "trunc.bin"
    trunc.write_bytes(b"SGR1\x05\x00\x00\x00{}")
    with pytest.raises(ValueError):
        load_router(trunc)
    with pytest.raises(ValueError, match="unknown router"):
        get_router("no-such-router")


def test_default_router_ships_and_is_small() -> None:
    r = default_router()
    assert set(r.thresholds) >= {"quality_95", "strong_30"}
    f = Path(__file__).resolve().parent.parent / "src/spendgate/data/router_default.bin"
    assert f.stat().st_size < 5_000_000
    assert 0.0 <= r.score_text("") <= 1.0
    assert isinstance(r, LinearRouter)


def test_multimodel_picks_cheapest_adequate() -> None:
    rows = []
    for i in range(120):
        hard = i % 2 == 0
        rows.append(
            {
                "id": str(i),
                "source": "t",
                "prompt": f"hard integral {i}" if hard else f"easy greeting {i}",
                "scores": {"big": 1.0, "small": 0.0 if hard else 1.0},
            }
        )
    mm = train_multimodel(rows, ["big", "small"], TrainOptions(buckets=1 << 10, steps=60))
    prices = {"big": 10.0, "small": 1.0}
    assert mm.choose("easy greeting 7", prices, 0.9) == "small"
    assert mm.choose("hard integral 7", prices, 0.9) == "big"
    res = evaluate_multimodel(mm, rows, prices, targets=(0.9,))
    assert res["targets"]["0.9"]["quality"] == 1.0
    assert res["targets"]["0.9"]["price"] == pytest.approx(5.5)
    with pytest.raises(ValueError):
        mm.choose("x", {}, 0.9)
    assert isinstance(mm, MultiModelRouter)


def _write(path: Path, rows: Sequence[Mapping[str, object]]) -> None:
    with gzip.open(path, "wt") as fh:
        for r in rows:
            fh.write(json.dumps(r) + "\n")


def test_cli_train_then_eval_with_costs(tmp_path: Path) -> None:
    rows = [
        {
            "id": str(i),
            "source": "t",
            "prompt": f"prove lemma {i}" if i % 2 else f"greet person {i}",
            "scores": {"S": 1.0, "W": 0.0 if i % 2 else 1.0},
            "costs_usd": {"S": 0.01, "W": 0.001},
        }
        for i in range(300)
    ]
    data = tmp_path / "d.jsonl.gz"
    _write(data, rows)
    out = tmp_path / "mine.bin"
    res = CliRunner().invoke(
        main,
        [
            "train-router",
            str(data),
            "--strong",
            "S",
            "--weak",
            "W",
            "-o",
            str(out),
            "--steps",
            "60",
            "--target",
            "win",
            "--json",
        ],
    )
    assert res.exit_code == 0, res.output
    summary = json.loads(res.output)
    cal = summary["calibration"]
    assert cal["router"]["apgr"] >= 0.98 * cal["oracle"]["apgr"] > cal["random"]["apgr"]
    res = CliRunner().invoke(
        main,
        [
            "eval",
            "router",
            str(data),
            "--strong",
            "S",
            "--weak",
            "W",
            "--router",
            str(out),
            "--json",
        ],
    )
    assert res.exit_code == 0, res.output
    j = json.loads(res.output)
    assert j["n"] == 300 and j["cost_source"] == "costs_usd"
    assert set(j["router"]) >= {"apgr", "cpt50", "cpt80", "cost_saving_at_95"}
    assert j["random"]["apgr"] == 0.5 and j["oracle"]["cpt50"] == 0.25
    # a perfect router reaches 95% of strong quality (1.0) with 45% strong calls:
    # cost 0.45 × $0.01 + 0.55 × $0.001 per prompt against $0.01 all-strong
    assert j["router"]["cost_saving_at_95"] == pytest.approx(1 - (0.45 * 10 + 0.55) / 10, abs=0.01)
    text = CliRunner().invoke(
        main, ["eval", "router", str(data), "--strong", "S", "--weak", "W", "--router", str(out)]
    )
    assert "oracle" in text.output and "PGR curve" in text.output


def test_cli_errors_are_plain(tmp_path: Path) -> None:
    data = tmp_path / "d.jsonl"
    data.write_text('{"scores": {"A": 1}}\nnot json\n')
    res = CliRunner().invoke(main, ["eval", "router", str(data), "--strong", "A", "--weak", "B"])
    assert res.exit_code == 2 and "not a JSON object" in res.output
    data.write_text('{"prompt": "x", "scores": {"A": 1}}\n')
    res = CliRunner().invoke(main, ["eval", "router", str(data), "--strong", "A", "--weak", "B"])
    assert res.exit_code == 2 and "no rows score both" in res.output


@pytest.mark.skipif(not ROUTELLM.exists(), reason="shared routing data absent")
def test_eval_default_router_on_mtbench_with_catalog_prices() -> None:
    res = CliRunner().invoke(
        main,
        [
            "eval",
            "router",
            str(ROUTELLM),
            "--strong",
            GPT4,
            "--weak",
            MIXTRAL,
            "--source",
            "routellm-mtbench",
            "--json",
        ],
    )
    assert res.exit_code == 0, res.output
    j = json.loads(res.output)
    assert j["n"] == 160
    rows = read_rows(ROUTELLM, GPT4, MIXTRAL, ["routellm-mtbench"])
    assert j["strong_quality"] == pytest.approx(sum(r.strong for r in rows) / 160, abs=1e-4)
    assert j["oracle"]["apgr"] > j["random"]["apgr"] == 0.5
