"""History windows: the last turns verbatim, earlier turns as a running summary.

A turn is a user message and everything after it up to the next user message, so an
assistant tool call and its tool results always fall in the same turn and are never split
(Anthropic `tool_result` user messages continue the turn; they do not start one).

The cut between "summarized" and "verbatim" advances in blocks of `summarize_every` turns.
The summary of turns [0, cut) is produced once by a cheap model through the gateway itself
(`run_internal`, so it gets its own ledger event, tagged `use_case=history_summary`) and
cached under a hash of those turns; the next block's summary is built from the previous
summary plus the new turns only. A long conversation thus pays one small summary call per
block instead of re-sending every old turn on every call.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson

from spendgate.call import Call, Tags
from spendgate.errors import SpendgateError
from spendgate.providers.dialects import dialect_for
from spendgate.reply import Reply
from spendgate.trim.config import HistoryConfig

__all__ = ["HistoryWindow", "SummaryError", "split_turns", "transcript"]

INTERNAL_HEADER = "x-spendgate-trim"


class SummaryError(SpendgateError):
    pass


def _starts_turn(msg: Any) -> bool:
    if not isinstance(msg, dict) or msg.get("role") != "user":
        return False
    content = msg.get("content")
    return not (
        isinstance(content, list)
        and content
        and all(isinstance(b, dict) and b.get("type") == "tool_result" for b in content)
    )


def split_turns(messages: list[Any]) -> tuple[list[Any], list[list[Any]]]:
    """(leading system/developer messages, turns)."""
    head: list[Any] = []
    i = 0
    while (
        i < len(messages)
        and isinstance(messages[i], dict)
        and messages[i].get("role")
        in (
            "system",
            "developer",
        )
    ):
        head.append(messages[i])
        i += 1
    turns: list[list[Any]] = []
    for msg in messages[i:]:
        if _starts_turn(msg) or not turns:
            turns.append([msg])
        else:
            turns[-1].append(msg)
    return head, turns


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        out = []
        for b in content:
            if not isinstance(b, dict):
                continue
            if b.get("type") == "text":
                out.append(str(b.get("text") or ""))
            elif b.get("type") == "tool_use":
                out.append(f"[tool call {b.get('name')}: {orjson.dumps(b.get('input')).decode()}]")
            elif b.get("type") == "tool_result":
                out.append(f"[tool result: {_text(b.get('content'))}]")
        return "\n".join(out)
    return ""


def transcript(turns: list[list[Any]]) -> str:
    lines = []
    for turn in turns:
        for msg in turn:
            if not isinstance(msg, dict):
                continue
            role = msg.get("role")
            text = _text(msg.get("content"))
            for tc in msg.get("tool_calls") or []:
                fn = tc.get("function") or {} if isinstance(tc, dict) else {}
                text += f"\n[tool call {fn.get('name')}: {fn.get('arguments')}]"
            if text.strip():
                lines.append(f"{role}: {text.strip()}")
    return "\n".join(lines)


def _key(model: str, turns: list[list[Any]]) -> str:
    return hashlib.blake2b(orjson.dumps([model, turns]), digest_size=16).hexdigest()


@dataclass
class Windowed:
    messages: list[Any]
    summary: str
    turns_total: int
    turns_summarized: int
    summary_calls: int
    cache_hit: bool


class HistoryWindow:
    def __init__(
        self,
        cfg: HistoryConfig,
        run_internal: Callable[[Call], Awaitable[Reply]] | None,
        count: Callable[[str, str], int],
    ) -> None:
        self.cfg = cfg
        self.run_internal = run_internal
        self.count = count
        self._cache: OrderedDict[str, str] = OrderedDict()
        self._locks: dict[str, asyncio.Lock] = {}

    def plan(self, model: str, turns: list[list[Any]]) -> int:
        """How many leading turns to summarize (0: leave the history alone)."""
        keep = self.cfg.keep_last_turns
        if self.cfg.max_tokens is not None:
            used, fit = 0, 0
            for turn in reversed(turns):
                used += self.count(model, transcript([turn]))
                if used > self.cfg.max_tokens and fit >= 1:
                    break
                fit += 1
            keep = min(keep, max(1, fit))
        older = len(turns) - keep
        step = self.cfg.summarize_every
        return (older // step) * step if older >= step else 0

    async def window(self, call: Call, messages: list[Any]) -> Windowed | None:
        head, turns = split_turns(messages)
        cut = self.plan(call.model, turns)
        if cut <= 0:
            return None
        summary, calls, hit = await self._summary(call, turns, cut)
        note = "Summary of the earlier conversation:\n" + summary
        kept = dialect_for(call.api).with_history(head, [m for t in turns[cut:] for m in t], note)
        return Windowed(kept, note, len(turns), cut, calls, hit)

    async def _summary(self, call: Call, turns: list[list[Any]], cut: int) -> tuple[str, int, bool]:
        key = _key(self.cfg.summary_model, turns[:cut])
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key], 0, True
        lock = self._locks.setdefault(key, asyncio.Lock())
        try:
            async with lock:  # concurrent calls of one conversation pay for one summary
                if key in self._cache:
                    return self._cache[key], 0, True
                step = self.cfg.summarize_every
                prev_key = _key(self.cfg.summary_model, turns[: cut - step]) if cut > step else None
                previous = self._cache.get(prev_key) if prev_key else None
                if previous is not None:
                    text = await self._ask(call, previous, turns[cut - step : cut])
                else:
                    text = await self._ask(call, None, turns[:cut])
                self._cache[key] = text
                while len(self._cache) > self.cfg.cache_size:
                    self._cache.popitem(last=False)
        finally:
            if not lock.locked():
                self._locks.pop(key, None)
        return text, 1, False

    async def _ask(self, call: Call, previous: str | None, turns: list[list[Any]]) -> str:
        if self.run_internal is None:
            raise SummaryError("the gateway offers no internal calls")
        material = transcript(turns)
        if previous:
            material = f"Summary so far:\n{previous}\n\nConversation since then:\n{material}"
        body = {
            "model": self.cfg.summary_model,
            "messages": [
                {"role": "system", "content": self.cfg.prompt},
                {"role": "user", "content": material},
            ],
            "max_tokens": self.cfg.summary_max_tokens,
            "temperature": 0,
        }
        internal = Call(
            endpoint="chat",
            api="openai",
            body=body,
            requested_model=self.cfg.summary_model,
            tags=Tags(
                feature=call.tags.feature,
                use_case="history_summary",
                team=call.tags.team,
                tenant=call.tags.tenant,
                user=call.tags.user,
                key_id=call.tags.key_id,
            ),
            headers={INTERNAL_HEADER: "off"},
        )
        reply = await self.run_internal(internal)
        if reply.status != 200 or not isinstance(reply.body, dict):
            raise SummaryError(reply.error.message if reply.error else f"status {reply.status}")
        try:
            text = reply.body["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError) as exc:
            raise SummaryError(f"unexpected summary reply: {exc}") from None
        if not isinstance(text, str) or not text.strip():
            raise SummaryError("empty summary")
        return text.strip()
