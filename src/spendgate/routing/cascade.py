"""Weak-first cascade: answer with the weak model, escalate to the strong one when the weak
answer's own signals say it may be wrong.

Why: a prompt-only router must guess before seeing any answer; the answer itself carries
evidence — a refusal, JSON that does not parse when JSON was asked for, two samples that
disagree (self-consistency), low token log-probabilities, a cut-off answer. A call routed
to the weak tier with the cascade on is answered by the weak model; if a signal fires, the
same request goes to the strong model and that answer is served. The weak attempt is never
free: an escalated weak answer gets its own ledger row (`route.rule = "cascade_weak"`, its
cost counted, baseline 0, so `savings.routing` is minus its cost), and so does the second
sample when self-consistency is checked.

Signals (`routing.cascade.signals`):
- `refusal`: the message's `refusal` field, `finish_reason: content_filter`, Anthropic's
  `stop_reason: refusal`, or an answer opening like a refusal ("I'm sorry, but I can't…").
- `json`: the request asked for JSON (`response_format` json_object / json_schema, or the
  feature's `expect_json`) and the answer does not parse, or lacks a required top-level key.
- `consistency`: a second weak sample at `sample_temperature`; escalate when the two agree
  less than `min_agreement` (equal after normalizing, equal JSON, else word-set Jaccard).
- `logprobs`: the mean token log-probability is below `min_logprob`; only where the
  provider returns log-probabilities (`request_logprobs: true` asks for them on OpenAI-format
  calls). Without them the signal is skipped, never guessed.
- `truncated`: the answer stopped at its token limit.
Streams are not cascaded (the answer cannot be inspected before the client sees it).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from spendgate.routing.judge import answer_text, normalize, parse_json_answer

__all__ = [
    "agreement",
    "escalation_reasons",
    "expects_json",
    "json_problem",
    "mean_logprob",
    "refused",
    "truncated",
]

_REFUSAL = re.compile(
    r"^\W*(?:i[' ]?a?m sorry,? but i (?:can(?:not|'t)|am unable|won'?t)"
    r"|i (?:can(?:not|'t)|am unable to|won'?t) (?:help|assist|comply|provide|do that|answer)"
    r"|sorry,? (?:but )?i (?:can(?:not|'t)|am unable))",
    re.I,
)


def _choice(body: dict[str, Any] | None) -> dict[str, Any]:
    if not isinstance(body, dict):
        return {}
    choices = body.get("choices")
    if isinstance(choices, list) and choices and isinstance(choices[0], dict):
        return choices[0]
    return {}


def refused(body: dict[str, Any] | None) -> bool:
    choice = _choice(body)
    msg = choice.get("message") or {}
    if isinstance(msg, dict) and msg.get("refusal"):
        return True
    if choice.get("finish_reason") == "content_filter":
        return True
    if isinstance(body, dict) and body.get("stop_reason") == "refusal":
        return True
    return bool(_REFUSAL.match(answer_text(body)[:200]))


def truncated(body: dict[str, Any] | None) -> bool:
    if isinstance(body, dict) and body.get("stop_reason") == "max_tokens":
        return True
    return _choice(body).get("finish_reason") == "length"


def expects_json(request: dict[str, Any]) -> bool:
    rf = request.get("response_format")
    return isinstance(rf, dict) and rf.get("type") in ("json_object", "json_schema")


def _required_keys(request: dict[str, Any]) -> list[str]:
    rf = request.get("response_format")
    if not isinstance(rf, dict) or rf.get("type") != "json_schema":
        return []
    schema = (rf.get("json_schema") or {}).get("schema") or {}
    required = schema.get("required") if isinstance(schema, dict) else None
    return [str(k) for k in required] if isinstance(required, list) else []


def json_problem(request: dict[str, Any], body: dict[str, Any] | None) -> str | None:
    """Why the answer is not the JSON asked for, or None when it is (tool calls pass)."""
    msg = _choice(body).get("message") or {}
    if isinstance(msg, dict) and msg.get("tool_calls"):
        return None
    try:
        value = parse_json_answer(answer_text(body))
    except ValueError:
        return "invalid_json"
    missing = [k for k in _required_keys(request) if not isinstance(value, dict) or k not in value]
    return f"missing_keys:{','.join(missing)}" if missing else None


def mean_logprob(body: dict[str, Any] | None) -> float | None:
    """Mean token log-probability of an OpenAI-format answer, when the provider sent them."""
    logprobs = _choice(body).get("logprobs")
    content = logprobs.get("content") if isinstance(logprobs, dict) else None
    if not isinstance(content, list):
        return None
    values = [
        float(t["logprob"])
        for t in content
        if isinstance(t, dict) and isinstance(t.get("logprob"), (int, float))
    ]
    return sum(values) / len(values) if values else None


_WORD = re.compile(r"\w+")


def agreement(a: str, b: str) -> float:
    """How much two answers agree: 1 when equal (normalized text, or equal JSON), else the
    Jaccard overlap of their word sets."""
    if normalize(a) == normalize(b):
        return 1.0
    try:
        if parse_json_answer(a) == parse_json_answer(b):
            return 1.0
    except ValueError:
        pass
    wa, wb = set(_WORD.findall(a.lower())), set(_WORD.findall(b.lower()))
    if not wa and not wb:
        return 1.0
    return len(wa & wb) / len(wa | wb)


def escalation_reasons(
    signals: Sequence[str],
    request: dict[str, Any],
    body: dict[str, Any] | None,
    second: dict[str, Any] | None = None,
    *,
    expect_json: bool = False,
    min_agreement: float = 0.5,
    min_logprob: float = -1.0,
) -> tuple[list[str], dict[str, Any]]:
    """(reasons to escalate, the measurements behind them) for one weak answer."""
    reasons: list[str] = []
    measured: dict[str, Any] = {}
    if "refusal" in signals and refused(body):
        reasons.append("refusal")
    if "truncated" in signals and truncated(body):
        reasons.append("truncated")
    if "json" in signals and (expect_json or expects_json(request)):
        problem = json_problem(request, body)
        measured["json"] = problem or "ok"
        if problem:
            reasons.append("json")
    if "logprobs" in signals:
        lp = mean_logprob(body)
        measured["mean_logprob"] = None if lp is None else round(lp, 4)
        if lp is not None and lp < min_logprob:
            reasons.append("logprobs")
    if "consistency" in signals and second is not None:
        agree = agreement(answer_text(body), answer_text(second))
        measured["agreement"] = round(agree, 4)
        if agree < min_agreement:
            reasons.append("consistency")
    return reasons, measured
