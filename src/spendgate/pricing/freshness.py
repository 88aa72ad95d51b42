"""`spendgate prices check`: which prices may be out of date, and which names moved.

Prices change without notice: a provider cuts a rate, ends a discount, or points a `-latest`
name at a new model. Nothing at run time can know; this report tells an operator where to
look: price-file entries older than a limit, the age of the newest change genai-prices
records, aliases whose target genai-prices disagrees with or whose family has a newer model,
and how each served model resolves (source, alias) so a surprise is visible before the bill.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime
from typing import Any

import genai_prices
from genai_prices import types as gp

from spendgate.pricing.catalog import PriceCatalog
from spendgate.pricing.pricefile import AliasEntry, ModelEntry

__all__ = ["freshness_report", "render_freshness"]


def _dates(model: gp.ModelInfo) -> Iterable[date]:
    prices = model.prices if isinstance(model.prices, list) else []
    for conditional in prices:
        if isinstance(conditional.constraint, gp.StartDateConstraint):
            yield conditional.constraint.start_date
    for variant in model.price_variants or ():
        if isinstance(variant.constraint, gp.StartDateConstraint):
            yield variant.constraint.start_date


def _family(model_id: str) -> str:
    """`mistral-large-2512` → `mistral-large`: the name up to its first version-like part."""
    return re.split(r"-(?:\d|latest)", model_id, maxsplit=1)[0]


def _midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def freshness_report(
    catalog: PriceCatalog, *, today: date, max_age_days: int, models: Iterable[str] = ()
) -> dict[str, Any]:
    snapshot = catalog.snapshot
    # genai-prices also records changes announced for later dates; "newest" is the newest
    # already in force.
    newest = max(
        (d for p in snapshot.providers for m in p.models for d in _dates(m) if d <= today),
        default=None,
    )
    genai_age = (today - newest).days if newest else None
    entries = [
        _entry_row(label, entry, file.models, today, max_age_days)
        for label, file in catalog.files
        for entry in file.models
    ]
    aliases = [
        _alias_row(label, alias, snapshot, today, max_age_days)
        for label, file in catalog.files
        for alias in file.aliases
    ]
    served = [_served_row(catalog, name) for name in models]
    flagged = (
        sum(e["stale"] for e in entries)
        + sum(a["flagged"] for a in aliases)
        + sum(1 for s in served if s["resolved"] is None)
        + int(genai_age is not None and genai_age > max_age_days)
    )
    return {
        "today": today.isoformat(),
        "max_age_days": max_age_days,
        "genai_prices": {
            "version": genai_prices.__version__,
            "newest_price_change": newest.isoformat() if newest else None,
            "age_days": genai_age,
            "stale": genai_age is not None and genai_age > max_age_days,
        },
        "entries": entries,
        "aliases": aliases,
        "served_models": served,
        "flagged": flagged,
    }


def _entry_row(
    label: str, entry: ModelEntry, siblings: Sequence[ModelEntry], today: date, max_age_days: int
) -> dict[str, Any]:
    """One price-file entry: its age, and whether a later entry of the same model replaced
    it (then it is history: it prices old calls, and is never stale)."""
    superseded = entry.effective_from is not None and any(
        other.provider == entry.provider
        and other.id == entry.id
        and other.effective_from is not None
        and entry.effective_from < other.effective_from <= _midnight(today)
        for other in siblings
    )
    age = (today - (entry.checked or entry.as_of)).days
    return {
        "file": label,
        "model": f"{entry.provider}/{entry.id}",
        "effective_from": entry.effective_from.isoformat() if entry.effective_from else None,
        "as_of": entry.as_of.isoformat(),
        "checked": (entry.checked or entry.as_of).isoformat(),
        "age_days": age,
        "superseded": superseded,
        "stale": age > max_age_days and not superseded,
        "source": entry.source,
    }


def _alias_row(
    label: str, alias: AliasEntry, snapshot: Any, today: date, max_age_days: int
) -> dict[str, Any]:
    """One alias: flagged when old, when genai-prices points the name elsewhere, or when
    its family has other models (a newer one may be what the name means now)."""
    try:
        _, genai_model = snapshot.find_provider_model(alias.name, None, alias.provider, None)
        genai_target: str | None = genai_model.id
    except LookupError:
        genai_target = None
    provider = next((p for p in snapshot.providers if p.id == alias.provider), None)
    family = _family(alias.target)
    siblings = sorted(
        m.id
        for m in (provider.models if provider else [])
        if m.id.startswith(family) and m.id not in (alias.target, genai_target)
    )
    age = (today - (alias.checked or alias.as_of)).days
    return {
        "file": label,
        "name": alias.name,
        "target": f"{alias.provider}/{alias.target}",
        "genai_prices_target": genai_target,
        "same_family": siblings,
        "as_of": alias.as_of.isoformat(),
        "checked": (alias.checked or alias.as_of).isoformat(),
        "age_days": age,
        "stale": age > max_age_days,
        "flagged": bool(
            age > max_age_days
            or (genai_target is not None and genai_target != alias.target)
            or siblings
        ),
        "source": alias.source,
    }


def _served_row(catalog: PriceCatalog, name: str) -> dict[str, Any]:
    resolved = catalog.resolve(name)
    if resolved is None:
        return {"model": name, "resolved": None, "source": None, "alias": None}
    return {
        "model": name,
        "resolved": f"{resolved.provider_id}/{resolved.model_id}",
        "source": resolved.standards[0].sheet.version,
        "alias": resolved.alias.name if resolved.alias else None,
    }


def render_freshness(report: dict[str, Any]) -> str:
    g = report["genai_prices"]
    mark = "STALE" if g["stale"] else "ok"
    lines = [
        f"genai-prices {g['version']}: newest recorded price change {g['newest_price_change']} "
        f"({g['age_days']} days ago)  [{mark}]",
        "",
        f"price-file entries (stale after {report['max_age_days']} days):",
    ]
    for e in report["entries"]:
        when = f" from {e['effective_from'][:10]}" if e["effective_from"] else ""
        state = "STALE" if e["stale"] else ("past " if e["superseded"] else "ok   ")
        lines.append(
            f"  {state}  {e['model']:<34}{when:<16} published "
            f"{e['as_of']}, checked {e['checked']} ({e['age_days']} d ago)"
        )
    lines.append("")
    lines.append("aliases:")
    for a in report["aliases"]:
        notes = []
        if a["genai_prices_target"] and a["genai_prices_target"] != a["target"].split("/", 1)[1]:
            notes.append(f"genai-prices says {a['genai_prices_target']}")
        if a["same_family"]:
            notes.append(f"same family: {', '.join(a['same_family'])}")
        if a["stale"]:
            notes.append(f"checked {a['age_days']} days ago")
        flag = "CHECK" if a["flagged"] else "ok   "
        lines.append(
            f"  {flag}  {a['name']} → {a['target']} (as of {a['as_of']})"
            + (f"; {'; '.join(notes)}" if notes else "")
        )
    if report["served_models"]:
        lines.append("")
        lines.append("served models:")
        for s in report["served_models"]:
            if s["resolved"] is None:
                lines.append(f"  UNKNOWN  {s['model']}: no price (its calls cost null)")
                continue
            via = f" via alias {s['alias']}" if s["alias"] else ""
            lines.append(f"  ok       {s['model']} → {s['resolved']}{via}  ({s['source']})")
    lines.append("")
    lines.append(f"{report['flagged']} item(s) to check.")
    return "\n".join(lines)
