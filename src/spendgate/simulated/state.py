"""What every endpoint of the simulated upstream shares: its settings, counters, fault
queue and prompt caches, and the two ways it answers (one JSON body, or a stream of events),
both paced like a real model when `latency="realistic"`.

Endpoints take an `UpstreamState`, not the ASGI app, so they (and the batch runner that
calls them) do not import the app that routes to them.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from typing import Any

import orjson

from spendgate.simulated.model import Answer, Ask, answer, per_token_delay, ttft
from spendgate.simulated.prompt_cache import AnthropicPromptCache, OpenAIPromptCache
from spendgate.simulated.wire import JSON_HEADERS, SSE_HEADERS, Cut, Fault, Send

__all__ = ["Pace", "UpstreamState"]


class Pace:
    """Seconds before the first token and between tokens (both 0 with `latency="none"`)."""

    __slots__ = ("first", "per_token")

    def __init__(self, first: float = 0.0, per_token: float = 0.0) -> None:
        self.first = first
        self.per_token = per_token

    def whole(self, out: Answer) -> float:
        """The delay of a non-streamed answer: all of it is generated before it is sent."""
        return self.first + self.per_token * out.visible


class UpstreamState:
    """State lives on the instance and is only touched from the event loop: no locks."""

    def __init__(self, latency: str = "none", seed: int = 0, require_key: str | None = None):
        if latency not in ("none", "realistic"):
            raise ValueError(f"latency must be 'none' or 'realistic', not {latency!r}")
        self.latency = latency
        self.seed = seed
        self.require_key = require_key
        self.faults: list[Fault] = []
        self.stats_total = 0
        self.by_path: Counter[str] = Counter()
        self.by_model: Counter[str] = Counter()
        self.faults_fired: Counter[str] = Counter()
        self.openai_cache = OpenAIPromptCache()
        self.anthropic_cache = AnthropicPromptCache()
        self._seq = 0
        self.public_url = ""
        """Where clients reach this upstream (set by `SimulatedUpstream`; batch result URLs)."""

    def next_id(self) -> str:
        self._seq += 1
        return f"{self.seed:x}{self._seq:012x}"

    def stats(self) -> dict[str, Any]:
        """Upstream calls seen (faulted ones included): what tests use to prove call counts."""
        return {
            "total": self.stats_total,
            "by_path": {"/v1" + k: v for k, v in self.by_path.items()},
            "by_model": dict(self.by_model),
            "faults_fired": dict(self.faults_fired),
            "faults_pending": len(self.faults),
        }

    def answer(self, ask: Ask) -> tuple[Answer, Pace]:
        """The model's answer to `ask`, and how fast it comes."""
        out = answer(ask, self.seed)
        if self.latency != "realistic":
            return out, Pace()
        rng = random.Random(ask.prompt_key)
        per_token = per_token_delay(ask.model)
        return out, Pace(ttft(ask.prompt_tokens, out, rng), per_token)

    async def respond(
        self, send: Send, payload: dict[str, Any], delay: float, fault: Fault | None
    ) -> None:
        """One JSON body after `delay`; a "cut" fault sends half of it and drops the line."""
        if delay > 0:
            await asyncio.sleep(delay)
        data = orjson.dumps(payload)
        headers = [*JSON_HEADERS, (b"x-request-id", self.next_id().encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        if fault is not None and fault.get("kind") == "cut":
            await send(
                {"type": "http.response.body", "body": data[: len(data) // 2], "more_body": True}
            )
            raise Cut
        await send({"type": "http.response.body", "body": data})

    async def stream(
        self, send: Send, events: list[bytes], pace: Pace, fault: Fault | None
    ) -> None:
        """Server-sent events, paced; a "cut" fault stops after `after_chunks` of them and
        drops the connection (or, with `mode=eof`, ends the body cleanly)."""
        headers = [*SSE_HEADERS, (b"x-request-id", self.next_id().encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        cut = None
        if fault is not None and fault.get("kind") == "cut":
            cut = int(fault.get("after_chunks", 3))
            events = events[:cut]
        if self.latency == "none":
            await send({"type": "http.response.body", "body": b"".join(events), "more_body": True})
        else:
            await asyncio.sleep(pace.first)
            for event in events:
                await send({"type": "http.response.body", "body": event, "more_body": True})
                await asyncio.sleep(pace.per_token)
        if cut is not None:
            if fault is not None and fault.get("mode") == "eof":
                await send({"type": "http.response.body", "body": b""})
                return
            raise Cut
        await send({"type": "http.response.body", "body": b""})
