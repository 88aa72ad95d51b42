"""Opt-in prompt logging (`ledger.log_prompts`), redacted before it is stored.

Why: a per-feature bake-off (`spendgate bakeoff`) replays a feature's real prompts on
candidate models; nothing else in the ledger keeps prompt text, and by default nothing
should (DESIGN.md: "Prompt text is not stored unless the operator turns it on"). When it is
on, the request's parts that decide the answer — messages, system prompt, tools and the
output settings — go into the event's `extra.prompt`, with every string passed through the
redaction patterns first. Internal calls (quality-sampling twins, judges, cascade samples)
are not logged: they repeat a logged prompt or are our own.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import orjson

from spendgate.call import Call

__all__ = ["BUILTIN_PATTERNS", "EVAL_FEATURE", "PromptLog", "compile_patterns", "is_internal"]

EVAL_FEATURE = "spendgate-eval"
"""The feature every evaluation call (bake-off replays, judges) is attributed to."""

BUILTIN_PATTERNS: dict[str, str] = {
    "email": r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}",
    "phone": r"(?<![\w.])\+?\d[\d ().-]{7,}\d(?![\w.])",
    "card": r"\b(?:\d[ -]?){12,18}\d\b",
    "ip": r"\b(?:\d{1,3}\.){3}\d{1,3}\b",
    "secret": (
        r"\b(?:sk|pk|rk)-[A-Za-z0-9_-]{16,}|\bAKIA[0-9A-Z]{16}\b|\bgh[pousr]_[A-Za-z0-9]{30,}"
        r"|\bxox[abpr]-[A-Za-z0-9-]{10,}|\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]+"
    ),
}
"""Named patterns for `ledger.redact`; anything else in that list is a regular expression."""

KEPT_FIELDS = (
    "messages",
    "system",
    "tools",
    "tool_choice",
    "response_format",
    "max_tokens",
    "max_completion_tokens",
    "temperature",
    "top_p",
    "stop",
    "stop_sequences",
)
"""The request fields a replay needs to ask the same question the same way."""

_INTERNAL_DECISIONS = ("route_sample_of", "internal")


_BUILTIN_ORDER = ("secret", "email", "card", "ip", "phone")
"""Most specific first: a phone pattern would also eat card numbers and addresses."""


def compile_patterns(names: Sequence[str]) -> list[tuple[str, re.Pattern[str]]]:
    """(label, compiled pattern) per entry, applied in that order: your own expressions
    first (labelled `pattern<i>` by position), then the built-in names from the most
    specific to the least. Raises ValueError naming a bad expression."""
    custom, builtin = [], []
    for i, name in enumerate(names):
        if name in BUILTIN_PATTERNS:
            builtin.append((name, re.compile(BUILTIN_PATTERNS[name])))
            continue
        try:
            custom.append((f"pattern{i}", re.compile(name)))
        except re.error as exc:
            raise ValueError(f"redact[{i}]: {name!r} is not a regular expression: {exc}") from None
    builtin.sort(key=lambda item: _BUILTIN_ORDER.index(item[0]))
    return custom + builtin


def is_internal(call: Call) -> bool:
    """A call the gateway made itself, or an evaluation call."""
    return call.tags.feature == EVAL_FEATURE or any(
        k in call.decisions for k in _INTERNAL_DECISIONS
    )


class PromptLog:
    """Decides which calls' prompts are kept and produces the redacted record."""

    def __init__(
        self,
        features: bool | Sequence[str],
        redact: Sequence[str] = (),
        max_chars: int = 32_000,
    ) -> None:
        self.all = features is True
        self.features = frozenset(features) if not isinstance(features, bool) else frozenset()
        self.patterns = compile_patterns(redact)
        self.max_chars = max_chars

    @classmethod
    def from_settings(cls, ledger: Any) -> PromptLog | None:
        """From `settings.ledger`; None when prompt logging is off."""
        wanted = ledger.log_prompts
        if wanted is False or wanted == []:
            return None
        return cls(wanted, ledger.redact, ledger.prompt_max_chars)

    def wants(self, call: Call) -> bool:
        if call.endpoint == "embeddings" or is_internal(call):
            return False
        return self.all or call.tags.feature in self.features

    def redact(self, text: str) -> str:
        for label, pattern in self.patterns:
            text = pattern.sub(f"[REDACTED:{label}]", text)
        return text

    def _walk(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.redact(value)
        if isinstance(value, list):
            return [self._walk(v) for v in value]
        if isinstance(value, dict):
            return {k: self._walk(v) for k, v in value.items()}
        return value

    def capture(self, call: Call) -> dict[str, Any] | None:
        """The record for `extra.prompt`, or None when this call is not logged. A prompt
        longer than `max_chars` (serialized) is recorded as skipped, never cut: a cut prompt
        would replay as a different question."""
        if not self.wants(call):
            return None
        body = {k: call.body[k] for k in KEPT_FIELDS if k in call.body}
        size = len(orjson.dumps(body))
        if size > self.max_chars:
            return {"api": call.api, "skipped": "too_long", "chars": size}
        return {"api": call.api, "body": self._walk(body)}
