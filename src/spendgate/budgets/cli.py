"""`spendgate budgets set | list | rm`: manage dynamic budgets and rate limits.

Rules go to the definition store the config names (the key store's SQLite file by default;
Redis when the budget store is Redis), where running gateways pick them up within
`budgets.reload_interval_s`. Rules written in the YAML are listed but read-only here.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import click
from pydantic import ValidationError

from spendgate.budgets.config import BudgetRule, BudgetsConfig, RateLimitRule, Rule
from spendgate.budgets.definitions import rule_to_json
from spendgate.budgets.manager import counter_prefix, ledger_spend, usd
from spendgate.budgets.periods import period_at
from spendgate.budgets.stage import open_rule_store
from spendgate.call import to_nanos
from spendgate.config import ConfigError, Settings, load_settings

__all__ = ["budgets", "commands"]


def _fail(message: str, code: int = 2) -> None:
    click.echo(f"spendgate: {message}", err=True)
    sys.exit(code)


def _load(config_path: str | None) -> tuple[Settings, BudgetsConfig]:
    try:
        if config_path:
            settings = load_settings(config_path)
        elif Path("spendgate.yaml").exists():
            settings = load_settings("spendgate.yaml")
        else:
            settings = Settings()
    except ConfigError as exc:
        _fail(str(exc))
        raise
    config = settings.budgets or BudgetsConfig()
    return settings, config


def _parse_scope(items: tuple[str, ...]) -> dict[str, str]:
    scope: dict[str, str] = {}
    for item in items:
        tag, sep, value = item.partition("=")
        if not sep:
            _fail(f"--scope takes TAG=VALUE (or TAG=* for each value), got {item!r}")
        scope[tag.strip()] = value.strip()
    return scope


@click.group()
def budgets() -> None:
    """Budgets (USD per day/week/month) and rate limits (requests/tokens per minute)."""


_config_option = click.option(
    "--config", "config_path", type=click.Path(dir_okay=False), help="YAML settings."
)


@budgets.command("set")
@click.argument("name")
@_config_option
@click.option(
    "--scope",
    "scope_items",
    multiple=True,
    metavar="TAG=VALUE",
    help="team, feature, use_case, tenant, user, key or model; VALUE * = each value.",
)
@click.option("--usd", "limit_usd", default=None, help="Budget in USD per period.")
@click.option(
    "--period", type=click.Choice(["day", "week", "month"]), default="month", show_default=True
)
@click.option("--rpm", type=int, default=None, help="Requests per minute.")
@click.option("--tpm", type=int, default=None, help="Tokens (input + output) per minute.")
@click.option("--soft", is_flag=True, help="Only alert, never refuse.")
def budgets_set(
    name: str,
    config_path: str | None,
    scope_items: tuple[str, ...],
    limit_usd: str | None,
    period: str,
    rpm: int | None,
    tpm: int | None,
    soft: bool,
) -> None:
    """Create or replace the dynamic rule NAME."""
    settings, config = _load(config_path)
    if (limit_usd is None) == (rpm is None and tpm is None):
        _fail("give either --usd (a budget) or --rpm/--tpm (a rate limit)")
    scope = _parse_scope(scope_items)
    mode = "soft" if soft else "hard"
    rule: Rule
    try:
        if limit_usd is not None:
            try:
                amount = Decimal(limit_usd.lstrip("$"))
            except InvalidOperation:
                _fail(f"--usd must be an amount like 25 or 0.50, got {limit_usd!r}")
                return
            rule = BudgetRule.model_validate(
                {"name": name, "scope": scope, "period": period, "limit_usd": amount, "mode": mode}
            )
        else:
            rule = RateLimitRule.model_validate(
                {
                    "name": name,
                    "scope": scope,
                    "requests_per_minute": rpm,
                    "tokens_per_minute": tpm,
                    "mode": mode,
                }
            )
    except ValidationError as exc:
        _fail(
            "; ".join(f"{'.'.join(map(str, e['loc'])) or name}: {e['msg']}" for e in exc.errors())
        )
        return
    if name in {r.name for r in config.rules()}:
        _fail(f"rule {name!r} is defined in the config file; change it there")
    store = open_rule_store(config, settings)
    try:
        store.put(rule)
    finally:
        store.close()
    click.echo(
        f"set {rule.kind} {name}: {_scope_desc(rule.scope)}, {rule.describe()} "
        f"(stored in {store.url})"
    )


@budgets.command("rm")
@click.argument("name")
@_config_option
def budgets_rm(name: str, config_path: str | None) -> None:
    """Remove the dynamic rule NAME."""
    settings, config = _load(config_path)
    if name in {r.name for r in config.rules()}:
        _fail(f"rule {name!r} is defined in the config file; remove it there")
    store = open_rule_store(config, settings)
    try:
        found = store.delete(name)
    finally:
        store.close()
    if not found:
        _fail(f"no dynamic rule named {name!r}", code=1)
    click.echo(f"removed {name}")


@budgets.command("list")
@_config_option
@click.option("--json", "as_json", is_flag=True)
def budgets_list(config_path: str | None, as_json: bool) -> None:
    """Every rule, where it comes from, and this period's spend (live counters with Redis,
    the ledger otherwise)."""
    settings, config = _load(config_path)
    store = open_rule_store(config, settings)
    try:
        dynamic = store.all()
    except Exception as exc:
        _fail(f"cannot read rules from {store.url}: {exc}")
        return
    finally:
        store.close()
    rules: list[tuple[Rule, str]] = [(r, "config") for r in config.rules()]
    rules += [(r, "dynamic") for r in dynamic if r.name not in {x.name for x, _ in rules}]
    rows = [_row(rule, source, settings, config) for rule, source in rules]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo("no budgets or rate limits")
        return
    click.echo(f"{'NAME':<20} {'KIND':<7} {'SCOPE':<28} {'LIMIT':<34} {'SOURCE':<8} THIS PERIOD")
    for row in rows:
        click.echo(
            f"{row['name']:<20} {row['kind']:<7} {row['scope_text']:<28} {row['limit']:<34} "
            f"{row['source']:<8} {row['usage_text']}"
        )


def _scope_desc(scope: dict[str, str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(scope.items())) or "all traffic"


def _row(rule: Rule, source: str, settings: Settings, config: BudgetsConfig) -> dict[str, Any]:
    row: dict[str, Any] = {
        **rule_to_json(rule),
        "source": source,
        "scope_text": _scope_desc(rule.scope),
        "limit": rule.describe(),
    }
    if not isinstance(rule, BudgetRule):
        row["usage_text"] = "-"
        return row
    period = period_at(rule.period, time.time())
    spent = _spent(rule, settings, config, period)
    row["period"] = period.id
    row["resets_at"] = period.reset_iso()
    row["usage"] = [{"scope": scope, "spent_usd": usd(n)} for scope, n in spent]
    limit = to_nanos(rule.limit_usd)
    top = max((n for _, n in spent), default=0)
    if "*" in rule.scope.values():
        row["usage_text"] = f"{len(spent)} scopes, highest ${usd(top)} ({top / limit:.0%})"
    else:
        row["usage_text"] = f"${usd(top)} ({top / limit:.0%})"
    return row


def _spent(
    rule: BudgetRule, settings: Settings, config: BudgetsConfig, period: Any
) -> list[tuple[dict[str, str], int]]:
    if config.uses_redis:
        from spendgate.budgets.redis_store import RedisStore

        async def scan() -> list[tuple[dict[str, str], int]]:
            store = RedisStore(config.store, config.key_prefix, config.redis_timeout_s)
            try:
                found = await store.scan(counter_prefix(rule))
            finally:
                await store.aclose()
            out = []
            for key, state in found.items():
                scope_text, _, pid = key[len(counter_prefix(rule)) :].rpartition(":")
                if pid == period.id:
                    out.append((_scope_from(scope_text), state.spent))
            return out

        try:
            return asyncio.run(scan())
        except Exception as exc:
            click.echo(f"spendgate: cannot read counters from {config.store}: {exc}", err=True)
            return []
    from spendgate.ledger import open_ledger

    try:
        ledger = open_ledger(settings.storage.ledger, create=False, read_only=True)
    except Exception:
        return []
    try:
        return [(scope, n) for scope, n in ledger_spend(rule, ledger, period).values()]
    finally:
        ledger.close()


def _scope_from(text: str) -> dict[str, str]:
    return dict(p.split("=", 1) for p in text.split("&")) if text != "all" else {}


commands = [budgets]
