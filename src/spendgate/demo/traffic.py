"""Demo traffic: real user prompts shaped like a company's LLM features.

The prompts are Chatbot Arena's (`../shared/data/traffic/`, CC BY 4.0, lm-sys/FastChat) or,
without that folder, the small sample bundled in `spendgate/data/`. Each prompt is assigned,
deterministically from its id, to one of five features with its team, use case, model, wire
format and system prompt, a tenant (a few big customers, a long tail) and a user. On top of
that, the traffic has the shapes that make a bill bigger than it needs to be, at stated rates:

- `faq-answers`: 30 % of its calls repeat a popular question word for word and 15 % retype
  one (case, punctuation, a filler word), as customers do;
- `support-chat`: 40 % of its conversations are multi-turn (4–8 user turns, each a call with
  the whole history, as chat apps send it) under a ~1,300-token handbook;
- `code-assistant`: a ~1,200-token engineering guide on every call, on Claude;
- `ticket-triage`: a classification on a frontier model; `doc-summarizer`: summaries.

Every request also carries its ground truth (`root`): which underlying question it asks, so
the demo can check that a semantic cache hit served an answer to the same question.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from spendgate.demo.prompts import SYSTEM_PROMPTS
from spendgate.providers.dialects import dialect_for

__all__ = [
    "FEATURES",
    "RATES",
    "TENANTS",
    "DemoRequest",
    "Feature",
    "build_traffic",
    "load_prompts",
]


@dataclass(frozen=True)
class Feature:
    name: str
    team: str
    use_case: str
    model: str
    api: str
    """Wire format the app uses: `openai` (/v1/chat/completions) or `anthropic` (/v1/messages)."""
    weight: int
    max_tokens: int | None = None

    @property
    def system(self) -> str:
        return SYSTEM_PROMPTS[self.name]


FEATURES: tuple[Feature, ...] = (
    Feature("support-chat", "support", "chat", "gpt-4o", "openai", 25),
    Feature("faq-answers", "growth", "faq", "gpt-4o", "openai", 30),
    Feature("code-assistant", "platform", "chat", "claude-sonnet-4", "anthropic", 20, 1024),
    Feature("ticket-triage", "support", "classification", "gpt-4o", "openai", 15),
    Feature("doc-summarizer", "platform", "summarization", "gpt-4o-mini", "anthropic", 10),
)

RATES = {
    "faq_exact_repeat": 0.30,
    "faq_near_duplicate": 0.15,
    "support_multi_turn": 0.40,
    "stream": 0.25,
}
"""The stated shape of the traffic (shares of each feature's calls or conversations)."""

TENANTS = tuple(f"tenant-{name}" for name in (
    "acme", "globex", "initech", "umbrella", "hooli", "stark", "wayne", "wonka",
    "tyrell", "cyberdyne", "soylent", "aperture",
))  # fmt: skip

_FOLLOW_UPS = (
    "Thanks. And if I'm on the Team plan, is it any different?",
    "OK, I did that, but the numbers still look wrong. What next?",
    "Can you explain the second step again? I can't find that menu.",
    "Will this affect the invoices I already sent?",
    "My accountant also needs to see this, how do I give her access?",
    "What happens to last month's transactions if I change this?",
    "Is there a way to do this for all my client companies at once?",
    "Got it. Last question: can I undo it if I make a mistake?",
)
_FILLERS = ("please", "quick question:", "hi,", "hello -", "hey,")
_REPLY_WORDS = (
    "open", "settings", "billing", "then", "choose", "the", "account", "and", "your", "next",
    "report", "period", "check", "that", "invoice", "bank", "feed", "it", "will", "update",
    "within", "a", "few", "minutes", "if", "not", "reconnect", "from", "menu", "data", "stays",
)  # fmt: skip


@dataclass
class DemoRequest:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    feature: str
    root: str
    """The underlying question this request asks (the same for a repeat or a retyping)."""
    kind: str = "fresh"
    """fresh | exact-repeat | near-duplicate | turn"""
    extra: dict[str, Any] = field(default_factory=dict)


def _shared_traffic() -> Path | None:
    root = os.environ.get("SPENDGATE_SHARED")
    candidates = [Path(root) / "data" / "traffic"] if root else []
    here = Path.cwd()
    candidates += [p / "shared" / "data" / "traffic" for p in (here, *here.parents)]
    for folder in candidates:
        files = sorted(folder.glob("*.jsonl.gz")) if folder.is_dir() else []
        if files:
            return files[0]
    return None


def load_prompts(limit: int | None = None) -> tuple[list[dict[str, Any]], str]:
    """Prompts as `{"id", "turns"}`, and where they came from."""
    path = _shared_traffic()
    rows: list[dict[str, Any]] = []
    if path is not None:
        with gzip.open(path, "rt", encoding="utf-8") as fh:
            rows = [json.loads(line) for line in fh if line.strip()]
        source = str(path)
    else:
        sample = resources.files("spendgate") / "data" / "sample_prompts.jsonl"
        rows = [json.loads(line) for line in sample.read_text().splitlines() if line.strip()]
        source = "bundled sample (spendgate/data/sample_prompts.jsonl)"
    rows = [r for r in rows if r.get("turns")]
    return (rows[:limit] if limit else rows), source


def _pick(key: str, salt: str, n: int) -> int:
    return int.from_bytes(hashlib.blake2b((salt + key).encode(), digest_size=8).digest(), "big") % n


def _chance(key: str, salt: str, p: float) -> bool:
    return _pick(key, salt, 10_000) < p * 10_000


def _feature_for(prompt_id: str) -> Feature:
    point = _pick(prompt_id, "feature", sum(f.weight for f in FEATURES))
    for feature in FEATURES:
        if point < feature.weight:
            return feature
        point -= feature.weight
    return FEATURES[-1]


def _tenant_for(key: str) -> str:
    # Zipf-like: tenant k drawn with weight 1/(k+1).
    weights = [1 / (k + 1) for k in range(len(TENANTS))]
    point = _pick(key, "tenant", 10_000) / 10_000 * sum(weights)
    for tenant, w in zip(TENANTS, weights, strict=True):
        if point < w:
            return tenant
        point -= w
    return TENANTS[-1]


def retyped(question: str, key: str) -> str:
    """The same question typed again: case, punctuation and a filler word change."""
    text = question.strip()
    variant = _pick(key, "retype", 3)
    if variant == 0:
        text = text.lower()
    elif variant == 1:
        text = re.sub(r"[?.!]+\s*$", "", text)
    filler = _FILLERS[_pick(key, "filler", len(_FILLERS))]
    return f"{filler} {text}"


def _reply(turn: str, key: str) -> str:
    n = 40 + _pick(key, "reply-len", 60)
    words = [_REPLY_WORDS[_pick(key, f"w{i}", len(_REPLY_WORDS))] for i in range(n)]
    return f"About '{turn[:40]}': " + " ".join(words) + "."


def _headers(feature: Feature, tenant: str, user_key: str) -> dict[str, str]:
    return {
        "x-spendgate-feature": feature.name,
        "x-spendgate-team": feature.team,
        "x-spendgate-use-case": feature.use_case,
        "x-spendgate-tenant": tenant,
        "x-spendgate-user": f"{tenant}-u{_pick(user_key, 'user', 40)}",
    }


def _request(
    feature: Feature, messages: list[dict[str, Any]], key: str, *, stream: bool
) -> tuple[str, dict[str, Any]]:
    dialect = dialect_for(feature.api)
    body = dialect.conversation(feature.model, feature.system, messages)
    body["stream"] = stream
    if feature.max_tokens:
        body["max_tokens"] = feature.max_tokens
    return dialect.path, dialect.client_request(body)


def build_traffic(prompts: list[dict[str, Any]]) -> list[DemoRequest]:
    """The demo's calls, in send order."""
    out: list[DemoRequest] = []
    popular: list[tuple[str, str, str]] = []  # (root id, question, tenant) of faq questions
    for row in prompts:
        pid = str(row["id"])
        feature = _feature_for(pid)
        first = str(row["turns"][0])
        tenant = _tenant_for(pid)
        headers = _headers(feature, tenant, pid)
        if feature.name == "faq-answers":
            out.extend(_faq(feature, pid, first, headers, popular))
        elif feature.name == "support-chat" and _chance(pid, "multi", RATES["support_multi_turn"]):
            out.extend(_conversation(feature, pid, [str(t) for t in row["turns"]], headers))
        else:
            stream = _chance(pid, "stream", RATES["stream"])
            path, body = _request(feature, [{"role": "user", "content": first}], pid, stream=stream)
            out.append(DemoRequest(path, headers, body, feature.name, root=pid))
    return out


def _faq(
    feature: Feature,
    pid: str,
    question: str,
    headers: dict[str, str],
    popular: list[tuple[str, str, str]],
) -> Iterator[DemoRequest]:
    """A fresh question, or a repeat or retyping of a popular one (never streamed, so the
    demo can read each answer and verify semantic hits). Repeats stay within a tenant: the
    cache never crosses one, and a popular question is popular among one customer's users."""
    draw = _pick(pid, "faq", 10_000) / 10_000
    mine = [p for p in popular if p[2] == headers["x-spendgate-tenant"]]
    if mine and draw < RATES["faq_exact_repeat"] + RATES["faq_near_duplicate"]:
        root, original, _ = mine[_pick(pid, "which", min(len(mine), 40))]
        exact = draw < RATES["faq_exact_repeat"]
        text = original if exact else retyped(original, pid)
        path, body = _request(feature, [{"role": "user", "content": text}], pid, stream=False)
        kind = "exact-repeat" if exact else "near-duplicate"
        yield DemoRequest(path, headers, body, feature.name, root=root, kind=kind)
        return
    if len(question) <= 300:
        popular.append((pid, question, headers["x-spendgate-tenant"]))
    path, body = _request(feature, [{"role": "user", "content": question}], pid, stream=False)
    yield DemoRequest(path, headers, body, feature.name, root=pid)


def _conversation(
    feature: Feature, pid: str, turns: list[str], headers: dict[str, str]
) -> Iterator[DemoRequest]:
    """4–8 user turns, each sent as a call carrying the whole conversation so far."""
    n = 4 + _pick(pid, "turns", 5)
    users = [*turns[:2]]
    while len(users) < n:
        users.append(_FOLLOW_UPS[_pick(pid, f"follow{len(users)}", len(_FOLLOW_UPS))])
    history: list[dict[str, Any]] = []
    for i, text in enumerate(users):
        history.append({"role": "user", "content": text})
        key = f"{pid}:{i}"
        path, body = _request(feature, list(history), key, stream=False)
        yield DemoRequest(path, headers, body, feature.name, root=key, kind="turn")
        history.append({"role": "assistant", "content": _reply(text, key)})
