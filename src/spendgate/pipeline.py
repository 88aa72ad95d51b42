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

import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Protocol

from spendgate.accounting import Accountant
from spendgate.call import Call
from spendgate.errors import GatewayError
from spendgate.providers.base import Deployment, UpstreamError, UpstreamHTTP
from spendgate.providers.registry import adapter_for
from spendgate.providers.translate import TranslationError
from spendgate.reply import Reply

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
    """The end of the line: send the call to the first deployment serving its model."""

    def __init__(self, table: ModelTable, http: UpstreamHTTP, accountant: Accountant) -> None:
        self.table = table
        self.http = http
        self.accountant = accountant

    async def __call__(self, call: Call) -> Reply:
        deps = self.table.serving(call.model)
        if not deps:
            raise GatewayError(
                404,
                f"The model `{call.model}` does not exist or is not served by this gateway; "
                f"GET /v1/models lists the ones that are.",
                param="model",
                code="model_not_found",
            )
        dep = deps[0]
        reply = await adapter_for(dep, call.model).send(call, dep, self.http)
        reply.on_done(lambda r: self.accountant.price(call, r))
        return reply


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
            reply = Reply.failed(
                GatewayError(
                    500,
                    f"spendgate hit an internal error; request id {call.request_id}",
                    type="server_error",
                    code="internal_error",
                )
            )
        reply.on_done(lambda r: self.accountant.record(call, r))
        if not reply.is_stream:
            reply.finish()
        return reply


def _bind(stage: Stage, call_next: Next) -> Next:
    async def step(call: Call) -> Reply:
        return await stage.handle(call, call_next)

    return step
