"""Judges: how good is a candidate model's answer, given the prompt and a reference answer.

Two families, one interface (`grade(prompt, answer, reference) -> quality in [0, 1] | None`):

- reference checks, for classification and extraction, where an answer is right or wrong:
  `exact` (the normalized answer equals the reference: a label) and `json` (the listed
  fields of a JSON answer equal the reference's; all of the reference's top-level fields
  when none are listed). Free and deterministic.
- LLM judges, sent through the gateway like any call (so they are costed and attributed,
  to the `spendgate-eval` feature): `rubric` scores one answer 1–10 against a rubric,
  `pairwise` compares the candidate with the reference answer and says which is better or
  that they are equivalent. Both ask for JSON with a schema, so the verdict is parsed, not
  guessed; the pairwise order is set by a hash of the prompt (half the prompts show the
  candidate first) to cancel position bias.

The reference is the requested model's answer to the same prompt. A relative judge
(`exact`, `json`, `pairwise`) scores the reference itself 1 by definition — its quality
reads "share of prompts where the candidate is as good as the requested model"; `rubric`
is absolute, so the reference is graded too (`absolute = True`). `None` = could not
grade (the judge call failed, or the reference itself is not valid JSON): such prompts are
left out, never counted as 0 or 1.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from spendgate.providers.dialects import ANTHROPIC, OPENAI

__all__ = [
    "ExactJudge",
    "JsonFieldsJudge",
    "Judge",
    "PairwiseJudge",
    "RubricJudge",
    "Send",
    "answer_text",
    "make_judge",
    "parse_json_answer",
]

Send = Callable[[dict[str, Any]], Awaitable[dict[str, Any] | None]]
"""Send an OpenAI chat-completions body through the gateway; the response body, or None."""


class Judge(Protocol):
    @property
    def kind(self) -> str: ...

    @property
    def absolute(self) -> bool:
        """True: the reference answer is graded like any other (else it scores 1)."""
        ...

    async def grade(self, prompt: str, answer: str, reference: str | None) -> float | None: ...


def answer_text(body: dict[str, Any] | None) -> str:
    """The answer in a chat-completions or messages response body (tool calls as JSON)."""
    if not isinstance(body, dict):
        return ""
    choices = body.get("choices")
    if isinstance(choices, list) and choices and isinstance(choices[0], dict):
        return OPENAI.answer_text(body)
    return ANTHROPIC.answer_text(body)


_FENCE = re.compile(r"^\s*```(?:json)?\s*(.*?)\s*```\s*$", re.S)


def parse_json_answer(text: str) -> Any:
    """The JSON value of an answer (a ```json fence is allowed); raises ValueError."""
    m = _FENCE.match(text)
    return json.loads(m.group(1) if m else text)


def normalize(text: str) -> str:
    """Case, accents of width, surrounding quotes/punctuation and runs of space ignored."""
    text = unicodedata.normalize("NFKC", text).strip().lower()
    text = re.sub(r"\s+", " ", text)
    return text.strip(" \t\"'`.,;:!")


@dataclass(frozen=True)
class ExactJudge:
    kind: str = "exact"
    absolute: bool = False

    async def grade(self, prompt: str, answer: str, reference: str | None) -> float | None:
        if reference is None:
            return None
        return 1.0 if normalize(answer) == normalize(reference) else 0.0


def _field(value: Any, path: str) -> Any:
    for part in path.split("."):
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return _MISSING
    return value


_MISSING = object()


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, str) and isinstance(b, str):
        return normalize(a) == normalize(b)
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return abs(float(a) - float(b)) <= 1e-9 * max(1.0, abs(float(b)))
    return bool(a == b)


@dataclass(frozen=True)
class JsonFieldsJudge:
    """Share of the fields (dotted paths) equal to the reference's; an answer that is not
    JSON scores 0. No fields listed: the reference's top-level keys."""

    fields: tuple[str, ...] = ()
    kind: str = "json"
    absolute: bool = False

    async def grade(self, prompt: str, answer: str, reference: str | None) -> float | None:
        if reference is None:
            return None
        try:
            ref = parse_json_answer(reference)
        except ValueError:
            return None  # the reference cannot define right and wrong
        try:
            got = parse_json_answer(answer)
        except ValueError:
            return 0.0
        fields = self.fields or (tuple(ref) if isinstance(ref, dict) else ())
        if not fields:
            return 1.0 if _same(got, ref) else 0.0
        hits = 0
        for f in fields:
            want, have = _field(ref, f), _field(got, f)
            hits += want is not _MISSING and have is not _MISSING and _same(have, want)
        return hits / len(fields)


_RUBRIC = (
    "You grade an AI assistant's answer to a user's request. Judge correctness first, then "
    "whether it does what was asked (format, constraints, completeness), then clarity. "
    "Score 1-10: 10 = correct and complete, 7 = correct with minor gaps, 4 = partly wrong or "
    "missing what was asked, 1 = wrong, refused without reason, or unusable. Reply with JSON."
)
_PAIRWISE = (
    "You compare two AI assistants' answers to the same user request. Decide which answer "
    "serves the user better: correctness first, then following the instructions, then "
    "clarity. If both are correct and equally usable, say tie. Length is not quality. "
    "Reply with JSON."
)


def _clip(text: str, limit: int = 6000) -> str:
    return text if len(text) <= limit else text[: limit // 2] + "\n[…]\n" + text[-limit // 2 :]


def _content_json(body: dict[str, Any] | None) -> dict[str, Any] | None:
    text = answer_text(body)
    try:
        value = parse_json_answer(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _verdict_request(
    model: str, system: str, user: str, name: str, field: str, schema: dict[str, Any]
) -> dict[str, Any]:
    """A judge call: deterministic, short, and constrained to one JSON field."""
    return {
        "model": model,
        "temperature": 0,
        "max_tokens": 40,
        "messages": [{"role": "system", "content": system}, {"role": "user", "content": user}],
        "response_format": {
            "type": "json_schema",
            "json_schema": {
                "name": name,
                "strict": True,
                "schema": {
                    "type": "object",
                    "properties": {field: schema},
                    "required": [field],
                    "additionalProperties": False,
                },
            },
        },
    }


@dataclass(frozen=True)
class _ModelJudge:
    """A judge that asks a model (through the gateway) for a one-field JSON verdict."""

    model: str
    send: Send

    async def _verdict(
        self, system: str, user: str, name: str, field: str, schema: dict[str, Any]
    ) -> dict[str, Any] | None:
        body = _verdict_request(self.model, system, user, name, field, schema)
        return _content_json(await self.send(body))


@dataclass(frozen=True)
class RubricJudge(_ModelJudge):
    kind: str = "rubric"
    absolute: bool = True

    async def grade(self, prompt: str, answer: str, reference: str | None) -> float | None:
        user = f"[Request]\n{_clip(prompt)}\n\n[Answer]\n{_clip(answer)}"
        score_field = {"type": "integer", "minimum": 1, "maximum": 10}
        verdict = await self._verdict(_RUBRIC, user, "grade", "score", score_field)
        score = verdict.get("score") if verdict else None
        if not isinstance(score, (int, float)) or isinstance(score, bool):
            return None
        return (min(max(float(score), 1.0), 10.0) - 1.0) / 9.0


@dataclass(frozen=True)
class PairwiseJudge(_ModelJudge):
    kind: str = "pairwise"
    absolute: bool = False

    async def grade(self, prompt: str, answer: str, reference: str | None) -> float | None:
        if reference is None:
            return None
        candidate_first = hashlib.blake2b(prompt.encode(), digest_size=1).digest()[0] % 2 == 0
        first, second = (answer, reference) if candidate_first else (reference, answer)
        user = (
            f"[Request]\n{_clip(prompt)}\n\n[Answer 1]\n{_clip(first)}\n\n"
            f"[Answer 2]\n{_clip(second)}"
        )
        better_field = {"type": "string", "enum": ["1", "2", "tie"]}
        verdict = await self._verdict(_PAIRWISE, user, "verdict", "better", better_field)
        better = str(verdict.get("better")) if verdict else None
        if better == "tie":
            return 1.0
        if better not in ("1", "2"):
            return None
        candidate_won = (better == "1") == candidate_first
        return 1.0 if candidate_won else 0.0


def make_judge(
    kind: str, model: str | None = None, send: Send | None = None, fields: Sequence[str] = ()
) -> Judge:
    """A judge by name (`exact`, `json`, `rubric`, `pairwise`); LLM judges need a model and
    a way to send through the gateway."""
    if kind == "exact":
        return ExactJudge()
    if kind == "json":
        return JsonFieldsJudge(tuple(fields))
    if kind in ("rubric", "pairwise"):
        if not model or send is None:
            raise ValueError(f"the {kind} judge needs a judge model")
        return RubricJudge(model, send) if kind == "rubric" else PairwiseJudge(model, send)
    raise ValueError(f"unknown judge {kind!r}: exact, json, rubric or pairwise")
