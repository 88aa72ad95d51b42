"""Finding the compressible spans of a request body (OpenAI or Anthropic) and rewriting them.

A span is compressed when it is
- marked: `<compress>…</compress>` (optionally `<compress ratio="0.2">`) anywhere in a text
  the rules allow (the tags are always removed before the request goes upstream, so a client
  can mark spans whether or not compression is on for its feature); or
- a whole message picked by a role rule (`roles: [tool]`: OpenAI `tool` messages and
  Anthropic `tool_result` blocks; `user`: user messages before the last one) that is at
  least `min_tokens` long.

The question a span is ranked against is the text of the nearest user message at or before
it (spans and tool results removed). That makes the compressed form of an old message the
same on every later call of a conversation, so provider prompt caching still sees a stable
prefix. The system prompt, and with Anthropic everything at or before the last
`cache_control` breakpoint, is never compressed unless configured.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from spendgate.providers.dialects import dialect_for
from spendgate.tokens import claude_version, count_text, family
from spendgate.tokens.encoders import CLAUDE_RATIO_V3, CLAUDE_RATIO_V47
from spendgate.trim.compress import compress_text
from spendgate.trim.config import CompressConfig

__all__ = [
    "MARK",
    "SpanReport",
    "compress_as_configured",
    "compress_body",
    "compression_counter",
    "strip_marks",
]

MARK = re.compile(
    r"<compress(?:\s+ratio\s*=\s*[\"']?(?P<ratio>[0-9.]+)[\"']?)?\s*>(?P<body>.*?)</compress>",
    re.DOTALL | re.IGNORECASE,
)


@dataclass
class SpanReport:
    spans: int = 0
    tokens_before: int = 0
    tokens_after: int = 0
    marks_stripped: int = 0
    details: list[dict[str, Any]] = field(default_factory=list)

    @property
    def saved_tokens(self) -> int:
        return max(0, self.tokens_before - self.tokens_after)


def compression_counter(model: str, exact: bool = False) -> tuple[Callable[[str], int], bool]:
    """(token counter, estimated?) for sizing spans of `model`. OpenAI-family tokenizers run
    at millions of tokens/s; the Claude reconstruction (ctok) at ~30 ms per 1k tokens here,
    three times the whole compression budget, so unless `exact` Claude spans are sized as
    o200k tokens × the measured Claude/o200k ratio (the tokens package's own fallback)."""
    if family(model) == "claude" and not exact:
        scale = CLAUDE_RATIO_V3 if claude_version(model) == "3.0" else CLAUDE_RATIO_V47

        def estimate(text: str) -> int:
            return round(count_text("gpt-4o", text) * scale)

        return estimate, True
    return (lambda text: count_text(model, text)), False


def strip_marks(text: str) -> str:
    return MARK.sub(lambda m: m.group("body"), text)


@dataclass
class _Where:
    role: str
    index: int
    system: bool = False
    tool: bool = False
    cached: bool = False
    last_user: bool = False


Count = Callable[[str], int]


@dataclass
class _Rewriter:
    """One body's compression settings, and the report of what it compressed."""

    ratio: float
    min_tokens: int
    roles: set[str]
    count: Count
    allow_system: bool
    allow_cached: bool
    report: SpanReport = field(default_factory=SpanReport)

    def _compress(self, text: str, question: str, ratio: float, where: _Where) -> str:
        res = compress_text(text, question or None, ratio, self.count)
        self.report.spans += 1
        self.report.tokens_before += res.tokens_before
        self.report.tokens_after += res.tokens_after
        self.report.details.append(
            {
                "at": where.index,
                "role": where.role,
                "before": res.tokens_before,
                "after": res.tokens_after,
            }
        )
        return res.text

    def text(self, text: str, where: _Where, question: str) -> str:
        allowed = (self.allow_system or not where.system) and (
            self.allow_cached or not where.cached
        )
        whole = (
            allowed
            and not where.system
            and (
                (where.tool and "tool" in self.roles)
                or (where.role in self.roles and where.role != "tool" and not where.last_user)
            )
        )
        has_mark = "<compress" in text.lower() and MARK.search(text) is not None
        if has_mark:
            self.report.marks_stripped += 1
        if whole:
            plain = strip_marks(text) if has_mark else text
            if self.count(plain) >= self.min_tokens:
                return self._compress(plain, question, self.ratio, where)
            return plain
        if not has_mark:
            return text
        if not allowed:
            return strip_marks(text)

        def one(m: re.Match[str]) -> str:
            ratio = self.ratio
            if m.group("ratio"):
                with contextlib.suppress(ValueError):
                    ratio = min(1.0, max(0.01, float(m.group("ratio"))))
            return self._compress(m.group("body"), question, ratio, where)

        return MARK.sub(one, text)


def _plain_question(content: Any) -> str:
    """The user's own words in a message: text parts, with marked spans removed."""
    if isinstance(content, str):
        return MARK.sub(" ", content).strip()
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, dict) and part.get("type") == "text":
                parts.append(MARK.sub(" ", str(part.get("text") or "")))
        return " ".join(parts).strip()
    return ""


def _rewrite_content(content: Any, rw: _Rewriter, where: _Where, question: str) -> Any:
    if isinstance(content, str):
        return rw.text(content, where, question)
    if not isinstance(content, list):
        return content
    out = []
    for part in content:
        if not isinstance(part, dict):
            out.append(part)
            continue
        kind = part.get("type")
        if kind == "text" and isinstance(part.get("text"), str):
            out.append({**part, "text": rw.text(part["text"], where, question)})
        elif kind == "tool_result":
            sub = _Where(where.role, where.index, tool=True, cached=where.cached)
            out.append(
                {**part, "content": _rewrite_content(part.get("content"), rw, sub, question)}
            )
        else:
            out.append(part)
    return out


def _last_breakpoint(body: dict[str, Any]) -> int:
    """Index of the last message carrying `cache_control` (−1: only the system has one or
    none does; −2: none at all)."""
    last = -2
    system = body.get("system")
    if isinstance(system, list) and any(
        isinstance(b, dict) and b.get("cache_control") for b in system
    ):
        last = -1
    for i, msg in enumerate(body.get("messages") or []):
        if not isinstance(msg, dict):
            continue
        content = msg.get("content")
        if isinstance(content, list) and any(
            isinstance(b, dict) and b.get("cache_control") for b in content
        ):
            last = i
    return last


def _is_anthropic_tool_results(msg: dict[str, Any]) -> bool:
    content = msg.get("content")
    return (
        isinstance(content, list)
        and bool(content)
        and all(isinstance(b, dict) and b.get("type") == "tool_result" for b in content)
    )


def compress_as_configured(
    body: dict[str, Any], api: str, cc: CompressConfig, count: Count
) -> tuple[dict[str, Any], SpanReport]:
    """`compress_body` with a feature's `trim.compress` settings: what the trim stage does
    to a live call, and what the what-if simulator replays."""
    return compress_body(body, api, ratio=cc.ratio, min_tokens=cc.min_tokens,
                         roles=list(cc.roles), count=count, system=cc.system,
                         cached_prefix=cc.cached_prefix)  # fmt: skip


def compress_body(
    body: dict[str, Any],
    api: str,
    *,
    ratio: float,
    min_tokens: int,
    roles: list[str],
    count: Count,
    system: bool = False,
    cached_prefix: bool = False,
) -> tuple[dict[str, Any], SpanReport]:
    """A copy of `body` with its spans compressed (and every `<compress>` mark removed)."""
    rw = _Rewriter(ratio, min_tokens, set(roles), count, system, cached_prefix)
    messages = body.get("messages")
    if not isinstance(messages, list):
        return body, rw.report
    dialect = dialect_for(api)
    breakpoint_at = _last_breakpoint(body) if dialect.client_cache_control else -2
    user_idx = [
        i
        for i, m in enumerate(messages)
        if isinstance(m, dict) and m.get("role") == "user" and not _is_anthropic_tool_results(m)
    ]
    last_user = user_idx[-1] if user_idx else -1
    new = dict(body)
    first_question = _plain_question(messages[user_idx[0]].get("content")) if user_idx else ""
    if not dialect.system_in_messages and body.get("system") is not None:
        where = _Where("system", -1, system=True, cached=breakpoint_at >= -1)
        new["system"] = _rewrite_content(body["system"], rw, where, first_question)
    question = ""
    out: list[Any] = []
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict):
            out.append(msg)
            continue
        role = str(msg.get("role") or "")
        if i in user_idx:
            question = _plain_question(msg.get("content"))
        where = _Where(
            role,
            i,
            system=role in ("system", "developer"),
            tool=role == "tool",
            cached=i <= breakpoint_at,
            last_user=i == last_user,
        )
        q = question or (first_question if role in ("system", "developer") else "")
        content = _rewrite_content(msg.get("content"), rw, where, q)
        out.append({**msg, "content": content} if "content" in msg else msg)
    new["messages"] = out
    return new, rw.report
