"""`spendgate eval cache PAIRS.jsonl[.gz]`: the semantic matcher's precision, recall and
latency on labelled pairs, for the shipped default configuration."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from spendgate.cli_support import choice_option, json_option

__all__ = ["cache", "eval_commands"]


@click.command("cache")
@click.argument("pairs_path", metavar="PAIRS.jsonl[.gz]", type=click.Path(dir_okay=False))
@json_option(help="Print the result as JSON.")
@choice_option(
    "--mode",
    choices=["pairs", "retrieval", "replay"],
    default="pairs",
    help="pairs: score each pair; retrieval: index every q2, look up every q1; replay: "
    "run a query stream through the cache with per-entry error-bounded thresholds.",
)
@click.option(
    "--delta",
    type=click.FloatRange(0.0, 1.0, min_open=True, max_open=True),
    default=0.02,
    show_default=True,
    help="replay: the wrong-answer rate the per-entry thresholds must stay within.",
)
@click.option(
    "--verify-rate",
    type=click.FloatRange(0.0, 1.0),
    default=0.05,
    show_default=True,
    help="replay: share of would-be hits sent upstream and compared instead.",
)
@click.option("--seed", type=int, default=0, show_default=True, help="replay: stream order.")
@choice_option(
    "--traffic",
    choices=["once", "zipf"],
    default="once",
    help="replay of QQP pairs: every question once, or Zipf-popular clusters re-asked in "
    "their several wordings (--queries draws).",
)
@click.option("--queries", type=int, default=0, help="replay --traffic zipf: how many draws.")
@choice_option(
    "--verifier",
    choices=["cross-encoder", "features"],
    default="cross-encoder",
    help="features: the older boosted-tree verifier (with --embedder minilm, its cascade).",
)
@choice_option(
    "--embedder", choices=["static", "minilm"], default="static", help="--verifier features only."
)
@choice_option(
    "--split",
    choices=["auto", "heldout", "all"],
    default="auto",
    help="heldout: only the pairs the shipped verifier never saw in training (the QQP "
    "held-out rule); auto: heldout for QQP rows, all for any other file.",
)
@click.option("--limit", type=int, default=None, help="Evaluate at most this many pairs.")
def cache(
    pairs_path: str,
    as_json: bool,
    mode: str,
    split: str,
    limit: int | None,
    delta: float,
    verify_rate: float,
    seed: int,
    traffic: str,
    queries: int,
    verifier: str,
    embedder: str,
) -> None:
    """Evaluate the semantic cache on {q1, q2, duplicate} pairs, or replay a stream of
    {query, answer} rows (or QQP pairs' questions) through it."""
    from spendgate.cache.evaluate import (
        evaluate_pairs,
        evaluate_replay,
        evaluate_retrieval,
        is_heldout,
        load_pairs,
        load_stream,
    )

    if mode == "replay":
        try:
            stream = load_stream(
                pairs_path, split=split, seed=seed, traffic=traffic, queries=queries
            )
        except (OSError, ValueError) as exc:
            click.echo(f"spendgate: {exc}", err=True)
            sys.exit(2)
        if limit is not None:
            stream = stream[:limit]
        if not stream:
            click.echo("spendgate: no queries to replay", err=True)
            sys.exit(2)
        out = evaluate_replay(
            stream, delta=delta, verify_rate=verify_rate, seed=seed, verifier_name=verifier
        )
        if as_json:
            click.echo(json.dumps({"mode": mode, **out}))
            return
        _print_replay(out)
        return
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
    if mode == "pairs":
        result = evaluate_pairs(pairs, verifier_name=verifier, embedder_name=embedder)
    else:
        result = evaluate_retrieval(pairs, verifier_name=verifier, embedder_name=embedder)
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


def _print_replay(out: dict[str, Any]) -> None:
    a = out["adaptive"]
    click.echo(
        f"{a['queries']} queries replayed ({a['exact_repeats_skipped']} "
        f"exact repeats left to the exact tier; verifier {out['verifier']}, delta {out['delta']}, "
        f"verify rate {out['verify_rate']})\n"
        f"  per-entry thresholds: hit rate {a['hit_rate']:.4f}  error rate {a['error_rate']:.4f} "
        f"({a['wrong_hits']} wrong of {a['hits'] - a['unjudged_hits']} judged hits)  "
        f"verified {a['verified']} "
        f"(disagreed {a['verified_disagreed']})  explored {a['explored']}  "
        f"upstream calls saved {a['savings_share']:.2%}"
    )
    for name, row in (
        ("shipped static default", out["static_shipped_default"]),
        (f"static threshold for delta {out['delta']}", out["static_at_delta"]),
        ("best static at the same error", out["best_static_at_same_error"]),
    ):
        if row is None:
            click.echo(f"  {name}: none reaches that error rate")
            continue
        click.echo(
            f"  {name} ({row['threshold']}): hit rate {row['hit_rate']:.4f}  "
            f"error rate {row['error_rate']:.4f} ({row['wrong_hits']} wrong of "
            f"{row['hits'] - row['unjudged_hits']} judged)"
        )
    click.echo(f"  hit-rate ratio vs the best static: {out['hit_rate_ratio_vs_best_static']}")


eval_commands = [cache]
