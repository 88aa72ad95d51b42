"""Rule routing: cheap, explainable decisions that run before the learned router.

A rule matches on tags (feature, use case), the requested model, prompt size, code, math,
tool use and conversation depth, and names a tier (`strong`/`weak`), `router`, or a model.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from spendgate.call import Call
from spendgate.routing.config import Rule, RuleWhen
from spendgate.routing.features import messages_text

__all__ = ["CallFacts", "facts_of", "match_rule"]

_CODE = re.compile(r"```|\bdef \w+\(|\bfunction\s*\w*\(|#include|\bclass \w+[:({]|=>|;\s*\n")
_MATH = re.compile(
    r"\d\s*[-+*/^=]\s*\d|\\frac|\\sqrt|\bsolve\b|\bequation\b|\bintegral\b|\bderivative\b|\bprove\b",
    re.I,
)


@dataclass(frozen=True, slots=True)
class CallFacts:
    tokens: int
    turns: int
    code: bool
    math: bool
    tools: bool


def facts_of(call: Call) -> CallFacts:
    body = call.body
    raw = body.get("messages") if "messages" in body else body.get("input")  # Responses: items
    msgs: list[Any] = raw if isinstance(raw, list) else []
    texts = messages_text(msgs, None)
    system = body.get("system") or body.get("instructions")
    if isinstance(system, str):
        texts.append(system)
    elif isinstance(system, list):
        texts += [b.get("text", "") for b in system if isinstance(b, dict)]
    joined = "\n".join(t for t in texts if isinstance(t, str))
    users = messages_text(msgs, "user")
    last = users[-1] if users else ""
    return CallFacts(
        tokens=len(joined) // 4,
        turns=len(users),
        code=bool(_CODE.search(last)),
        math=bool(_MATH.search(last)),
        tools=bool(body.get("tools")),
    )


def _in(value: str | None, allowed: str | list[str] | None) -> bool:
    if allowed is None:
        return True
    return value in ([allowed] if isinstance(allowed, str) else allowed)


def _holds(when: RuleWhen, call: Call, facts: CallFacts) -> bool:
    if not _in(call.tags.feature, when.feature) or not _in(call.tags.use_case, when.use_case):
        return False
    if not _in(call.requested_model, when.model):
        return False
    if when.min_tokens is not None and facts.tokens < when.min_tokens:
        return False
    if when.max_tokens is not None and facts.tokens > when.max_tokens:
        return False
    if when.min_turns is not None and facts.turns < when.min_turns:
        return False
    if when.max_turns is not None and facts.turns > when.max_turns:
        return False
    for flag, actual in (("code", facts.code), ("math", facts.math), ("tools", facts.tools)):
        wanted = getattr(when, flag)
        if wanted is not None and wanted != actual:
            return False
    return True


def match_rule(rules: Sequence[Rule], call: Call, facts: CallFacts) -> tuple[int, Rule] | None:
    """The first rule that holds for the call, with its index."""
    for i, rule in enumerate(rules):
        if _holds(rule.when, call, facts):
            return i, rule
    return None
