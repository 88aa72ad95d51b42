"""`spendgate eval compress DATA.jsonl[.gz] --ratio R [--json]`."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from spendgate.cli_support import choice_option, config_option, json_option, ledger_option

if TYPE_CHECKING:
    from spendgate.trim.sysprompt import FeatureSystemPrompt

__all__ = ["commands", "compress", "eval_commands"]


@click.command("compress")
@click.argument("data", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--ratio", type=float, default=1 / 3, show_default=True, help="Target token ratio.")
@click.option("--model", default="gpt-4o", show_default=True, help="Tokenizer to measure with.")
@click.option("--limit", type=int, default=None, help="Evaluate at most this many rows.")
@choice_option(
    "--split",
    choices=["all", "tune", "held-out"],
    default="all",
    help="Rows whose id hashes even (tune) or odd (held-out): the split the weights were "
    "tuned on, so figures can be reported on unseen rows.",
)
@click.option("--no-baselines", is_flag=True, help="Skip keep-first and question-overlap.")
@json_option(help="Print JSON (spendgate's figures first).")
def compress(
    data: Path,
    ratio: float,
    model: str,
    limit: int | None,
    split: str,
    no_baselines: bool,
    as_json: bool,
) -> None:
    """Measure the compressor: achieved token ratio, answer retention, ms per 1k tokens."""
    from spendgate.trim.evaluate import evaluate, in_split, load_rows

    if not 0 < ratio <= 1:
        raise click.BadParameter("must be in (0, 1]", param_hint="--ratio")
    try:
        rows = load_rows(data)
    except (ValueError, OSError) as exc:
        raise click.ClickException(str(exc)) from None
    rows = [r for r in rows if in_split(r, split)]
    if limit is not None:
        rows = rows[:limit]
    if not rows:
        raise click.ClickException(f"{data}: no rows to evaluate")
    results = list(evaluate(rows, ratio, model=model, baselines=not no_baselines))
    main, *rest = results
    if as_json:
        out = main.as_dict()
        out["baselines"] = {r.name: r.as_dict() for r in rest}
        click.echo(json.dumps(out))
        return
    click.echo(f"{data.name}: {main.n} rows, target ratio {ratio:.3f}, tokenizer {model}")
    click.echo(f"{'method':<18}{'achieved':>10}{'retention':>11}{'ms/1k tok':>11}")
    for r in results:
        click.echo(
            f"{r.name:<18}{r.achieved_ratio:>10.3f}{r.answer_retention:>11.3f}"
            f"{r.ms_per_1k_tokens:>11.2f}"
        )


@click.command("analyze-prompts")
@config_option()
@ledger_option()
@click.option("--days", type=float, default=30, show_default=True, help="Look-back window.")
@click.option(
    "--file",
    "prompt_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="A system prompt's text to lint (repeats, few-shot beyond 3, verbose fields).",
)
@click.option("--feature", default=None, help="Feature whose traffic prices the --file cuts.")
@click.option("--model", default="gpt-4o", show_default=True, help="Tokenizer for --file.")
@json_option()
def analyze_prompts(
    config_path: str | None,
    ledger_url: str | None,
    days: float,
    prompt_file: Path | None,
    feature: str | None,
    model: str,
    as_json: bool,
) -> None:
    """System prompts per feature: tokens, share of input spend, and what could be cut.

    Reads the system-prompt fingerprints (hash + tokens, never text) the trim stage records;
    projects each figure to 30 days from the look-back window."""
    from spendgate.cli_support import settings_for

    if days <= 0:
        raise click.BadParameter("must be positive", param_hint="--days")
    url = ledger_url or settings_for(config_path).storage.ledger
    scale = Decimal(30) / Decimal(str(days))
    rows = _prompt_rows(url, days)
    features = []
    for r in rows:
        d = r.as_dict()
        d["projected_30d_usd"] = _usd(Decimal(r.system_cost_nanos) * scale / 10**9)
        features.append(d)
    findings: list[dict[str, object]] = []
    if prompt_file is not None:
        row = next((r for r in rows if r.feature == feature), None)
        findings = _lint_findings(prompt_file, model, row, scale)
    if as_json:
        click.echo(json.dumps({"days": days, "features": features, "findings": findings}))
        return
    _print_prompts(features, findings)


def _usd(amount: Decimal) -> str:
    return format(amount.quantize(Decimal("0.000001")), "f")


def _prompt_rows(url: str, days: float) -> list[FeatureSystemPrompt]:
    """Per-feature system-prompt figures over the look-back window, input priced."""
    from spendgate.call import Usage, to_nanos
    from spendgate.ledger import UsageEvent, open_ledger
    from spendgate.pricing import PriceCatalog
    from spendgate.trim.sysprompt import summarize_events

    try:
        store = open_ledger(url, create=False, read_only=True)
    except (ValueError, OSError) as exc:
        raise click.ClickException(str(exc)) from None
    catalog = PriceCatalog.default()

    def input_nanos(e: UsageEvent) -> int | None:
        cost = catalog.cost(
            e.served_model or e.requested_model,
            Usage(
                input_tokens=e.input_tokens,
                cache_read_tokens=e.cache_read_tokens,
                cache_write_tokens=e.cache_write_tokens,
                cache_write_1h_tokens=e.cache_write_1h_tokens,
            ),
        )
        return None if cost is None else to_nanos(cost.total)

    since = datetime.now(UTC) - timedelta(days=days)
    try:
        return summarize_events(store.events(since=since), input_nanos)
    finally:
        store.close()


def _lint_findings(
    prompt_file: Path, model: str, row: FeatureSystemPrompt | None, scale: Decimal
) -> list[dict[str, object]]:
    """What could be cut from a system prompt, priced on the feature's traffic if known."""
    from spendgate.tokens import count_text
    from spendgate.trim.sysprompt import lint_prompt

    text = prompt_file.read_text(encoding="utf-8", errors="replace")
    per_token = (
        Decimal(row.input_cost_nanos) / row.input_tokens / 10**9
        if row is not None and row.input_tokens
        else None
    )
    findings: list[dict[str, object]] = []
    for f in lint_prompt(text, lambda t: count_text(model, t)):
        item: dict[str, object] = f.as_dict()
        if per_token is not None and row is not None:
            item["projected_30d_usd"] = _usd(per_token * f.tokens * row.calls * scale)
        findings.append(item)
    return findings


def _print_prompts(features: list[dict[str, Any]], findings: list[dict[str, object]]) -> None:
    if not features:
        click.echo("no calls with system-prompt fingerprints (is the trim stage on?)")
    else:
        click.echo(f"{'feature':<24}{'calls':>8}{'prompts':>8}{'avg tok':>9}{'share':>8}"
                   f"{'usd':>12}{'30d usd':>12}")  # fmt: skip
        for d in features:
            click.echo(
                f"{str(d['feature'])[:23]:<24}{d['calls']:>8}{d['distinct_system_prompts']:>8}"
                f"{d['avg_system_tokens']:>9}{d['system_share_of_input_tokens']:>8.1%}"
                f"{d['system_prompt_usd']:>12}{d['projected_30d_usd']:>12}"
            )
    for item in findings:
        extra = f", ~${item['projected_30d_usd']}/30d" if "projected_30d_usd" in item else ""
        click.echo(f"- {item['kind']}: {item['detail']} ({item['tokens']} tokens/call{extra})")


eval_commands = [compress]
commands: list[click.Command] = [analyze_prompts]
