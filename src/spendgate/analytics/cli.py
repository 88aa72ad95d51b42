"""`spendgate simulate` and `spendgate recommend` (contributed to the main CLI)."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click
import yaml

from spendgate.cli_support import choice_option, json_option

if TYPE_CHECKING:
    from spendgate.analytics.finetune import FineTune, FineTuneCase, Prices
    from spendgate.pricing import PriceCatalog

__all__ = ["analyze", "commands", "finetune_cmd", "recommend_cmd", "simulate"]

F = TypeVar("F", bound=Callable[..., Any])


def _decimal(value: str, name: str) -> Decimal:
    try:
        return Decimal(value)
    except InvalidOperation:
        raise click.BadParameter(f"{value!r} is not a number", param_hint=name) from None


_SECTIONS = {"cache": "cache_config", "routing": "routing_config", "trim": "trim_config"}


def _policy(raw: Any, factory: Any) -> Any:
    """A `Policy` from YAML: the simulator's own keys (cache/route/trim on-off, cheap_model,
    prompt_excess, …) and/or the gateway's `cache:`, `routing:`, `trim:` sections, validated
    by the same models as `spendgate.yaml` (so a gateway config file is a valid policy)."""
    from pydantic import ValidationError

    from spendgate.cache.config import CacheConfig
    from spendgate.routing.config import RoutingConfig
    from spendgate.trim.config import TrimConfig

    models: dict[str, Any] = {"cache": CacheConfig, "routing": RoutingConfig, "trim": TrimConfig}
    if not isinstance(raw, dict):
        raise click.BadParameter("the policy must be a mapping", param_hint="--policy")
    decimals = ("prompt_excess", "semantic_extra_hit_rate")
    fields: dict[str, Any] = {}
    for key, value in raw.items():
        if key in _SECTIONS and isinstance(value, dict):
            try:
                fields[_SECTIONS[key]] = models[key].model_validate(value)
            except ValidationError as exc:
                raise click.BadParameter(f"{key}: {exc}", param_hint="--policy") from None
            if key == "routing":
                fields.setdefault("route", bool(value.get("enabled", False)))
            elif key == "cache":
                fields.setdefault(
                    "cache",
                    fields[_SECTIONS[key]].enabled
                    or any(f.enabled for f in fields[_SECTIONS[key]].features.values()),
                )
            else:
                fields.setdefault("trim", fields[_SECTIONS[key]].active)
        elif key in decimals:
            fields[key] = _decimal(str(value), f"--policy {key}")
        elif key in (
            "prefix",
            "deployments",
            "server",
            "storage",
            "ledger",
            "tags",
            "keys",
            "budgets",
            "alerts",
            "features",
        ):
            continue  # the rest of a gateway config: not what the simulator projects
        else:
            fields[key] = value
    try:
        return factory(**fields)
    except TypeError as exc:
        raise click.BadParameter(str(exc), param_hint="--policy") from None


def _fraction(name: str, default: str, help: str | None = None) -> Callable[[F], F]:
    """A share or ratio of the simulation, kept as text (exact `Decimal` via `_decimal`),
    its default shown in `--help`."""
    return click.option(name, default=default, show_default=True, help=help)


@click.command()
@click.argument("traffic", required=False)
@click.option(
    "--policy",
    "policy_path",
    type=click.Path(exists=True, dir_okay=False),
    help="YAML: cache/route/trim on-off, cheap_model, prompt_excess, …, and/or the "
    "gateway's own cache:/routing:/trim: sections (a spendgate.yaml works as is).",
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
@_fraction("--cacheable", "0.30")
@_fraction("--simple", "0.40")
@_fraction(
    "--cheap-ratio",
    "0.0333",
    "Routed call cost ÷ frontier call cost (a model 30× cheaper = 0.0333).",
)
@_fraction("--prompt-excess", "0.20")
@_fraction("--input-share", "0.50", "Share of a call's cost that is input tokens.")
@json_option()
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
        policy = _policy(raw or {}, Policy)
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
    if d["by_feature"]:
        click.echo("by feature (monthly):")
        for feature, row in d["by_feature"].items():
            click.echo(
                f"  {feature:<24} baseline ${row['baseline']:>12}  combined ${row['combined']:>12}"
            )
    click.echo("how:")
    for step in d["steps"]:
        click.echo(f"  - {step}")
    click.echo("assumptions:")
    for key, value in d["assumptions"].items():
        click.echo(f"  - {key}: {value}")


@click.command("recommend")
@click.option("--ledger", "ledger_url", default="sqlite:///spendgate.db", show_default=True)
@json_option()
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


@click.group("analyze")
def analyze() -> None:
    """Analyses of logged traffic: fine-tune break-even, system prompts."""


@analyze.command("finetune")
@click.option("--feature", required=True, help="The feature whose traffic is priced.")
@click.option("--model", "tuned_model", required=True, help="The fine-tuned model (a label).")
@click.option("--price-in", default=None, help="Fine-tuned input price (see --per).")
@click.option("--price-out", default=None, help="Fine-tuned output price (default: --price-in).")
@choice_option(
    "--per",
    choices=["1k", "1m"],
    default="1m",
    help="Prices are USD per 1K or per 1M tokens.",
)
@click.option("--training-cost", required=True, help="One-off training cost, USD.")
@click.option("--hosting", default="0", show_default=True, help="Hosting fee, USD/month.")
@click.option("--months", type=int, default=12, show_default=True, help="Amortize training over.")
@click.option("--current-price-in", default=None, help="Current model's input price (--per).")
@click.option("--current-price-out", default=None, help="Current model's output price.")
@click.option("--calls-per-month", default=None, help="State the volume instead of a ledger.")
@click.option("--input-tokens", default=None, help="Average input tokens per call (stated).")
@click.option("--output-tokens", default=None, help="Average output tokens per call (stated).")
@click.option("--current-model", default=None, help="Label of the current model (stated mix).")
@click.option("--ledger", "ledger_url", default="sqlite:///spendgate.db", show_default=True)
@json_option()
def finetune_cmd(
    feature: str,
    tuned_model: str,
    price_in: str | None,
    price_out: str | None,
    per: str,
    training_cost: str,
    hosting: str,
    months: int,
    current_price_in: str | None,
    current_price_out: str | None,
    calls_per_month: str | None,
    input_tokens: str | None,
    output_tokens: str | None,
    current_model: str | None,
    ledger_url: str,
    as_json: bool,
) -> None:
    """When does a fine-tuned model pay for itself on FEATURE's traffic?

    Reads the feature's monthly volume and token mix from the ledger (or takes them from
    --calls-per-month/--input-tokens/--output-tokens), prices the calls on the current
    model (the catalog, or --current-price-in/out) and on the fine-tuned one, and prints
    the break-even monthly volume and the payback time of the training cost."""
    from spendgate.analytics.finetune import FineTune, Prices, catalog_prices
    from spendgate.pricing import PriceCatalog

    if months < 1:
        raise click.BadParameter("must be at least 1", param_hint="--months")
    make = Prices.per_1k if per == "1k" else Prices.per_1m
    catalog = PriceCatalog.default()

    def prices(p_in: str | None, p_out: str | None, name: str) -> Prices | None:
        if p_in is None:
            return None
        out = _decimal(p_out, f"{name}-out") if p_out is not None else None
        return make(_decimal(p_in, f"{name}-in"), out)

    tuned = prices(price_in, price_out, "--price") or catalog_prices(catalog, tuned_model)
    if tuned is None:
        raise click.UsageError(f"no catalog price for {tuned_model!r}: give --price-in")
    current = prices(current_price_in, current_price_out, "--current-price")
    offer = FineTune(
        model=tuned_model,
        prices=tuned,
        training_cost=_decimal(training_cost, "--training-cost"),
        hosting_per_month=_decimal(hosting, "--hosting"),
        amortize_months=months,
    )
    stated = (calls_per_month, input_tokens, output_tokens)
    if any(v is not None for v in stated):
        case = _stated_case(feature, stated, current, current_model, catalog, offer)
    else:
        case = _ledger_case(feature, ledger_url, current, catalog, offer)
    d = case.as_dict()
    if as_json:
        click.echo(json.dumps(d, indent=2))
        return
    verdict = "pays for itself" if d["pays"] else "does not pay at this volume"
    click.echo(f"{feature}: {tuned_model} instead of {d['current_model']} — {verdict}")
    for step in d["steps"]:
        click.echo(f"  - {step}")


def _stated_case(
    feature: str,
    stated: tuple[str | None, str | None, str | None],
    current: Prices | None,
    current_model: str | None,
    catalog: PriceCatalog,
    offer: FineTune,
) -> FineTuneCase:
    """The break-even of a traffic mix given on the command line."""
    from spendgate.analytics.finetune import break_even, catalog_prices

    calls, tokens_in, tokens_out = stated
    if calls is None or tokens_in is None or tokens_out is None:
        raise click.UsageError(
            "a stated mix needs --calls-per-month, --input-tokens and --output-tokens"
        )
    label = current_model or "current"
    if current is None:
        current = catalog_prices(catalog, label) if current_model else None
    if current is None:
        raise click.UsageError("a stated mix needs --current-price-in or --current-model")
    return break_even(
        calls_per_month=_decimal(calls, "--calls-per-month"),
        input_tokens=_decimal(tokens_in, "--input-tokens"),
        output_tokens=_decimal(tokens_out, "--output-tokens"),
        current=current,
        tuned=offer,
        feature=feature,
        current_model=label,
    )


def _ledger_case(
    feature: str,
    ledger_url: str,
    current: Prices | None,
    catalog: PriceCatalog,
    offer: FineTune,
) -> FineTuneCase:
    """The break-even of the feature's logged traffic."""
    from spendgate.analytics.finetune import for_feature
    from spendgate.analytics.traffic import load_traffic

    try:
        return for_feature(
            load_traffic(ledger_url), feature, offer, current=current, catalog=catalog
        )
    except (ValueError, FileNotFoundError) as exc:
        click.echo(f"spendgate: {exc}", err=True)
        sys.exit(2)


def _prompts_command() -> click.Command:
    """`spendgate analyze prompts`: the trim package's `analyze-prompts`, under `analyze`."""
    from spendgate.trim.cli import analyze_prompts

    return click.Command(
        "prompts",
        callback=analyze_prompts.callback,
        params=list(analyze_prompts.params),
        help=analyze_prompts.help,
        short_help=analyze_prompts.short_help,
    )


analyze.add_command(_prompts_command())

commands = [simulate, recommend_cmd, analyze]
