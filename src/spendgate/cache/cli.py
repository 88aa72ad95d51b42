"""`spendgate eval cache PAIRS.jsonl[.gz]`: the semantic matcher's precision, recall and
latency on labelled pairs, for the shipped default configuration."""

from __future__ import annotations

import json
import sys

import click

__all__ = ["cache", "eval_commands"]


@click.command("cache")
@click.argument("pairs_path", metavar="PAIRS.jsonl[.gz]", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.option(
    "--mode",
    type=click.Choice(["pairs", "retrieval"]),
    default="pairs",
    show_default=True,
    help="pairs: score each pair; retrieval: index every q2, look up every q1.",
)
@click.option(
    "--split",
    type=click.Choice(["auto", "heldout", "all"]),
    default="auto",
    show_default=True,
    help="heldout: only the pairs the shipped verifier never saw in training (the QQP "
    "held-out rule); auto: heldout for QQP rows, all for any other file.",
)
@click.option("--limit", type=int, default=None, help="Evaluate at most this many pairs.")
def cache(pairs_path: str, as_json: bool, mode: str, split: str, limit: int | None) -> None:
    """Evaluate the semantic cache on {q1, q2, duplicate} pairs."""
    from spendgate.cache.evaluate import (
        evaluate_pairs,
        evaluate_retrieval,
        is_heldout,
        load_pairs,
    )

    try:
        pairs = list(load_pairs(pairs_path))
    except (OSError, ValueError) as exc:
        click.echo(f"spendgate: {exc}", err=True)
        sys.exit(2)
    if split == "auto":
        split = "heldout" if any(p.source == "qqp" for p in pairs[:100]) else "all"
    if split == "heldout":
        pairs = [p for p in pairs if is_heldout(p.q1, p.q2)]
    if limit is not None:
        pairs = pairs[:limit]
    if not pairs:
        click.echo("spendgate: no pairs to evaluate", err=True)
        sys.exit(2)
    result = evaluate_pairs(pairs) if mode == "pairs" else evaluate_retrieval(pairs)
    result = {"mode": mode, "split": split, **result}
    if as_json:
        click.echo(json.dumps(result))
        return
    d = result["default"]
    click.echo(
        f"{result['pairs']} pairs ({mode}, split {split}, embedder {result['embedder']})\n"
        f"  default: precision {d['precision']:.4f}  recall {d['recall']:.4f}  "
        f"hit rate {d['hit_rate']:.4f}  false hits/1k {d['false_hits_per_1k']}\n"
        f"  latency: p50 {result['latency_ms']['p50']} ms  p99 {result['latency_ms']['p99']} ms"
    )
    for row in result.get("curve", []):
        click.echo(
            f"  threshold {row['threshold']:.2f}: precision {row['precision']:.4f} "
            f"recall {row['recall']:.4f}"
        )


eval_commands = [cache]
