"""`spendgate …`: a thin shell over the library; every command's work lives in a module."""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import click

from spendgate.cli_support import (
    config_option,
    fail,
    json_option,
    ledger_option,
    settings_for,
    window_options,
)
from spendgate.config import ConfigError, load_settings, simulated_settings
from spendgate.keys import KeyStore

__all__ = ["main"]


@click.group()
@click.version_option(package_name="spendgate")
@click.option("-v", "--verbose", is_flag=True, help="Log at INFO level.")
def main(verbose: bool) -> None:
    """spendgate: LLM spend made visible and smaller."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


@main.command()
@config_option(help="YAML settings.")
@click.option("--host", default=None, help="Bind address (default from config: 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Port (default from config: 8787).")
@click.option(
    "--simulated",
    is_flag=True,
    help="Serve a realistic model catalog from the built-in simulated upstream (no keys).",
)
@click.option(
    "--latency",
    type=click.Choice(["none", "realistic"]),
    default="realistic",
    help="Simulated upstream latency model (with --simulated).",
)
def serve(
    config_path: str | None, host: str | None, port: int | None, simulated: bool, latency: str
) -> None:
    """Run the gateway (OpenAI- and Anthropic-compatible) on HTTP."""
    from spendgate.serve import ServeError, run_server

    try:
        if simulated:
            from spendgate.simulated import SimulatedUpstream

            if config_path:
                base = load_settings(config_path).model_dump()
            else:
                # No config: keep the ledger and keys out of the current directory.
                state = state_dir() / "simulated"
                state.mkdir(parents=True, exist_ok=True)
                base = {"storage": {"ledger": f"sqlite:///{state / 'ledger.db'}",
                                    "keys": f"sqlite:///{state / 'keys.db'}"}}  # fmt: skip
                click.echo(f"state (ledger, keys): {state}", err=True)
            sim = SimulatedUpstream(latency=latency)
            sim.start()
            base.pop("deployments", None)
            settings = simulated_settings(sim.url, **base)
            click.echo(f"simulated upstream on {sim.url} (latency: {latency})", err=True)
        elif config_path:
            settings = load_settings(config_path)
        else:
            fail("give --config spendgate.yaml, or --simulated to try it with no keys")
        run_server(settings, host=host, port=port)
    except (ConfigError, ServeError) as exc:
        fail(str(exc))


@main.command()
@click.option("--serve", "keep_serving", is_flag=True, help="Keep the gateway up afterwards.")
@json_option(help="Print the summary as JSON.")
@click.option("--limit", type=int, default=None, help="Replay at most this many prompts.")
@click.option("--concurrency", type=int, default=16, show_default=True)
@click.option("--keep", is_flag=True, help="Keep the two ledgers (a temp dir) afterwards.")
def demo(
    keep_serving: bool, as_json: bool, limit: int | None, concurrency: int, keep: bool
) -> None:
    """Replay real prompts through the gateway twice, as written and with the recommended
    policy, and show what each technique saved."""
    from spendgate.demo import run_demo

    run_demo(
        keep_serving=keep_serving,
        as_json=as_json,
        limit=limit,
        concurrency=concurrency,
        keep=keep,
    )


@main.command()
@config_option()
@ledger_option()
@click.option("--by", default="feature", show_default=True, help="Comma-separated dimensions.")
@window_options
@json_option()
@click.option("--csv", "as_csv", is_flag=True)
@click.option("--savings", is_flag=True, help="Savings by technique instead of spend.")
def report(
    config_path: str | None,
    ledger_url: str | None,
    by: str,
    since: str | None,
    until: str | None,
    as_json: bool,
    as_csv: bool,
    savings: bool,
) -> None:
    """Spend by feature / use_case / team / tenant / user / model / day."""
    from spendgate.ledger import report_command

    settings = settings_for(config_path)
    url = ledger_url or settings.storage.ledger
    if savings:
        _savings_report(url, by, since, until, as_json)
        return
    fmt = "json" if as_json else "csv" if as_csv else "table"
    try:
        click.echo(report_command(url, by=by, since=since, until=until, fmt=fmt))
    except ValueError as exc:
        fail(str(exc))


def _savings_report(url: str, by: str, since: str | None, until: str | None, as_json: bool) -> None:
    from spendgate.analytics.savings import savings_by_technique
    from spendgate.ledger import open_ledger, parse_when

    dims = [d.strip() for d in by.split(",") if d.strip()]
    try:
        store = open_ledger(url, create=False, read_only=True)
        rows = savings_by_technique(
            store,
            dims,
            since=parse_when(since) if since else None,
            until=parse_when(until, end=True) if until else None,
        )
        store.close()
    except (ValueError, FileNotFoundError) as exc:
        fail(str(exc))
        return
    data = [r.as_dict() for r in rows]
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    for row in data:
        label = ", ".join(f"{d}={row[d]}" for d in dims)
        click.echo(
            f"{label}: {row['calls']} calls, baseline ${row['baseline_usd']}, "
            f"cost ${row['cost_usd']}, saved ${row['saved_usd']}"
        )
        for technique, usd in row["saved_by_technique_usd"].items():
            share = row["touched_share"].get(technique, 0)
            click.echo(f"    {technique:<13} ${usd}  ({share:.1%} of calls)")
        for technique, usd in row["shadow_would_have_saved_usd"].items():
            click.echo(f"    {technique:<13} would have saved ${usd} (shadow)")


@main.command()
@click.argument("model")
@click.option("--usage", "usage_json", required=True, help="Provider-native usage JSON.")
@click.option("--provider", default=None, help="openai, anthropic, … (guessed when absent).")
@click.option(
    "--service-tier",
    "service_tier",
    default=None,
    help="default, flex, priority or batch (else the tier the usage JSON names).",
)
@config_option(help="Use this config's pricing.overrides file too.")
@json_option()
def price(
    model: str,
    usage_json: str,
    provider: str | None,
    service_tier: str | None,
    config_path: str | None,
    as_json: bool,
) -> None:
    """Price one provider-native usage block and show the breakdown."""
    from spendgate.pricing import price_command

    try:
        catalog = settings_for(config_path).price_catalog() if config_path else None
        click.echo(
            price_command(
                model,
                usage_json,
                provider=provider,
                as_json=as_json,
                service_tier=service_tier,
                catalog=catalog,
            )
        )
    except ValueError as exc:
        fail(str(exc))


@main.group()
def prices() -> None:
    """Price data: freshness of the sources and the names that moved."""


@prices.command("check")
@config_option(help="Also check the models this config serves and its pricing.overrides.")
@click.option("--max-age-days", type=int, default=90, show_default=True)
@click.option("--strict", is_flag=True, help="Exit 1 when anything is flagged (for CI).")
@json_option()
def prices_check(config_path: str | None, max_age_days: int, strict: bool, as_json: bool) -> None:
    """List stale price entries, moved aliases and unpriced served models."""
    from datetime import UTC, datetime

    from spendgate.pricing.freshness import freshness_report, render_freshness

    settings = settings_for(config_path)
    try:
        catalog = settings.price_catalog()
    except ConfigError as exc:
        fail(str(exc))
    models = [m if isinstance(m, str) else m.name for d in settings.deployments for m in d.models]
    report = freshness_report(
        catalog, today=datetime.now(UTC).date(), max_age_days=max_age_days, models=models
    )
    click.echo(json.dumps(report, indent=2) if as_json else render_freshness(report))
    if strict and report["flagged"]:
        sys.exit(1)


@main.group()
def keys() -> None:
    """Virtual keys: create, list, revoke."""


def _key_store(config_path: str | None) -> KeyStore:

    return KeyStore(settings_for(config_path).storage.keys)


@keys.command("create")
@config_option()
@click.option("--team", default=None)
@click.option("--name", default=None)
@click.option("--feature", default=None)
@click.option("--use-case", "use_case", default=None)
@click.option("--tenant", default=None, help="Fix every call of this key to this tenant.")
@click.option(
    "--may-set-tenant",
    is_flag=True,
    help="Let calls name their tenant (x-spendgate-tenant): for a trusted backend only.",
)
@click.option("--user", default=None)
def keys_create(
    config_path: str | None,
    team: str | None,
    name: str | None,
    feature: str | None,
    use_case: str | None,
    tenant: str | None,
    may_set_tenant: bool,
    user: str | None,
) -> None:
    """Create a key. It is shown once; only its hash is stored.

    A tenant scopes cached answers and budgets, so a key may name one only if it is bound to
    it (--tenant) or trusted to serve many (--may-set-tenant); otherwise a request that names
    a tenant is refused with 403."""
    store = _key_store(config_path)
    try:
        key, record = store.create(
            name=name,
            team=team,
            feature=feature,
            use_case=use_case,
            tenant=tenant,
            user=user,
            may_set_tenant=may_set_tenant,
        )
    except ValueError as exc:
        fail(str(exc))
    click.echo(key)
    tenancy = (
        f"tenant {record.tenant}"
        if record.tenant
        else ("may set tenant" if record.may_set_tenant else "no tenant")
    )
    click.echo(
        f"id {record.id}  team {record.team or '-'}  {tenancy}  "
        "(store it now: it cannot be shown again)",
        err=True,
    )


@keys.command("list")
@config_option()
@json_option()
def keys_list(config_path: str | None, as_json: bool) -> None:
    records = _key_store(config_path).list()
    if as_json:
        click.echo(json.dumps([{k: getattr(r, k) for k in r.__slots__} for r in records]))
        return
    for r in records:
        tenancy = r.tenant or ("(may set)" if r.may_set_tenant else "-")
        click.echo(
            f"{r.id}\t{r.name}\tteam={r.team or '-'}\tfeature={r.feature or '-'}\ttenant={tenancy}"
        )


@keys.command("revoke")
@click.argument("key_id")
@config_option()
def keys_revoke(key_id: str, config_path: str | None) -> None:
    if not _key_store(config_path).revoke(key_id):
        fail(f"no active key with id {key_id}")
    click.echo(f"revoked {key_id}")


@keys.command("hash")
@click.argument("key")
def keys_hash(key: str) -> None:
    """Print a key's hash, for declaring it in YAML under `keys:`."""
    from spendgate.keys import hash_key

    click.echo(hash_key(key))


@main.command("simulate-upstream")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=8900, show_default=True)
@click.option("--latency", type=click.Choice(["none", "realistic"]), default="realistic")
@click.option("--seed", type=int, default=0)
def simulate_upstream(host: str, port: int, latency: str, seed: int) -> None:
    """Run the simulated OpenAI + Anthropic upstream on its own."""
    from spendgate.simulated import serve as serve_sim

    serve_sim(host=host, port=port, latency=latency, seed=seed)


@main.group("eval")
def eval_group() -> None:
    """Evaluate a capability on labelled data (cache, router, compress)."""


def _register_contributed() -> None:
    """Each capability package contributes its commands. Their cli modules import heavy
    libraries inside the commands, so `spendgate --help` stays fast."""
    from spendgate.analytics import cli as analytics_cli
    from spendgate.budgets import cli as budgets_cli
    from spendgate.cache import cli as cache_cli
    from spendgate.cache import prefix_advisor
    from spendgate.ledger import cli as ledger_cli
    from spendgate.routing import cli as routing_cli
    from spendgate.trim import cli as trim_cli

    contributed: tuple[tuple[Sequence[click.Command], click.Group], ...] = (
        (budgets_cli.commands, main),
        (ledger_cli.commands, main),
        (cache_cli.eval_commands, eval_group),
        (prefix_advisor.commands, main),
        (routing_cli.commands, main),
        (routing_cli.eval_commands, eval_group),
        (trim_cli.eval_commands, eval_group),
        (trim_cli.commands, main),
        (analytics_cli.commands, main),
    )
    for commands, group in contributed:
        for command in commands:
            group.add_command(command)


def state_dir() -> Path:
    """Where spendgate keeps state it creates on its own: `$SPENDGATE_STATE_DIR`, else
    `$XDG_STATE_HOME/spendgate` (default `~/.local/state/spendgate`)."""
    explicit = os.environ.get("SPENDGATE_STATE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "spendgate"


_register_contributed()

if __name__ == "__main__":  # pragma: no cover
    main()
