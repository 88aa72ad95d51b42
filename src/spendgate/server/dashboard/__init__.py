"""`GET /dashboard`: the spend dashboard, as Starlette routes the admin app mounts.

`routes` serves the page, its static assets (Chart.js vendored locally — the gateway may
have no internet), a login form and one JSON endpoint, `/dashboard/api/summary`, that
computes the whole view from `gateway.store`. Handlers find the gateway at
`request.app.state.gateway`, which the mounting app sets; `build_dashboard(gateway)` makes a
standalone app for a gateway with no admin app.

Access: see `spendgate.server.dashboard.auth` (admin key as header, `?key=` once → cookie,
or the login form).
"""

from __future__ import annotations

import asyncio
import hmac
import html
import time
from datetime import UTC, datetime
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, urlencode

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from spendgate.analytics.tiers import TierClassifier
from spendgate.errors import GatewayError
from spendgate.ledger import parse_when
from spendgate.server.dashboard import auth
from spendgate.server.dashboard.data import FILTER_DIMENSIONS, Query, summary
from spendgate.server.dashboard.sources import budget_rows, budgets_for

__all__ = ["build_dashboard", "parse_query", "public_paths", "routes"]

_STATIC = resources.files("spendgate.server.dashboard") / "static"
_ASSETS: dict[str, str] = {
    "chart.umd.min.js": "text/javascript; charset=utf-8",
    "chart.js.LICENSE.md": "text/plain; charset=utf-8",
    "dashboard.js": "text/javascript; charset=utf-8",
    "dashboard.css": "text/css; charset=utf-8",
}
_SECURITY_HEADERS = {
    # Everything is served from here; nothing may be pulled from elsewhere.
    "content-security-policy": "default-src 'self'; img-src 'self' data:; "
    "style-src 'self'; script-src 'self'; frame-ancestors 'none'",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
}
_ALL_TIME = "all"


def _gateway(request: Request) -> Any:
    gateway = getattr(request.app.state, "gateway", None)
    if gateway is None:
        raise GatewayError(500, "dashboard mounted without app.state.gateway",
                           type="server_error", code="internal_error")  # fmt: skip
    return gateway


def _key(request: Request) -> str | None:
    return auth.admin_key(_gateway(request).settings.server.admin_key_env)


def _open(request: Request) -> bool:
    """No admin key and `server.auth: off`: the explicit no-auth development mode."""
    return _gateway(request).settings.server.auth == "off"


def _env(request: Request) -> str:
    return _gateway(request).settings.server.admin_key_env or "SPENDGATE_ADMIN_KEY"


def _disabled(request: Request) -> GatewayError:
    return GatewayError(
        403,
        f"The dashboard is disabled: no admin key is configured. Set the environment variable "
        f"{_env(request)} (server.admin_key_env) to a secret and restart.",
        type="permission_error",
        code="admin_key_not_configured",
    )


def _access(request: Request) -> GatewayError | None:
    """None when the request may see the data, else the refusal."""
    key = _key(request)
    if key is None:
        return None if _open(request) else _disabled(request)
    if auth.is_authorized(key, request.headers, request.cookies, _gateway(request).sessions):
        return None
    return GatewayError(
        401,
        "The dashboard needs the admin key: send `Authorization: Bearer KEY`, or log in at "
        "/dashboard.",
        type="authentication_error",
        code="missing_admin_key",
    )


def _error(exc: GatewayError) -> JSONResponse:
    return JSONResponse(exc.to_openai(), status_code=exc.status, headers=exc.headers or None)


def _start_session(response: Response, key: str, request: Request) -> None:
    session = _gateway(request).sessions.create(key)
    response.set_cookie(
        auth.COOKIE,
        session.token,
        max_age=int(session.expires_at - time.time()),
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path=auth.COOKIE_PATH,
    )


def _cross_site(request: Request) -> Response | None:
    """Login and logout change state: refuse them from another site's page."""
    if auth.same_origin(request.headers):
        return None
    return _error(
        GatewayError(
            403,
            "Cross-site request refused: log in from this gateway's own /dashboard page.",
            type="permission_error",
            code="cross_site_request",
        )
    )


def _asset(name: str) -> str:
    return (_STATIC / name).read_text(encoding="utf-8")


def _page(template: str, **values: str) -> str:
    html = _asset(template)
    for name, value in values.items():
        html = html.replace("{{" + name + "}}", value)
    return html


def _login(error: str = "", status: int = 401) -> HTMLResponse:
    message = f'<p class="login-error">{html.escape(error)}</p>' if error else ""
    return HTMLResponse(_page("login.html", error=message), status_code=status,
                        headers=_SECURITY_HEADERS)  # fmt: skip


def _setup(request: Request) -> HTMLResponse:
    """No admin key is configured: a login form would ask for a key that doesn't exist, so
    say how to set one instead."""
    env = html.escape(_env(request))
    return HTMLResponse(_page("setup.html", env=env), status_code=403, headers=_SECURITY_HEADERS)


def _offered_ok(key: str, offered: str) -> bool:
    return hmac.compare_digest(offered.encode(), key.encode())


async def page(request: Request) -> Response:
    """The dashboard, or the login form; `?key=` logs in and drops the key from the URL."""
    key = _key(request)
    offered = request.query_params.get("key")
    if key is not None and offered is not None:
        if not _offered_ok(key, offered):
            return _login("That is not the admin key.")
        rest = {k: v for k, v in request.query_params.items() if k != "key"}
        target = request.url.path + (("?" + urlencode(rest)) if rest else "")
        response = RedirectResponse(target, status_code=303)
        _start_session(response, key, request)
        return response
    refusal = _access(request)
    if refusal is not None:
        if refusal.code == "admin_key_not_configured":
            return _setup(request)
        if refusal.status == 401:
            return _login(status=401)
        return _login(refusal.message, status=refusal.status)
    banner = (
        ""
        if key is not None
        else (
            f'<div class="banner">No admin key is set ({html.escape(_env(request))}) and '
            "server.auth is off: this dashboard is open to anyone who can reach this port.</div>"
        )
    )
    return HTMLResponse(_page("dashboard.html", banner=banner), headers=_SECURITY_HEADERS)


async def login(request: Request) -> Response:
    refused = _cross_site(request)
    if refused is not None:
        return refused
    key = _key(request)
    if key is None:
        return RedirectResponse("/dashboard", status_code=303)
    # Parsed by hand: Starlette's form parser needs python-multipart for a one-field form.
    body = (await request.body())[:4096].decode("utf-8", "replace")
    offered = (parse_qs(body).get("key") or [""])[0]
    if not _offered_ok(key, offered):
        return _login("That is not the admin key.")
    response = RedirectResponse("/dashboard", status_code=303)
    _start_session(response, key, request)
    return response


async def logout(request: Request) -> Response:
    """Ends the session on the server (every replica sharing the key store), not only in
    this browser."""
    refused = _cross_site(request)
    if refused is not None:
        return refused
    _gateway(request).sessions.revoke(request.cookies.get(auth.COOKIE))
    response = RedirectResponse("/dashboard", status_code=303)
    response.delete_cookie(auth.COOKIE, path=auth.COOKIE_PATH)
    return response


async def static(request: Request) -> Response:
    name = request.path_params["name"]
    kind = _ASSETS.get(name)
    if kind is None:
        return _error(GatewayError(404, f"no dashboard asset {name!r}", code="unknown_url"))
    return Response(_asset(name), media_type=kind,
                    headers={"cache-control": "public, max-age=300"})  # fmt: skip


def parse_query(params: Any, now: datetime) -> Query:
    """Range and filters from query parameters; bad input is a 400 naming the parameter."""
    since_text = params.get("since", "7d")
    until_text = params.get("until")
    try:
        since = None if since_text in (_ALL_TIME, "") else parse_when(since_text, now=now)
    except ValueError as exc:
        raise GatewayError(400, str(exc), param="since", code="invalid_time") from None
    try:
        until = parse_when(until_text, end=True, now=now) if until_text else now
    except ValueError as exc:
        raise GatewayError(400, str(exc), param="until", code="invalid_time") from None
    if since is not None and since >= until:
        raise GatewayError(400, "`since` must be before `until`", param="since",
                           code="invalid_time")  # fmt: skip
    filters: dict[str, str] = {}
    for name in FILTER_DIMENSIONS:
        value = params.get(name)
        if value:
            if len(value) > 256:
                raise GatewayError(400, f"filter `{name}` is too long", param=name)
            filters[name] = value
    return Query(since=since, until=until, filters=filters)


def _compute(gateway: Any, q: Query, budgets: list[dict[str, Any]] | None) -> dict[str, Any]:
    started = time.perf_counter()
    result = summary(
        gateway.store,
        TierClassifier(gateway.catalog),
        q,
        budgets=budgets,
        features=gateway.settings.features,
        catalog=gateway.catalog,
    )
    alerts = gateway.stage_context.alerts
    result["alerts"] = alerts.recent_json() if alerts is not None else None
    result["admin_key_required"] = auth.admin_key(gateway.settings.server.admin_key_env) is not None
    result["computed_ms"] = round((time.perf_counter() - started) * 1000, 1)
    return result


async def api_summary(request: Request) -> Response:
    """Everything the page draws for one range + filter set, as JSON."""
    try:
        refusal = _access(request)
        if refusal is not None:
            raise refusal
        gateway = _gateway(request)
        q = parse_query(request.query_params, datetime.now(UTC))
        try:
            # Ledger reads are blocking SQL; keep them off the event loop serving calls.
            budgets = budgets_for(await budget_rows(gateway), q.filters)
            result = await asyncio.to_thread(_compute, gateway, q, budgets)
        except ValueError as exc:
            raise GatewayError(400, str(exc), code="invalid_filter") from None
    except GatewayError as exc:
        return _error(exc)
    return JSONResponse(result, headers={"cache-control": "no-store"})


routes: list[BaseRoute] = [
    Route("/dashboard", page, methods=["GET"]),
    Route("/dashboard/", page, methods=["GET"]),
    Route("/dashboard/login", login, methods=["POST"]),
    Route("/dashboard/logout", logout, methods=["POST"]),
    Route("/dashboard/static/{name}", static, methods=["GET"]),
    Route("/dashboard/api/summary", api_summary, methods=["GET"]),
]

public_paths: set[str] = {
    "/dashboard",
    "/dashboard/",
    "/dashboard/login",
    "/dashboard/logout",
    "/dashboard/api/summary",
    *(f"/dashboard/static/{name}" for name in _ASSETS),
}
"""Paths the admin app lets through without its key check: the page must be able to show
a login form, and these handlers check the key themselves (header, cookie or `?key=`)."""


def build_dashboard(gateway: Any) -> Starlette:
    """A standalone app serving only the dashboard (when no admin app mounts it)."""
    app = Starlette(routes=list(routes))
    app.state.gateway = gateway
    return app
