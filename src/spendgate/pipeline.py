"""The stage list every call goes through, in its one fixed order, and the pipeline that
runs it in front of the dispatcher.

    budget → cache → trim → route → prefix → defer → (dispatcher)

Budgets first, so a refused call costs nothing; cache before trim and route, because a hit
needs neither; prefix after them, because prompt-cache breakpoints must see the final
prompt; defer last, so a call sent as a batch is the one every other stage shaped.

The stages are plain imports (`STAGE_BUILDERS`): adding a stage is a new module with a
`build(ctx)` and one line here (docs/pipeline.md). The stage contract (`Stage`, `Next`,
`StageContext`) is in `spendgate.stages`, the dispatcher in `spendgate.dispatch`.

Order of completion callbacks: the dispatcher prices the reply first (innermost), outer
stages see `reply.cost`, and the pipeline writes the ledger event last — exactly once per
call, whatever happened on the way.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import TypeVar

from spendgate.accounting import Accountant
from spendgate.batches import stage as defer_stage
from spendgate.budgets import stage as budget_stage
from spendgate.cache import prefix as prefix_stage
from spendgate.cache import stage as cache_stage
from spendgate.call import Call
from spendgate.dispatch.dispatcher import Dispatcher
from spendgate.errors import GatewayError, internal_error
from spendgate.providers.base import UpstreamError
from spendgate.providers.translate import TranslationError
from spendgate.reply import Reply
from spendgate.routing import stage as route_stage
from spendgate.stages import Next, Stage, StageContext
from spendgate.trim import stage as trim_stage

__all__ = ["STAGE_BUILDERS", "Pipeline", "build_stages"]

log = logging.getLogger(__name__)

S = TypeVar("S")

STAGE_BUILDERS: tuple[Callable[[StageContext], Stage | None], ...] = (
    budget_stage.build,
    cache_stage.build,
    trim_stage.build,
    route_stage.build,
    prefix_stage.build,
    defer_stage.build,
)
"""Each stage module's `build`, in pipeline order (see the module doc for why this order)."""


def build_stages(ctx: StageContext) -> list[Stage]:
    """The stages these settings turn on, in order."""
    return [stage for build in STAGE_BUILDERS if (stage := build(ctx)) is not None]


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

    def find(self, kind: type[S]) -> S | None:
        """The stage of this class, if it is on (for the admin API and tests)."""
        return next((s for s in self.stages if isinstance(s, kind)), None)

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
