"""`Reply`: what a stage or provider hands back for a `Call`.

A reply is either a whole body or a stream of SSE bytes, always in the client's wire format.
It is *complete* only when its last byte has gone out (or the client left): stages that act
after the answer — accounting, budget settlement, cache store — register a callback with
`on_done`, and `finish()` runs each exactly once. Callbacks are synchronous on purpose: a
stream can end by cancellation, where awaiting is no longer reliable; work that needs I/O
hands itself to a queue or a task from its callback.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from spendgate.call import Cost, Usage
from spendgate.errors import GatewayError

__all__ = ["Attempt", "Reply"]

log = logging.getLogger("spendgate.reply")


@dataclass(slots=True)
class Attempt:
    """One try against one deployment (fallbacks and retries add more)."""

    deployment: str
    model: str
    status: int | None = None
    ms: float = 0.0
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "deployment": self.deployment,
            "model": self.model,
            "status": self.status,
            "ms": round(self.ms, 3),
            "error": self.error,
        }


@dataclass(eq=False)
class Reply:
    status: int = 200
    body: dict[str, Any] | None = None
    chunks: AsyncIterator[bytes] | None = None
    """SSE bytes in the client's format, for streaming replies."""
    headers: dict[str, str] = field(default_factory=dict)
    usage: Usage | None = None
    served_model: str | None = None
    provider: str | None = None
    deployment: str | None = None
    finish_reason: str | None = None
    service_tier: str | None = None
    """The tier the provider says served the call (OpenAI's `service_tier`, Anthropic's
    `usage.service_tier`); None when it didn't say."""
    error: GatewayError | None = None
    attempts: list[Attempt] = field(default_factory=list)
    ttfb_ms: float | None = None
    client_disconnected: bool = False
    raw_body: bytes | None = None
    """Body already serialized (e.g. an upstream error passed through verbatim)."""
    extra: dict[str, Any] = field(default_factory=dict)
    cost: Cost | None = None
    """Set once by accounting when the reply completes; None = unknown price."""
    priced: bool = False
    deferred: bool = False
    """Answered 202 now, completed when its batch comes back (`spendgate.batches.lane`):
    nothing finishes it until then, so budgets stay reserved and the one ledger row is
    written with the real answer."""
    _callbacks: list[Callable[[Reply], object]] = field(default_factory=list, repr=False)
    _done: bool = field(default=False, repr=False)

    @classmethod
    def failed(cls, error: GatewayError) -> Reply:
        return cls(status=error.status, error=error, headers=dict(error.headers))

    @property
    def is_stream(self) -> bool:
        return self.chunks is not None

    @property
    def done(self) -> bool:
        return self._done

    def on_done(self, callback: Callable[[Reply], object]) -> None:
        """Run `callback(reply)` once the reply is complete (now, if it already is)."""
        if self._done:
            self._safe(callback)
        else:
            self._callbacks.append(callback)

    def finish(self, *, client_disconnected: bool = False) -> None:
        """Mark the reply complete and run the callbacks, innermost stage first. Idempotent."""
        if self._done:
            return
        self._done = True
        self.client_disconnected = self.client_disconnected or client_disconnected
        callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            self._safe(callback)

    def _safe(self, callback: Callable[[Reply], object]) -> None:
        # A failing callback must not stop the ones after it (the ledger write is last).
        try:
            callback(self)
        except Exception:
            log.exception("reply callback %r failed", callback)

    async def iter_bytes(self) -> AsyncGenerator[bytes, None]:
        """The stream for the edge; finishing is guaranteed however iteration ends."""
        assert self.chunks is not None
        completed = False
        try:
            async for chunk in self.chunks:
                yield chunk
            completed = True
        finally:
            # Close the provider's stream first: its cleanup records the usage consumed so
            # far (and closes the upstream connection) before accounting reads it.
            aclose = getattr(self.chunks, "aclose", None)
            if aclose is not None:
                try:
                    await aclose()
                except Exception:
                    log.exception("closing the upstream stream failed")
            self.finish(client_disconnected=not completed)

    def body_bytes(self) -> bytes:
        if self.raw_body is not None:
            return self.raw_body
        return orjson.dumps(self.body)

    def mark_first_byte(self, started: float) -> None:
        if self.ttfb_ms is None:
            self.ttfb_ms = (time.perf_counter() - started) * 1000
