"""System-prompt analysis: what the system prompt costs per feature, and what could go.

System prompts ride along on every call and are the most overlooked cost driver. Without
storing prompt text (off by default), the trim stage records per call a fingerprint of the
system prompt — a short hash and its token count (`decisions.trim.system`) — which is
enough to report, per feature, the system-prompt tokens, their share of input tokens and
their spend. Given the text of a prompt (a file), `lint_prompt` finds what can be cut:
repeated or near-duplicate instructions, few-shot examples beyond the third, and long
prose field descriptions that a JSON schema would state shorter.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from spendgate.ledger import UsageEvent
from spendgate.providers.dialects import dialect_for

__all__ = [
    "FeatureSystemPrompt",
    "PromptFinding",
    "fingerprint",
    "lint_prompt",
    "summarize_events",
    "system_text",
]

_WORD = re.compile(r"\w+")
_SENT = re.compile(r"(?<=[.!?])\s+|\n+")
_EXAMPLE = re.compile(
    r"^\s*(?:#+\s*)?(?:example\s*\d*\s*[:.]|input\s*:|user\s*:|q\s*:|question\s*:)",
    re.IGNORECASE | re.MULTILINE,
)
_FIELD_LINE = re.compile(r"^\s*[-*]?\s*[`\"']?(\w+)[`\"']?\s*[:\-–]\s+(.{60,})$", re.MULTILINE)


def system_text(body: dict[str, Any], api: str) -> str:
    """The system prompt of a request as plain text ('' when it has none)."""
    return dialect_for(api).system_text(body)


def fingerprint(body: dict[str, Any], api: str, count: Callable[[str], int]) -> dict[str, Any]:
    """`{"hash", "tokens"}` of the system prompt (empty dict when there is none)."""
    text = system_text(body, api)
    if not text:
        return {}
    digest = hashlib.blake2b(text.encode("utf-8", "replace"), digest_size=8).hexdigest()
    return {"hash": digest, "tokens": count(text)}


@dataclass
class FeatureSystemPrompt:
    feature: str
    calls: int = 0
    calls_with_system: int = 0
    input_tokens: int = 0
    system_tokens: int = 0
    input_cost_nanos: int = 0
    """Cost of all input (uncached share estimated by token share, see `summarize_events`)."""
    distinct_prompts: set[str] = field(default_factory=set)

    @property
    def share(self) -> float:
        return self.system_tokens / self.input_tokens if self.input_tokens else 0.0

    @property
    def system_cost_nanos(self) -> int:
        """The input spend attributable to system-prompt tokens (by token share)."""
        return round(self.input_cost_nanos * self.share)

    def as_dict(self) -> dict[str, Any]:
        return {
            "feature": self.feature,
            "calls": self.calls,
            "calls_with_system_prompt": self.calls_with_system,
            "distinct_system_prompts": len(self.distinct_prompts),
            "avg_system_tokens": round(self.system_tokens / self.calls_with_system)
            if self.calls_with_system
            else 0,
            "system_share_of_input_tokens": round(self.share, 4),
            "system_prompt_usd": format(Decimal(self.system_cost_nanos) / 10**9, "f"),
        }


def summarize_events(
    events: Iterable[UsageEvent], input_nanos: Callable[[UsageEvent], int | None]
) -> list[FeatureSystemPrompt]:
    """Per feature system-prompt figures from ledger events that carry a trim fingerprint.
    `input_nanos(event)` gives the event's input-side cost (None when unknown)."""
    out: dict[str, FeatureSystemPrompt] = {}
    for e in events:
        if e.status != 200 or e.endpoint == "embeddings":
            continue
        fp = ((e.extra or {}).get("decisions") or {}).get("trim", {}).get("system")
        if fp is None:
            continue  # calls the trim stage did not see
        row = out.setdefault(e.feature or "(none)", FeatureSystemPrompt(e.feature or "(none)"))
        row.calls += 1
        row.input_tokens += e.input_tokens
        cost = input_nanos(e)
        row.input_cost_nanos += cost or 0
        if fp:
            row.calls_with_system += 1
            row.system_tokens += int(fp.get("tokens") or 0)
            row.distinct_prompts.add(str(fp.get("hash")))
    return sorted(out.values(), key=lambda r: -r.system_cost_nanos)


@dataclass
class PromptFinding:
    kind: str
    detail: str
    tokens: int
    """Tokens the suggestion would remove from every call."""

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "detail": self.detail, "tokens": self.tokens}


def _shingles(text: str) -> set[str]:
    words = [w.lower() for w in _WORD.findall(text)]
    return {" ".join(words[i : i + 2]) for i in range(max(1, len(words) - 1))}


def lint_prompt(text: str, count: Callable[[str], int], near: float = 0.8) -> list[PromptFinding]:
    """What could be cut from a system prompt, with the tokens each cut saves per call."""
    findings: list[PromptFinding] = []
    sentences = [s.strip() for s in _SENT.split(text) if len(s.strip().split()) >= 4]
    seen: list[tuple[str, set[str]]] = []
    for s in sentences:
        sh = _shingles(s)
        for prev, prev_sh in seen:
            jac = len(sh & prev_sh) / len(sh | prev_sh) if sh | prev_sh else 0.0
            if jac >= near:
                kind = "repeated_instruction" if s == prev else "near_duplicate_instruction"
                findings.append(PromptFinding(kind, f"{s[:80]!r} repeats {prev[:80]!r}", count(s)))
                break
        else:
            seen.append((s, sh))
    starts = [m.start() for m in _EXAMPLE.finditer(text)]
    if len(starts) > 3:
        extra = text[starts[3] : _example_end(text, starts)]
        findings.append(
            PromptFinding(
                "few_shot_beyond_3",
                f"{len(starts)} examples; 2–3 usually carry the format",
                count(extra),
            )
        )
    fields = _FIELD_LINE.findall(text)
    if len(fields) >= 3:
        prose = "\n".join(f"{name}: {desc}" for name, desc in fields)
        schema_like = ", ".join(f'"{name}": "…"' for name, _ in fields)
        saved = max(0, count(prose) - count("{" + schema_like + "}") * 2)
        if saved:
            findings.append(
                PromptFinding(
                    "verbose_field_descriptions",
                    f"{len(fields)} fields described in prose; a JSON schema says it shorter",
                    saved,
                )
            )
    return findings


def _example_end(text: str, starts: list[int]) -> int:
    """End of the last example: the next blank-line paragraph that is not part of it."""
    last = starts[-1]
    gap = text.find("\n\n", last)
    return len(text) if gap < 0 else gap
