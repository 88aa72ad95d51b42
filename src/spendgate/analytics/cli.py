"""`spendgate simulate` and `spendgate recommend` (contributed to the main CLI)."""

from __future__ import annotations

import json
import sys
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import click
import yaml

__all__ = ["commands", "recommend_cmd", "simulate"]


def _decimal(value: str, name: str) -> Decimal:
    try:
        return Decimal(value)
    except InvalidOperation:
        raise click.BadParameter(f"{value!r} is not a number", param_hint=name) from None


@click.command()
@click.argument("traffic", required=False)
@click.option(
    "--policy",
    "policy_path",
    type=click.Path(exists=True, dir_okay=False),
    help="YAML: cache/route/trim on-off, cheap_model, prompt_excess, …",
)
@click.option("--volume", default=None, help="Scale the projection to this many calls/day.")
@click.option(
    "--output-tokens",
    type=int,
    default=250,
    show_default=True,
    help="Output length assumed for requests whose log has none.",
)
@click.option("--calls-per-day", default=None, help="Rates mode: calls per day.")
@click.option("--cost-per-call", default=None, help="Rates mode: USD per call today.")
@click.option("--cacheable", default="0.30", show_default=True)
@click.option("--simple", default="0.40", show_default=True)
@click.option(
    "--cheap-ratio",
    default="0.0333",
    show_default=True,
    help="Routed call cost ÷ frontier call cost (a model 30× cheaper = 0.0333).",
)
@click.option("--prompt-excess", default="0.20", show_default=True)
@click.option(
    "--input-share",
    default="0.50",
    show_default=True,
    help="Share of a call's cost that is input tokens.",
)
@click.option("--json", "as_json", is_flag=True)
def simulate(
    traffic: str | None,
    policy_path: str | None,
    volume: str | None,
    output_tokens: int,
    calls_per_day: str | None,
    cost_per_call: str | None,
    cacheable: str,
    simple: str,
    cheap_ratio: str,
    prompt_excess: str,
    input_share: str,
    as_json: bool,
) -> None:
    """Project monthly cost with and without each optimization.

    TRAFFIC is a ledger URL/path or a JSONL(.gz) of requests with tags. Without TRAFFIC,
    give --calls-per-day and --cost-per-call to project from rates alone.
    """
    from spendgate.analytics.simulate import Policy, project_rates, simulate_traffic
    from spendgate.analytics.traffic import load_traffic

    if traffic is None:
        if calls_per_day is None or cost_per_call is None:
            raise click.UsageError("give TRAFFIC, or --calls-per-day and --cost-per-call")
        projection = project_rates(
            calls_per_day=_decimal(calls_per_day, "--calls-per-day"),
            cost_per_call=_decimal(cost_per_call, "--cost-per-call"),
            cacheable=_decimal(cacheable, "--cacheable"),
            simple=_decimal(simple, "--simple"),
            cheap_cost_ratio=_decimal(cheap_ratio, "--cheap-ratio"),
            prompt_excess=_decimal(prompt_excess, "--prompt-excess"),
            input_cost_share=_decimal(input_share, "--input-share"),
        )
    else:
        raw = yaml.safe_load(Path(policy_path).read_text()) if policy_path else {}
        decimals = ("prompt_excess", "semantic_extra_hit_rate")
        fields: dict[str, Any] = {
            k: Decimal(str(v)) if k in decimals else v for k, v in (raw or {}).items()
        }
        try:
            policy = Policy(**fields)
        except TypeError as exc:
            raise click.BadParameter(str(exc), param_hint="--policy") from None
        try:
            records = load_traffic(traffic, default_output_tokens=output_tokens)
            projection = simulate_traffic(records, policy)
        except (ValueError, FileNotFoundError) as exc:
            click.echo(f"spendgate: {exc}", err=True)
            sys.exit(2)
    if volume is not None:
        projection = projection.scaled(_decimal(volume, "--volume"))
    if as_json:
        click.echo(json.dumps(projection.as_dict(), indent=2))
        return
    d = projection.as_dict()
    click.echo(f"calls/day: {d['calls_per_day']}")
    click.echo(f"baseline:  ${d['baseline_monthly_usd']}/month")
    for technique, value in d["alone_monthly_usd"].items():
        click.echo(f"  {technique:<6} alone: ${value}/month")
    click.echo(
        f"combined:  ${d['combined_monthly_usd']}/month  "
        f"(saves ${d['saved_monthly_usd']}/month, ${d['saved_yearly_usd']}/year)"
    )
    click.echo("how:")
    for step in d["steps"]:
        click.echo(f"  - {step}")


@click.command("recommend")
@click.option("--ledger", "ledger_url", default="sqlite:///spendgate.db", show_default=True)
@click.option("--json", "as_json", is_flag=True)
def recommend_cmd(ledger_url: str, as_json: bool) -> None:
    """Ranked optimizations for this ledger, with evidence and the config to turn each on."""
    from spendgate.analytics.recommend import recommend
    from spendgate.analytics.traffic import load_traffic

    try:
        recs = recommend(load_traffic(ledger_url))
    except (ValueError, FileNotFoundError) as exc:
        click.echo(f"spendgate: {exc}", err=True)
        sys.exit(2)
    if as_json:
        click.echo(json.dumps([r.as_dict() for r in recs], indent=2))
        return
    if not recs:
        click.echo("no recommendations: not enough traffic in the ledger")
    for i, r in enumerate(recs, 1):
        d = r.as_dict()
        click.echo(f"{i}. {d['technique']} for {d['feature']}: ~${d['monthly_saving_usd']}/month")
        click.echo(f"   evidence: {json.dumps(d['evidence'])}")
        for a in d["assumptions"]:
            click.echo(f"   assumes: {a}")
        click.echo("   " + d["how"].replace("\n", "\n   "))


commands = [simulate, recommend_cmd]
