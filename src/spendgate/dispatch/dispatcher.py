"""`Dispatcher`: the end of the stage list — send the call to a deployment serving its
model, with retries, fallbacks and circuit breakers (rules in `spendgate.dispatch.resilience`).

The plan for a call is: every deployment serving `call.model`, in configured order; then
each model of those deployments' `fallbacks` for it (or of a `FallbackChain` decision
when a stage set one), with every deployment serving that; and, when routing changed the
model, the requested model last. Each deployment gets `1 + retries` tries on retryable
failures; a non-retryable one (a 4xx other than 429) ends the call at once. Streams are
retried only before their first byte: the dispatcher reads the first chunk before it
returns, and once the client has seen a byte, a failure is reported in-band, never retried.

Every try is an `Attempt` on the reply (and in the ledger event), skipped deployments
included (`error: circuit_open`). The reply is priced as the deployment and model that
served it, so a fallback to another provider is billed at that provider's price.

The dispatcher reads no stage's decision: a stage that shaped the body for one wire format
registers a hook on the call (`Call.upstream_hooks`), and each attempt's body is
`call.for_upstream(format of that deployment)`.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

from spendgate.accounting import Accountant
from spendgate.call import Call, Decision
from spendgate.dispatch.resilience import CircuitBreaker, Resilience, is_retryable
from spendgate.dispatch.table import ModelTable
from spendgate.errors import GatewayError
from spendgate.providers.base import Deployment, UpstreamError, UpstreamHTTP
from spendgate.providers.registry import adapter_for
from spendgate.providers.translate import TranslationError
from spendgate.reply import Attempt, Reply

__all__ = ["Dispatcher", "Fallback", "FallbackChain"]

log = logging.getLogger(__name__)


@dataclass
class FallbackChain(Decision):
    """Set by a stage to replace the configured fallbacks of this call's model."""

    key: ClassVar[str] = "fallbacks"
    models: list[str]

    def as_json(self) -> Any:
        return list(self.models)


@dataclass
class Fallback(Decision):
    """Every deployment of the call's model failed; a fallback model served it."""

    key: ClassVar[str] = "fallback"
    from_model: str = field(metadata={"name": "from"})
    to: str
    deployment: str


@dataclass
class _Walk:
    """What one call's walk through its plan has seen so far."""

    attempts: list[Attempt] = field(default_factory=list)
    last: UpstreamError | None = None
    """The last retryable failure (None: every deployment was skipped by its breaker)."""
    circuit_wait: float | None = None
    """Shortest time until a skipped deployment's breaker lets a probe through."""


class Dispatcher:
    """Walks a call's plan of (model, deployment) pairs until one answers (see module doc)."""

    def __init__(
        self,
        table: ModelTable,
        http: UpstreamHTTP,
        accountant: Accountant,
        resilience: Resilience | None = None,
    ) -> None:
        self.table = table
        self.http = http
        self.accountant = accountant
        self.resilience = resilience or Resilience()

    def plan(self, call: Call) -> list[tuple[str, Deployment]]:
        """(model, deployment) pairs to try, in order."""
        primary = self.table.serving(call.model)
        models: list[str] = [call.model]
        override = call.decisions.get(FallbackChain)
        if override is not None:
            chain = list(override.models)
        else:
            chain = [m for dep in primary for m in dep.fallbacks.get(call.model, ())]
        if call.requested_model != call.model:
            chain.append(call.requested_model)
        for model in chain:
            if model not in models:
                models.append(model)
        return [(model, dep) for model in models for dep in self.table.serving(model)]

    async def __call__(self, call: Call) -> Reply:
        if not self.table.serving(call.model):
            raise GatewayError(
                404,
                f"The model `{call.model}` does not exist or is not served by this gateway; "
                f"GET /v1/models lists the ones that are.",
                param="model",
                code="model_not_found",
            )
        walk = _Walk()
        for model, dep in self.plan(call):
            target = call if model == call.model else replace(call, model=model)
            target = target.for_upstream(dep.api_for(model))
            reply = await self._on_deployment(call, target, dep, walk)
            if reply is not None:
                return reply
        raise _exhausted(call, walk)

    async def _on_deployment(
        self, call: Call, target: Call, dep: Deployment, walk: _Walk
    ) -> Reply | None:
        """Try one deployment (with its retries): the reply, or None to move on."""
        breaker = self.resilience.breaker(dep)
        retry = 0
        while True:
            if breaker is not None and not breaker.allow():
                walk.attempts.append(
                    Attempt(dep.name, dep.upstream_model(target.model), error="circuit_open")
                )
                wait = breaker.retry_in()
                walk.circuit_wait = (
                    wait if walk.circuit_wait is None else min(walk.circuit_wait, wait)
                )
                return None
            try:
                reply = await self._attempt(target, dep)
            except UpstreamError as exc:
                delay = self._after_failure(exc, dep, breaker, retry, walk)
                if delay is None:
                    return None
                retry += 1
                if delay > 0:
                    await asyncio.sleep(delay)
                continue
            except TranslationError:
                if breaker is not None:
                    breaker.release()
                if target.model == call.model:
                    raise
                # A fallback in another wire format cannot express this request.
                walk.attempts.append(
                    Attempt(dep.name, dep.upstream_model(target.model), error="translation_failed")
                )
                return None
            except BaseException:
                if breaker is not None:
                    breaker.release()
                raise
            return self._served(call, target, dep, reply, walk.attempts, breaker)

    def _after_failure(
        self,
        exc: UpstreamError,
        dep: Deployment,
        breaker: CircuitBreaker | None,
        retry: int,
        walk: _Walk,
    ) -> float | None:
        """Seconds to wait before retrying this deployment, None to move on to the next;
        raises a failure another try cannot fix."""
        walk.attempts.extend(exc.attempts)
        retryable = is_retryable(exc.error)
        if breaker is not None:
            breaker.record(not retryable)  # a 4xx says the deployment is up
        if not retryable:
            raise _with_attempts(exc, walk.attempts) from None
        walk.last = exc
        if retry >= dep.retries:
            return None
        return self.resilience.delay(dep, retry, exc.error)  # None: Retry-After too long

    async def _attempt(self, call: Call, dep: Deployment) -> Reply:
        """One try. A stream is read up to its first chunk, so that a stream failing before
        any byte reaches the client is a retryable failure rather than a broken answer."""
        reply = await adapter_for(dep, call.model, call.api).send(call, dep, self.http)
        if reply.chunks is None:
            return reply
        chunks = reply.chunks
        try:
            first: bytes | None = await anext(chunks)
        except StopAsyncIteration:
            first = None
        if reply.error is None and first is not None:
            reply.chunks = _prepend(first, chunks)
            return reply
        await _close(chunks)
        error = reply.error or GatewayError(
            502,
            f"upstream deployment {dep.name!r} sent an empty stream",
            type="upstream_error",
            code="upstream_stream_cut",
        )
        for attempt in reply.attempts:
            attempt.error = error.code
        failure = UpstreamError(error)
        failure.attempts = list(reply.attempts)
        failure.deployment = dep.name
        raise failure

    def _served(
        self,
        call: Call,
        target: Call,
        dep: Deployment,
        reply: Reply,
        attempts: list[Attempt],
        breaker: CircuitBreaker | None,
    ) -> Reply:
        if breaker is not None:
            breaker.record(True)
            if reply.is_stream:
                # Cut after its first byte: still a failure of this deployment.
                reply.on_done(lambda r: breaker.record(False) if r.error is not None else None)
        reply.attempts = [*attempts, *reply.attempts]
        if target.model != call.model:
            call.decisions.add(Fallback(call.model, target.model, dep.name))
            log.warning(
                "%s: %s failed on every deployment; served by fallback %s on %s",
                call.request_id, call.model, target.model, dep.name,
            )  # fmt: skip
        # Priced as the model and deployment that served it (innermost callback: first).
        reply.on_done(lambda r: self.accountant.price(target, r))
        return reply


def _exhausted(call: Call, walk: _Walk) -> UpstreamError:
    """The failure to report once every deployment of the plan failed or was skipped."""
    if walk.last is not None:
        return _with_attempts(walk.last, walk.attempts)
    wait = max(1, math.ceil(walk.circuit_wait or 0))
    error = GatewayError(
        503,
        f"every deployment serving `{call.model}` (and its fallbacks) is failing and "
        f"temporarily skipped (circuit open); retry in {wait}s",
        type="upstream_error",
        code="circuit_open",
        headers={"retry-after": str(wait)},
    )
    skipped = UpstreamError(error)
    skipped.deployment = walk.attempts[-1].deployment if walk.attempts else None
    return _with_attempts(skipped, walk.attempts)


def _with_attempts(exc: UpstreamError, attempts: list[Attempt]) -> UpstreamError:
    exc.attempts = list(attempts)
    if exc.deployment is None and attempts:
        exc.deployment = attempts[-1].deployment
    return exc


async def _prepend(first: bytes, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    try:
        yield first
        async for chunk in rest:
            yield chunk
    finally:
        await _close(rest)


async def _close(chunks: AsyncIterator[bytes]) -> None:
    aclose = getattr(chunks, "aclose", None)
    if aclose is not None:
        await aclose()
