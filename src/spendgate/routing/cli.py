"""`spendgate train-router` and `spendgate eval router` (numpy is imported only to train)."""

from __future__ import annotations

import json
import sys
import zlib
from pathlib import Path

import click

from spendgate.routing.evaluate import Row

__all__ = ["commands", "eval_commands", "router", "train_router"]


def _fail(message: str) -> None:
    click.echo(f"spendgate: {message}", err=True)
    sys.exit(2)


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
@click.option("--json", "as_json", is_flag=True)
def router(
    data: str, strong: str, weak: str, router_name: str, sources: tuple[str, ...], as_json: bool
) -> None:
    """Evaluate a router: PGR curve, APGR, CPT(50%), CPT(80%) vs random and oracle."""
    from spendgate.routing.evaluate import evaluate, read_rows
    from spendgate.routing.routers import get_router

    try:
        rows = read_rows(data, strong, weak, sources or None)
        r = get_router(router_name)
    except ValueError as exc:
        _fail(str(exc))
        return
    scores = [r.score_text(row.prompt) for row in rows]
    costs = _estimated_costs(rows, strong, weak)
    result = evaluate(rows, scores, costs)
    result["router_name"] = r.name
    result["cost_source"] = (
        None
        if costs is None
        else "costs_usd"
        if rows[0].strong_cost is not None
        else "price_catalog"
    )
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


@click.command("train-router")
@click.argument("data", type=click.Path(exists=True, dir_okay=False))
@click.option("--strong", required=True)
@click.option("--weak", required=True)
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False))
@click.option(
    "--target",
    type=click.Choice(["win", "weak_fails"]),
    default="win",
    show_default=True,
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
@click.option("--json", "as_json", is_flag=True)
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
        _fail("training needs numpy: pip install numpy")
    from spendgate.routing.calibrate import calibrate
    from spendgate.routing.evaluate import evaluate, read_rows
    from spendgate.routing.train import TrainOptions
    from spendgate.routing.train import train_router as fit

    if not 0 < calibration_share < 1:
        _fail("--calibration-share must be between 0 and 1")
    try:
        rows = read_rows(data, strong, weak)
    except ValueError as exc:
        _fail(str(exc))
        return
    cut = int(calibration_share * 1000)
    held = [r for r in rows if zlib.crc32(r.id.encode()) % 1000 < cut]
    train = [r for r in rows if zlib.crc32(r.id.encode()) % 1000 >= cut]
    if len(held) < 10 or len(train) < 10:
        _fail(f"need more rows: {len(train)} to train, {len(held)} to calibrate")
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


commands = [train_router]
eval_commands = [router]
