"""The stage list every call goes through, and the dispatcher at its end.

A stage is one object with one method, `handle(call, call_next)`: it may answer by itself
(a cache hit, a budget refusal), change the call and pass it on (trim, route), or act on the
finished reply by registering `reply.on_done(...)` (settle a reservation, store in cache).
Stages that are off are not in the list. No stage knows about HTTP.

Order of completion callbacks: the dispatcher prices the reply first (innermost), outer
stages see `reply.cost`, and the pipeline writes the ledger event last — exactly once per
call, whatever happened on the way.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import replace
from typing import Any, Protocol

from spendgate.accounting import Accountant
from spendgate.call import Call
from spendgate.errors import GatewayError, internal_error
from spendgate.providers.base import Deployment, UpstreamError, UpstreamHTTP
from spendgate.providers.registry import adapter_for
from spendgate.providers.translate import TranslationError
from spendgate.reply import Attempt, Reply
from spendgate.routing.resilience import CircuitBreaker, Resilience, is_retryable

__all__ = ["Dispatcher", "ModelTable", "Next", "Pipeline", "Stage"]

log = logging.getLogger("spendgate.pipeline")

Next = Callable[[Call], Awaitable[Reply]]


class Stage(Protocol):
    name: str

    async def handle(self, call: Call, call_next: Next) -> Reply: ...


class ModelTable:
    """Public model name → the deployments that serve it, in preference order."""

    def __init__(self, deployments: Iterable[Deployment]) -> None:
        self.deployments: dict[str, Deployment] = {}
        self._by_model: dict[str, list[Deployment]] = {}
        for dep in deployments:
            self.deployments[dep.name] = dep
            for model in dep.models:
                self._by_model.setdefault(model, []).append(dep)

    def serving(self, model: str) -> list[Deployment]:
        return self._by_model.get(model, [])

    def models(self) -> list[str]:
        return sorted(self._by_model)


class Dispatcher:
    """The end of the line: send the call to a deployment serving its model, with retries,
    fallbacks and circuit breakers (rules in `spendgate.routing.resilience`).

    The plan for a call is: every deployment serving `call.model`, in configured order; then
    each model of those deployments' `fallbacks` for it (or of `call.decisions["fallbacks"]`
    when a stage set one), with every deployment serving that; and, when routing changed the
    model, the requested model last. Each deployment gets `1 + retries` tries on retryable
    failures; a non-retryable one (a 4xx other than 429) ends the call at once. Streams are
    retried only before their first byte: the dispatcher reads the first chunk before it
    returns, and once the client has seen a byte, a failure is reported in-band, never retried.

    Every try is an `Attempt` on the reply (and in the ledger event), skipped deployments
    included (`error: circuit_open`). The reply is priced as the deployment and model that
    served it, so a fallback to another provider is billed at that provider's price.
    """

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
        override = call.decisions.get("fallbacks")
        if isinstance(override, list | tuple):
            chain = [str(m) for m in override]
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
        attempts: list[Attempt] = []
        last: UpstreamError | None = None
        circuit_wait: float | None = None
        for model, dep in self.plan(call):
            target = call if model == call.model else replace(call, model=model)
            if _injected_breakpoints(call) and dep.api_for(model) == "openai":
                # The prefix stage marked this OpenAI-format body for an Anthropic upstream;
                # an OpenAI-format one (a fallback) gets it as the client sent it.
                target = replace(target, body=_without_cache_control(call.body))
            breaker = self.resilience.breaker(dep)
            retry = 0
            while True:
                if breaker is not None and not breaker.allow():
                    attempts.append(
                        Attempt(dep.name, dep.upstream_model(model), error="circuit_open")
                    )
                    wait = breaker.retry_in()
                    circuit_wait = wait if circuit_wait is None else min(circuit_wait, wait)
                    break
                try:
                    reply = await self._attempt(target, dep)
                except UpstreamError as exc:
                    attempts.extend(exc.attempts)
                    retryable = is_retryable(exc.error)
                    if breaker is not None:
                        breaker.record(not retryable)  # a 4xx says the deployment is up
                    if not retryable:
                        raise _with_attempts(exc, attempts) from None
                    last = exc
                    if retry >= dep.retries:
                        break
                    delay = self.resilience.delay(dep, retry, exc.error)
                    if delay is None:
                        break  # Retry-After longer than we accept: next deployment
                    retry += 1
                    if delay > 0:
                        await asyncio.sleep(delay)
                    continue
                except TranslationError:
                    if breaker is not None:
                        breaker.release()
                    if model == call.model:
                        raise
                    # A fallback in another wire format cannot express this request.
                    attempts.append(
                        Attempt(dep.name, dep.upstream_model(model), error="translation_failed")
                    )
                    break
                except BaseException:
                    if breaker is not None:
                        breaker.release()
                    raise
                return self._served(call, target, dep, reply, attempts, breaker)
        if last is None:
            wait = max(1, math.ceil(circuit_wait or 0))
            error = GatewayError(
                503,
                f"every deployment serving `{call.model}` (and its fallbacks) is failing and "
                f"temporarily skipped (circuit open); retry in {wait}s",
                type="upstream_error",
                code="circuit_open",
                headers={"retry-after": str(wait)},
            )
            skipped = UpstreamError(error)
            skipped.deployment = attempts[-1].deployment if attempts else None
            raise _with_attempts(skipped, attempts)
        raise _with_attempts(last, attempts)

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
            call.decisions["fallback"] = {
                "from": call.model,
                "to": target.model,
                "deployment": dep.name,
            }
            log.warning(
                "%s: %s failed on every deployment; served by fallback %s on %s",
                call.request_id, call.model, target.model, dep.name,
            )  # fmt: skip
        # Priced as the model and deployment that served it (innermost callback: first).
        reply.on_done(lambda r: self.accountant.price(target, r))
        return reply


def _injected_breakpoints(call: Call) -> bool:
    prefix = call.decisions.get("prefix")
    return (
        call.api == "openai"
        and isinstance(prefix, dict)
        and prefix.get("source") == "injected"
        and not prefix.get("shadow")
    )


def _without_cache_control(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_cache_control(v) for k, v in value.items() if k != "cache_control"}
    if isinstance(value, list):
        return [_without_cache_control(v) for v in value]
    return value


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


class Pipeline:
    def __init__(
        self, stages: Sequence[Stage], dispatcher: Dispatcher, accountant: Accountant
    ) -> None:
        self.stages = list(stages)
        self.dispatcher = dispatcher
        self.accountant = accountant
        chain: Next = dispatcher
        for stage in reversed(self.stages):
            chain = _bind(stage, chain)
        self._chain = chain

    async def run(self, call: Call) -> Reply:
        """Answer the call. Never raises: every outcome is a `Reply` with a ledger event
        attached to its completion."""
        try:
            reply = await self._chain(call)
        except GatewayError as exc:
            reply = Reply.failed(exc)
        except UpstreamError as exc:
            reply = Reply.failed(exc.error)
            reply.deployment = exc.deployment
            reply.attempts = exc.attempts
        except TranslationError as exc:
            reply = Reply.failed(
                GatewayError(400, str(exc), param=exc.param, code="unsupported_parameter")
            )
        except Exception:
            log.exception("internal error serving %s", call.request_id)
            reply = Reply.failed(internal_error(call.request_id))
        reply.on_done(lambda r: self.accountant.record(call, r))
        if not reply.is_stream and not reply.deferred:
            reply.finish()
        return reply


def _bind(stage: Stage, call_next: Next) -> Next:
    async def step(call: Call) -> Reply:
        return await stage.handle(call, call_next)

    return step
