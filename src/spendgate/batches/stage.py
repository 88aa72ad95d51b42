"""The `defer` stage: last before the dispatcher, it sends calls that can wait to the
deferral lane (`spendgate.batches.lane`) instead of a live upstream call."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from spendgate.batches.config import BatchesConfig
from spendgate.batches.lane import DeferLane
from spendgate.call import Call, Decision
from spendgate.reply import Reply
from spendgate.stages import Next, StageContext

__all__ = ["DeferDecision", "DeferStage", "build"]


@dataclass
class DeferDecision(Decision):
    """The call went to the deferral lane (why, and which deployment's batch API)."""

    key: ClassVar[str] = "defer"
    reason: str
    deployment: str


class DeferStage:
    name = "defer"

    def __init__(self, lane: DeferLane, ctx: StageContext) -> None:
        self.lane = lane
        self.ctx = ctx

    async def handle(self, call: Call, call_next: Next) -> Reply:
        reason = self.lane.wants(call)
        if reason is None:
            return await call_next(call)
        deps = self.ctx.table.serving(call.model)
        if not deps:
            return await call_next(call)  # the dispatcher's 404
        call.decisions.add(DeferDecision(reason=reason, deployment=deps[0].name))
        return await self.lane.enqueue(call, deps[0], reason)


def build(ctx: StageContext) -> DeferStage | None:
    """On whenever the gateway keeps state (the lane's queue lives there) and
    `batches.defer.enabled` is not false."""
    config: BatchesConfig = ctx.settings.batches
    state = ctx.state
    if state is None or not config.defer.enabled:
        return None
    lane = DeferLane(
        state=state,
        config=config.defer,
        pricer=ctx.pricer,
        features=ctx.settings.features,
    )
    ctx.defer_lane = lane
    return DeferStage(lane, ctx)
