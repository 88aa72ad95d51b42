"""Admin API for the routing closed loop, mounted by `spendgate.server.admin` at
`/admin/routing` (behind the admin key):

    GET /admin/routing/adapt    per feature: state (shadow / active / rolled_back), labels
                                learnt, the label window, measured quality vs target,
                                rollbacks — what `routing.adapt` has learnt so far

The handler finds the route stage through `request.app.state.gateway`.
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

__all__ = ["routes"]


def _stage(gateway: Any) -> Any:
    return next((s for s in gateway.pipeline.stages if getattr(s, "name", "") == "route"), None)


async def adapt_status(request: Request) -> Response:
    stage = _stage(request.app.state.gateway)
    payload = {
        "enabled": bool(stage is not None and stage.learners is not None),
        "features": stage.adapt_status() if stage is not None else {},
    }
    return Response(orjson.dumps(payload), media_type="application/json")


routes = [Route("/adapt", adapt_status, methods=["GET"])]
