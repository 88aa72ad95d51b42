"""Admin API for budgets and rate limits, mounted by `spendgate.server.admin` at
`/admin/budgets` (behind the admin key):

    GET    /admin/budgets/          every rule, its source and its live counters this period
    POST   /admin/budgets/          create or replace a dynamic rule (JSON body, as in YAML;
                                    `kind: budget|limit`, or inferred from `limit_usd`)
    GET    /admin/budgets/{name}    one rule
    PUT    /admin/budgets/{name}    create or replace it
    DELETE /admin/budgets/{name}    remove it (config-file rules are read-only: 409)

The handlers find the gateway's `BudgetManager` through `request.app.state.gateway`.
"""

from __future__ import annotations

from typing import Any

import orjson
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from spendgate.budgets.config import Rule
from spendgate.budgets.definitions import rule_from_json, rule_to_json
from spendgate.budgets.manager import BudgetManager
from spendgate.budgets.stage import current_manager
from spendgate.errors import GatewayError

__all__ = ["routes"]


def _json(status: int, payload: Any) -> Response:
    return Response(orjson.dumps(payload), status_code=status, media_type="application/json")


def _error(status: int, message: str, code: str, param: str | None = None) -> Response:
    return _json(status, GatewayError(status, message, param=param, code=code).to_openai())


def _manager(request: Request) -> BudgetManager | None:
    gateway = getattr(request.app.state, "gateway", None)
    if gateway is not None:
        found: BudgetManager | None = gateway.stage_context.budgets
        return found
    return current_manager()


_DISABLED = (
    "Budgets are not enabled on this gateway: add a `budgets:` section to its config "
    "(an empty one is enough to manage rules from here)."
)


async def _view(manager: BudgetManager, rule: Rule) -> dict[str, Any]:
    try:
        usage = await manager.usage(rule)
    except Exception as exc:  # the store is down: still show the rule
        usage = [{"error": str(exc)[:200]}]
    return {
        **rule_to_json(rule),
        "source": manager.source(rule.name),
        "description": rule.describe(),
        "usage": usage,
    }


async def list_rules(request: Request) -> Response:
    manager = _manager(request)
    if manager is None:
        return _error(404, _DISABLED, "budgets_disabled")
    data = [await _view(manager, rule) for rule in manager.rules]
    return _json(200, {"object": "list", "data": data})


async def get_rule(request: Request) -> Response:
    manager = _manager(request)
    if manager is None:
        return _error(404, _DISABLED, "budgets_disabled")
    rule = manager.rule(request.path_params["name"])
    if rule is None:
        return _error(404, f"no rule named {request.path_params['name']!r}", "rule_not_found")
    return _json(200, await _view(manager, rule))


async def put_rule(request: Request) -> Response:
    manager = _manager(request)
    if manager is None:
        return _error(404, _DISABLED, "budgets_disabled")
    try:
        body = orjson.loads(await request.body())
    except orjson.JSONDecodeError as exc:
        return _error(400, f"the body must be a JSON object ({exc})", "invalid_json")
    if not isinstance(body, dict):
        return _error(400, "the body must be a JSON object", "invalid_json")
    name = request.path_params.get("name")
    if name is not None and body.setdefault("name", name) != name:
        return _error(400, "the body's name differs from the URL's", "name_mismatch", "name")
    try:
        rule = rule_from_json(body)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or '(body)'}: {e['msg']}" for e in exc.errors()
        )
        return _error(400, f"invalid rule: {problems}", "invalid_rule")
    except ValueError as exc:
        return _error(400, str(exc), "invalid_rule", "kind")
    existed = manager.rule(rule.name) is not None
    try:
        await run_in_threadpool(manager.set_rule, rule)
    except ValueError as exc:
        return _error(409, str(exc), "rule_read_only", "name")
    return _json(200 if existed else 201, await _view(manager, rule))


async def delete_rule(request: Request) -> Response:
    manager = _manager(request)
    if manager is None:
        return _error(404, _DISABLED, "budgets_disabled")
    name = request.path_params["name"]
    try:
        found = await run_in_threadpool(manager.remove_rule, name)
    except ValueError as exc:
        return _error(409, str(exc), "rule_read_only", "name")
    if not found:
        return _error(404, f"no rule named {name!r}", "rule_not_found")
    return _json(200, {"name": name, "deleted": True})


routes = [
    Route("/", list_rules, methods=["GET"]),
    Route("/", put_rule, methods=["POST"]),
    Route("/{name}", get_rule, methods=["GET"]),
    Route("/{name}", put_rule, methods=["PUT"]),
    Route("/{name}", delete_rule, methods=["DELETE"]),
]
