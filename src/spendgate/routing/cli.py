"""`spendgate train-router` and `spendgate eval router` (numpy is imported only to train)."""

from __future__ import annotations

import json
import zlib
from pathlib import Path
from typing import Any

import click

from spendgate.cli_support import choice_option, config_option, fail, json_option, ledger_option
from spendgate.routing.evaluate import Row
from spendgate.routing.routers import Router

__all__ = ["commands", "eval_commands", "router", "train_router"]


def _estimated_costs(
    rows: list[Row], strong: str, weak: str
) -> tuple[list[float], list[float]] | None:
    """Per-row costs: the file's `costs_usd` when every row has them, else the price catalog
    on the prompt's size (chars / 4 input tokens, 256 output tokens)."""
    if all(r.strong_cost is not None and r.weak_cost is not None for r in rows):
        return [float(r.strong_cost or 0) for r in rows], [float(r.weak_cost or 0) for r in rows]
    from spendgate.call import Usage
    from spendgate.pricing import PriceCatalog

    catalog = PriceCatalog.default()
    out: tuple[list[float], list[float]] = ([], [])
    for r in rows:
        usage = Usage(input_tokens=max(1, len(r.prompt) // 4), output_tokens=256)
        for model, bucket in ((strong, out[0]), (weak, out[1])):
            cost = catalog.cost(model, usage)
            if cost is None:
                return None
            bucket.append(float(cost.total))
    return out


@click.command("router")
@click.argument("data", type=click.Path(exists=True, dir_okay=False))
@click.option("--strong", required=True, help="Strong model name as in the file's scores.")
@click.option("--weak", required=True, help="Weak model name as in the file's scores.")
@click.option(
    "--router",
    "router_name",
    default="default",
    show_default=True,
    help="Registered router name (default, random, length) or a router file.",
)
@click.option("--source", "sources", multiple=True, help="Only rows of this source (repeatable).")
@click.option(
    "--adapt",
    type=click.IntRange(min=0),
    default=None,
    help="Per source, let the router learn K labelled prompts (seeded order) and score the rest.",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Order of --adapt labels.")
@json_option()
def router(
    data: str,
    strong: str,
    weak: str,
    router_name: str,
    sources: tuple[str, ...],
    adapt: int | None,
    seed: int,
    as_json: bool,
) -> None:
    """Evaluate a router: PGR curve, APGR, CPT(50%), CPT(80%) vs random and oracle; with
    --adapt K, per source and macro figures after K labels, next to the unadapted router."""
    from spendgate.routing.evaluate import evaluate, read_rows
    from spendgate.routing.routers import get_router

    try:
        rows = read_rows(data, strong, weak, sources or None)
        r = get_router(router_name)
    except ValueError as exc:
        fail(str(exc))
    costs = _estimated_costs(rows, strong, weak)
    if adapt is not None:
        _adapt_report(rows, r, adapt, seed, costs, as_json)
        return
    scores = [r.score_text(row.prompt) for row in rows]
    result = evaluate(rows, scores, costs)
    result["router_name"] = r.name
    result["cost_source"] = _cost_source(rows, costs)
    if as_json:
        click.echo(json.dumps(result))
        return
    click.echo(
        f"{result['n']} prompts   strong quality {result['strong_quality']:.3f}   "
        f"weak quality {result['weak_quality']:.3f}   router {r.name}"
    )
    click.echo(
        f"{'':8s}{'APGR':>8s}{'CPT50':>8s}{'CPT80':>8s}{'strong@95%':>12s}{'saving@95%':>12s}"
    )
    for name in ("router", "random", "oracle"):
        s = result[name]
        saving = "n/a" if s["cost_saving_at_95"] is None else f"{s['cost_saving_at_95']:.1%}"
        click.echo(
            f"{name:8s}{s['apgr']:8.3f}{s['cpt50']:8.1%}{s['cpt80']:8.1%}"
            f"{s['strong_share_at_95']:12.1%}{saving:>12s}"
        )
    click.echo("PGR curve (strong share → PGR):")
    curve = result["router"]["curve"]
    click.echo("  " + "  ".join(f"{k}%:{curve[k]:.2f}" for k in range(0, 101, 10)))
    if costs is None:
        click.echo("(cost saving n/a: no costs_usd in the file and a model is not in the catalog)")


def _cost_source(rows: list[Row], costs: object) -> str | None:
    if costs is None:
        return None
    return "costs_usd" if rows[0].strong_cost is not None else "price_catalog"


def _adapt_report(
    rows: list[Row],
    base: Router,
    k: int,
    seed: int,
    costs: tuple[list[float], list[float]] | None,
    as_json: bool,
) -> None:
    from spendgate.routing.adaptive import evaluate_adaptation

    result = evaluate_adaptation(rows, base, k, seed, costs)
    result["router_name"] = base.name
    result["cost_source"] = _cost_source(rows, costs)
    if as_json:
        click.echo(json.dumps(result))
        return
    policies = ("adapted", "unadapted", "random", "oracle")

    def cells(figs: dict[str, Any]) -> str:
        out = []
        for name in policies:
            f = figs[name]
            saving = "n/a" if f["cost_saving_at_95"] is None else f"{f['cost_saving_at_95']:.0%}"
            out.append(f"{f['apgr']:6.3f} {f['cpt50']:5.0%} {saving:>4s}")
        return "  ".join(out)

    click.echo(
        f"router {base.name}, {k} labels per source (at most half of it), seed {seed}; "
        "each cell: APGR  CPT(50%)  cost saving at 95% of strong quality"
    )
    head = "  ".join(f"{p:>16s}" for p in policies)
    click.echo(f"{'source':30s}{'labels':>7s}{'scored':>7s}  {head}")
    for source, figs in result["sources"].items():
        click.echo(f"{source[:30]:30s}{figs['labels']:7d}{figs['scored']:7d}  {cells(figs)}")
    click.echo(f"{'macro average':30s}{'':14s}  {cells(result['macro'])}")
    if costs is None:
        click.echo("(cost saving n/a: no costs_usd in the file and a model is not in the catalog)")


@click.command("train-router")
@click.argument("data", type=click.Path(exists=True, dir_okay=False))
@click.option("--strong", required=True)
@click.option("--weak", required=True)
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False))
@choice_option(
    "--target",
    choices=["win", "weak_fails"],
    default="win",
    help="What the router learns to predict (see docs/routing.md).",
)
@click.option("--steps", type=int, default=200, show_default=True)
@click.option(
    "--calibration-share",
    type=float,
    default=0.2,
    show_default=True,
    help="Share of rows held out to choose thresholds and report figures.",
)
@json_option()
def train_router(
    data: str,
    strong: str,
    weak: str,
    output: str,
    target: str,
    steps: int,
    calibration_share: float,
    as_json: bool,
) -> None:
    """Train a router on your own logged quality data (the eval-data format)."""
    try:
        import numpy  # noqa: F401
    except ImportError:
        fail("training needs numpy: pip install numpy")
    from spendgate.routing.calibrate import calibrate
    from spendgate.routing.evaluate import evaluate, read_rows
    from spendgate.routing.train import TrainOptions
    from spendgate.routing.train import train_router as fit

    if not 0 < calibration_share < 1:
        fail("--calibration-share must be between 0 and 1")
    try:
        rows = read_rows(data, strong, weak)
    except ValueError as exc:
        fail(str(exc))
    cut = int(calibration_share * 1000)
    held = [r for r in rows if zlib.crc32(r.id.encode()) % 1000 < cut]
    train = [r for r in rows if zlib.crc32(r.id.encode()) % 1000 >= cut]
    if len(held) < 10 or len(train) < 10:
        fail(f"need more rows: {len(train)} to train, {len(held)} to calibrate")
    model = fit(
        train,
        strong,
        weak,
        TrainOptions(target=target, steps=steps),
        meta={"trained_on": [Path(data).name]},
    )
    scores = [model.score_text(r.prompt) for r in held]
    model.meta["thresholds"] = calibrate(held, scores)
    model.save(output)
    res = evaluate(held, scores)
    summary = {
        "output": output,
        "bytes": Path(output).stat().st_size,
        "train_rows": len(train),
        "calibration_rows": len(held),
        "thresholds": model.meta["thresholds"],
        "calibration": {k: res[k] for k in ("n", "router", "random", "oracle")},
    }
    summary["calibration"]["router"].pop("curve", None)
    if as_json:
        click.echo(json.dumps(summary))
    else:
        r = res["router"]
        click.echo(
            f"wrote {output} ({summary['bytes']} bytes): trained on {len(train)} rows; "
            f"on {len(held)} held-out rows APGR {r['apgr']:.3f}, CPT50 {r['cpt50']:.1%}, "
            f"CPT80 {r['cpt80']:.1%}"
        )
        click.echo(f"thresholds: {model.meta['thresholds']}  (use as routing.threshold)")


@click.command("bakeoff")
@click.option("--feature", required=True, help="The feature whose logged prompts are replayed.")
@click.option("--candidates", required=True, help="Comma-separated models to try.")
@click.option("--sample", "n", type=click.IntRange(min=1), default=100, show_default=True)
@config_option(help="YAML settings.")
@ledger_option()
@click.option(
    "--gateway",
    "gateway_url",
    default=None,
    help="Send through this running gateway (default: an in-process gateway from --config).",
)
@click.option("--api-key", envvar="SPENDGATE_API_KEY", default=None, help="Virtual key.")
@click.option("--requested", default=None, help="Reference model (default: the logged one).")
@choice_option(
    "--judge",
    "judge_kind",
    choices=["pairwise", "rubric", "exact", "json"],
    default="pairwise",
)
@click.option("--judge-model", default=None, help="LLM judge model (default: --requested).")
@click.option("--fields", default="", help="JSON fields the json judge compares (a.b,c).")
@click.option(
    "--target", type=click.FloatRange(0, 1, min_open=True), default=0.95, show_default=True
)
@click.option(
    "--confidence",
    type=click.FloatRange(0.5, 1, max_open=True),
    default=0.5,
    show_default=True,
    help="0.5: the estimate meets the target; 0.95: a one-sided non-inferiority test.",
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--concurrency", type=click.IntRange(min=1), default=4, show_default=True)
@click.option("-o", "--output", default=None, help="Config snippet file (default bakeoff-F.yaml).")
@json_option()
def bakeoff(
    feature: str,
    candidates: str,
    n: int,
    config_path: str | None,
    ledger_url: str | None,
    gateway_url: str | None,
    api_key: str | None,
    requested: str | None,
    judge_kind: str,
    judge_model: str | None,
    fields: str,
    target: float,
    confidence: float,
    seed: int,
    concurrency: int,
    output: str | None,
    as_json: bool,
) -> None:
    """Replay N logged prompts of a feature on candidate models through the gateway, grade
    them, and pick the cheapest model that keeps the quality target."""
    import asyncio

    from spendgate.config import ConfigError, Settings, load_settings
    from spendgate.routing.bakeoff import BakeoffError, run_from_cli

    try:
        settings = load_settings(config_path) if config_path else Settings()
    except ConfigError as exc:
        fail(str(exc))
    models = [m.strip() for m in candidates.split(",") if m.strip()]
    if not models:
        fail("--candidates names no model")
    try:
        result = asyncio.run(
            run_from_cli(
                settings,
                feature=feature,
                candidates=models,
                n=n,
                ledger_url=ledger_url,
                gateway_url=gateway_url,
                api_key=api_key,
                requested=requested,
                judge_kind=judge_kind,
                judge_model=judge_model,
                fields=[f for f in fields.split(",") if f],
                target=target,
                confidence=confidence,
                seed=seed,
                concurrency=concurrency,
            )
        )
    except (BakeoffError, ConfigError, ValueError) as exc:
        fail(str(exc))
    path = Path(output or f"bakeoff-{feature}.yaml")
    path.write_text(result["snippet"])
    result["snippet_file"] = str(path)
    if as_json:
        click.echo(json.dumps(result, default=str))
        return
    _print_bakeoff(result, feature, target, confidence)
    click.echo(f"wrote {path}")


def _print_bakeoff(result: dict[str, Any], feature: str, target: float, confidence: float) -> None:
    click.echo(
        f"feature {feature}: {result['sampled']} of {result['logged']} logged prompts replayed; "
        f"requested {result['requested']}; judge {result['judge']}; target "
        f"{target:.0%} of {result['requested']}'s quality (confidence {confidence:g})"
    )
    click.echo(
        f"{'model':28s}{'n':>5s}  {'quality [95% CI]':22s}{'vs req.':>8s}"
        f"{'cost/call':>13s}{'p50 ms':>9s}  qualifies"
    )
    for rep in result["models"]:
        click.echo(_model_line(rep, result["picked"]))
    spent = result["spent_usd"]
    click.echo(
        f"bake-off spend: ${float(spent['answers']):.6f} answers + ${float(spent['judge']):.6f} "
        "judge, billed to feature spendgate-eval"
    )


def _model_line(rep: dict[str, Any], picked: str | None) -> str:
    q = (
        "—"
        if rep["quality"] is None
        else (f"{rep['quality']:.3f} [{rep['low']:.3f}, {rep['high']:.3f}]")
    )
    ratio = "—" if rep["ratio"] is None else f"{rep['ratio']:.1%}"
    cost = "unpriced" if rep["cost_usd"] is None else f"${float(rep['cost_usd']):.6f}"
    lat = "—" if rep["latency_ms"] is None else f"{rep['latency_ms']:.0f}"
    mark = "yes" if rep["qualifies"] else "no"
    if rep["model"] == picked:
        mark += "  ← pick"
    return f"{rep['model'][:28]:28s}{rep['n']:5d}  {q:22s}{ratio:>8s}{cost:>13s}{lat:>9s}  {mark}"


commands = [train_router, bakeoff]
eval_commands = [router]
