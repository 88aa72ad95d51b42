"""What the demo prints: the bill before and after, what each technique saved, and the
guard-rails that say whether the savings cost quality.

Every figure comes from the two ledgers (and the answers the demo client received); none is
computed from assumed rates.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from decimal import Decimal
from typing import Any

from spendgate.call import format_usd, from_nanos
from spendgate.demo.run import PassResult
from spendgate.demo.traffic import DemoRequest
from spendgate.ledger import UsageEvent

__all__ = ["STAGE_OF", "compare", "render"]

STAGE_OF = {
    "cache": "cache",
    "routing": "routing",
    "history": "trim",
    "compression": "trim",
    "prompt_cache": "prefix",
}
"""Ledger technique → the pipeline stage that earned it."""


def _routed(event: UsageEvent) -> bool:
    route = event.route or {}
    served, requested = route.get("served"), route.get("requested") or event.requested_model
    return (
        event.status < 400
        and route.get("mode") != "shadow"
        and bool(served)
        and served != requested
    )


def _cost(events: list[UsageEvent]) -> int:
    return sum(e.cost_nanos or 0 for e in events)


def _usd(nanos: int) -> str:
    return format(from_nanos(nanos), "f")


def _verify_semantic(work: list[DemoRequest], result: PassResult) -> dict[str, int]:
    """A semantic hit is right when the answer it served was given to the same underlying
    question (the traffic's ground truth): the upstream answers each wording differently, so
    an answer identifies the question it was generated for."""
    origin: dict[str, str] = {}
    for req, answer in zip(work, result.answers, strict=True):
        if answer.cache in ("miss", None) and answer.text:
            origin.setdefault(answer.text, req.root)
    hits = right = unknown = 0
    for req, answer in zip(work, result.answers, strict=True):
        if answer.cache != "semantic-hit":
            continue
        hits += 1
        source = origin.get(answer.text or "")
        if source is None:
            unknown += 1
        elif source == req.root:
            right += 1
    return {"hits": hits, "same_question": right, "other_question": hits - right - unknown,
            "unverifiable": unknown}  # fmt: skip


def compare(work: list[DemoRequest], before: PassResult, after: PassResult) -> dict[str, Any]:
    features = sorted({r.feature for r in work})
    b_by: dict[str, list[UsageEvent]] = defaultdict(list)
    a_by: dict[str, list[UsageEvent]] = defaultdict(list)
    for e in before.events:
        b_by[e.feature or "(none)"].append(e)
    for e in after.events:
        a_by[e.feature or "(none)"].append(e)
    rows = []
    for f in sorted(set(features) | set(a_by)):
        b, a = _cost(b_by[f]), _cost(a_by[f])
        rows.append(
            {
                "feature": f,
                "calls": sum(1 for r in work if r.feature == f),
                "baseline_usd": _usd(b),
                "optimized_usd": _usd(a),
                "saved_usd": _usd(b - a),
                "saved_share": round((b - a) / b, 4) if b else None,
                "routed_share": round(sum(map(_routed, a_by[f])) / len(a_by[f]), 4)
                if a_by[f]
                else 0,
            }
        )
    by_technique: Counter[str] = Counter()
    touched: Counter[str] = Counter()
    for e in after.events:
        for technique, nanos in (e.savings or {}).items():
            by_technique[technique] += nanos
            touched[technique] += 1
    by_stage: Counter[str] = Counter()
    for technique, nanos in by_technique.items():
        by_stage[STAGE_OF.get(technique, technique)] += nanos
    before_total, after_total = _cost(before.events), _cost(after.events)
    accounted = sum(e.baseline_nanos or 0 for e in after.events)
    outcomes = Counter(a.cache for a in after.answers if a.cache)
    capped = [e for e in after.events if ((e.extra or {}).get("decisions") or {}).get("trim", {})
              .get("output")]  # fmt: skip
    truncated = sum(
        1 for e in capped if (e.extra or {}).get("finish_reason") in ("length", "max_tokens")
    )
    return {
        "baseline_usd": _usd(before_total),
        "optimized_usd": _usd(after_total),
        "savings_usd": _usd(before_total - after_total),
        "savings_share": round((before_total - after_total) / before_total, 4)
        if before_total
        else None,
        "savings_by_technique": {
            STAGE_OF.get(t, t): _usd(by_stage[STAGE_OF.get(t, t)]) for t in sorted(by_technique)
        },
        "savings_by_ledger_technique": {t: _usd(n) for t, n in sorted(by_technique.items())},
        "calls_touched_by_technique": dict(sorted(touched.items())),
        "accounted_baseline_usd": _usd(accounted),
        "by_feature": rows,
        "guard_rails": {
            "routed_share": round(sum(map(_routed, after.events)) / len(after.events), 4)
            if after.events
            else 0,
            "cache_outcomes": dict(outcomes),
            "semantic_hits": _verify_semantic(work, after),
            "capped_calls": len(capped),
            "capped_truncated": truncated,
            "unknown_cost_calls": sum(1 for e in after.events if e.cost_nanos is None),
        },
    }


def _bar(share: float | None, width: int = 20) -> str:
    if not share or share <= 0:
        return ""
    return "█" * max(1, round(share * width))


def render(summary: dict[str, Any]) -> str:
    c = summary["comparison"]
    # The bundled sample was written for this project; only the shared arena data is real.
    kind = "sample" if str(summary["source"]).startswith("bundled") else "real"
    lines = [
        "",
        f"spendgate demo — {summary['calls']} calls of {summary['prompts']} {kind} prompts, "
        f"twice through the gateway",
        f"  traffic: {summary['source']}",
        "  shape: FAQ repeats 30 % word for word and 15 % retyped; 40 % of support chats are "
        "4–8 turns; ~1.3k-token system prompts on support and code",
        "",
        "  BEFORE: the calls as written    AFTER: the recommended policy "
        "(spendgate/data/demo_policy.yaml)",
        "",
        f"  {'feature':<16}{'calls':>7}{'before $':>12}{'after $':>12}{'saved':>9}  ",
    ]
    for row in c["by_feature"]:
        share = row["saved_share"]
        pct = f"{share:.0%}" if share is not None else "-"
        lines.append(
            f"  {row['feature']:<16}{row['calls']:>7}"
            f"{format_usd(Decimal(row['baseline_usd'])):>12}"
            f"{format_usd(Decimal(row['optimized_usd'])):>12}{pct:>9}  {_bar(share)}"
        )
    total_share = c["savings_share"]
    lines += [
        f"  {'TOTAL':<16}{summary['calls']:>7}{format_usd(Decimal(c['baseline_usd'])):>12}"
        f"{format_usd(Decimal(c['optimized_usd'])):>12}"
        f"{(f'{total_share:.0%}' if total_share is not None else '-'):>9}",
        "",
        "  saved by technique (the optimized ledger's per-call accounting):",
    ]
    touched = c["calls_touched_by_technique"]
    for technique, usd in c["savings_by_ledger_technique"].items():
        stage = STAGE_OF.get(technique, technique)
        lines.append(
            f"    {stage:<8}{technique:<14}${format_usd(Decimal(usd)):>12}  "
            f"on {touched.get(technique, 0)} calls"
        )
    g = c["guard_rails"]
    sem = g["semantic_hits"]
    lines += [
        f"    accounted baseline ${format_usd(Decimal(c['accounted_baseline_usd']))} vs "
        f"measured ${format_usd(Decimal(c['baseline_usd']))} (the first pass's real bill)",
        "",
        "  guard-rails:",
        f"    routed to the small model: {g['routed_share']:.1%} of calls "
        "(support chats stay on gpt-4o by rule)",
        f"    cache: {g['cache_outcomes'].get('hit', 0)} exact hits, {sem['hits']} semantic hits "
        f"({sem['same_question']} answered the same question, {sem['other_question']} another)",
        f"    output caps: {g['capped_calls']} calls capped, {g['capped_truncated']} truncated",
        f"    calls with unknown cost: {g['unknown_cost_calls']}",
    ]
    recs = summary.get("recommendations") or []
    if recs:
        lines += ["", "  what `spendgate recommend` proposes for this traffic (top 3):"]
        for rec in recs:
            lines.append(
                f"    {rec['technique']:<14}{rec['feature']:<16}"
                f"saves ~${rec['monthly_saving_usd']}/month"
            )
            for snippet_line in str(rec.get("how", "")).strip().splitlines()[:8]:
                lines.append(f"        {snippet_line}")
    lines += [
        "",
        f"  {summary['seconds']} s; ledgers: {summary['ledgers']}",
    ]
    return "\n".join(lines)
