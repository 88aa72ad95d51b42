"""The admin API: reports and exports over the ledger, behind the admin key.

The edge hands every request under `/admin` and `/dashboard` to `build_admin(gateway)`.
This is a Starlette app (unlike the raw-ASGI edge): it is off the hot path, and a route
table with query parsing is what it needs. Other packages plug in: `spendgate.budgets.admin`
(a list `routes`) is mounted at `/admin/budgets`, `spendgate.routing.admin` at
`/admin/routing`, and `spendgate.server.dashboard` (`routes`, `public_paths`) at the root.

It sees the gateway through `AdminHost` (what it reads), not the `Gateway` class, so the
edge can import this module without this module importing the edge.

Auth, decided once here:
- the admin key is the value of the environment variable named by
  `server.admin_key_env` (default `SPENDGATE_ADMIN_KEY`); send it as
  `Authorization: Bearer KEY`. Only as a header: no cookie opens the admin API, so a page on
  another site can't make a logged-in browser change budgets (CSRF). The dashboard's
  session cookie is scoped to `/dashboard` and opens only that.
  A missing or wrong key is a 401, OpenAI-style.
- no admin key configured → 403 on every admin path, saying how to set one — unless
  `server.auth` is `off`, the explicit "no auth anywhere" development mode, where the admin
  API is open too (a gateway that lets anyone spend lets anyone read the bill).
- virtual keys never open the admin API: they are for spending, not for reading everyone's
  spend.

Queries run in a worker thread so a long report never stalls the gateway's event loop.
"""

from __future__ import annotations

import hmac
import io
import os
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Protocol

import orjson
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route

from spendgate.analytics import reports
from spendgate.analytics.config import FeaturesConfig
from spendgate.analytics.tiers import TierClassifier
from spendgate.budgets import admin as budgets_admin
from spendgate.config import Settings
from spendgate.errors import GatewayError
from spendgate.ledger import DIMENSIONS, LedgerStore, csv_text, parse_when
from spendgate.pricing import PriceCatalog
from spendgate.routing import admin as routing_admin
from spendgate.server import dashboard

__all__ = ["FORMATS", "AdminHost", "build_admin"]


class AdminHost(Protocol):
    """What the admin API reads from the gateway (`spendgate.server.app.Gateway`)."""

    settings: Settings
    store: LedgerStore
    catalog: PriceCatalog


FORMATS = ("json", "csv", "parquet")

_COMMON = {"since", "until", "format"}


def _error(exc: GatewayError) -> Response:
    return Response(
        orjson.dumps(exc.to_openai()),
        status_code=exc.status,
        media_type="application/json",
        headers=exc.headers,
    )


class _Params:
    """Query parameters of one report: known names only, each error naming its param."""

    def __init__(self, request: Request, allowed: set[str]) -> None:
        self.raw = request.query_params
        for name in self.raw:
            if name not in allowed and name not in DIMENSIONS:
                raise GatewayError(
                    400,
                    f"Unknown query parameter {name!r}. Allowed: "
                    f"{', '.join(sorted(allowed))}, or a filter on one of "
                    f"{', '.join(DIMENSIONS)}.",
                    param=name,
                    code="unknown_parameter",
                )
        self.filters = {d: self.raw[d] for d in DIMENSIONS if d in self.raw}
        fmt = self.raw.get("format", "json")
        if fmt not in FORMATS:
            raise GatewayError(400, f"format must be one of {', '.join(FORMATS)}", param="format")
        self.format = fmt

    def window(self) -> reports.Window:
        now = datetime.now(UTC)
        since = self._when("since", now, end=False)
        until = self._when("until", now, end=True)
        if since and until and since >= until:
            raise GatewayError(400, "since must be before until", param="since")
        return reports.Window(since, until)

    def _when(self, name: str, now: datetime, *, end: bool) -> datetime | None:
        text = self.raw.get(name)
        if not text:
            return None
        try:
            return parse_when(text, end=end, now=now)
        except ValueError as exc:
            raise GatewayError(400, str(exc), param=name) from None

    def by(self, default: str) -> list[str]:
        text = self.raw.get("by", default)
        dims = [d.strip() for d in text.split(",") if d.strip()]
        for d in dims:
            if d not in DIMENSIONS:
                raise GatewayError(
                    400,
                    f"unknown report dimension {d!r}; allowed: {', '.join(DIMENSIONS)}",
                    param="by",
                )
        return dims


def _csv_value(value: Any) -> Any:
    if isinstance(value, list | tuple):
        return ";".join(str(v) for v in value)
    if isinstance(value, dict):
        return orjson.dumps(value).decode()
    return "" if value is None else value


def _columns(rows: Sequence[dict[str, Any]]) -> list[str]:
    cols: list[str] = []
    for row in rows:
        for k in row:
            if k not in cols:
                cols.append(k)
    return cols


def _csv(rows: Sequence[dict[str, Any]]) -> bytes:
    cells = [{k: _csv_value(v) for k, v in row.items()} for row in rows]
    return csv_text(cells, _columns(rows)).encode()


def _parquet(rows: Sequence[dict[str, Any]]) -> bytes:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise GatewayError(
            501,
            "Parquet export needs pyarrow: pip install 'pyarrow>=15' (or use format=csv).",
            param="format",
            code="parquet_unavailable",
        ) from None
    cols = _columns(rows)
    arrays = {}
    for col in cols:
        values = [row.get(col) for row in rows]
        if col.endswith("_usd"):
            # Exact money: decimal128 with 9 places, never float.
            arrays[col] = pa.array(
                [None if v is None else Decimal(v) for v in values], type=pa.decimal128(38, 9)
            )
        elif any(isinstance(v, list | dict) for v in values):
            arrays[col] = pa.array([None if v is None else _csv_value(v) for v in values])
        else:
            arrays[col] = pa.array(values)
    sink = io.BytesIO()
    pq.write_table(pa.table(arrays) if cols else pa.table({}), sink)
    return sink.getvalue()


def _render(doc: dict[str, Any], fmt: str, name: str) -> Response:
    if fmt == "json":
        return Response(orjson.dumps(doc), media_type="application/json")
    rows = doc.get("rows", [])
    if fmt == "csv":
        return Response(
            _csv(rows),
            media_type="text/csv; charset=utf-8",
            headers={"content-disposition": f'attachment; filename="{name}.csv"'},
        )
    return Response(
        _parquet(rows),
        media_type="application/vnd.apache.parquet",
        headers={"content-disposition": f'attachment; filename="{name}.parquet"'},
    )


class _Admin:
    """Route handlers bound to one gateway."""

    def __init__(self, gateway: AdminHost) -> None:
        self.gateway = gateway
        self.tiers = TierClassifier(gateway.catalog)

    @property
    def features(self) -> FeaturesConfig:
        return self.gateway.settings.features

    async def _run(
        self, request: Request, allowed: set[str], name: str, work: Callable[[_Params], Any]
    ) -> Response:
        try:
            params = _Params(request, allowed | _COMMON)
            doc = await run_in_threadpool(work, params)
            return _render(doc, params.format, name)
        except GatewayError as exc:
            return _error(exc)
        except ValueError as exc:
            return _error(GatewayError(400, str(exc)))

    async def index(self, request: Request) -> Response:
        return Response(
            orjson.dumps(
                {
                    "endpoints": {
                        "/admin/spend": "spend by dimensions (by, since, until, filters)",
                        "/admin/unit-economics": "cost per request and per active user (month)",
                        "/admin/trends": "spend by model tier over time (bucket)",
                        "/admin/system-prompt": "share of input spend that is system prompt",
                        "/admin/savings": "savings by technique",
                        "/admin/features/economics": "feature cost vs value (month)",
                    },
                    "formats": list(FORMATS),
                    "dimensions": list(DIMENSIONS),
                }
            ),
            media_type="application/json",
        )

    def report_route(
        self, path: str, allowed: set[str], name: str, work: Callable[[_Admin, _Params], Any]
    ) -> Route:
        """A GET report: its query parameters (`allowed` plus the common ones) checked, the
        report built off the event loop, rendered in the requested format."""

        async def endpoint(request: Request) -> Response:
            return await self._run(request, allowed, name, lambda p: work(self, p))

        return Route(path, endpoint)

    # ---- the reports (each runs in a worker thread)
    def spend(self, p: _Params) -> Any:
        return reports.spend_report(self.gateway.store, p.by("feature"), p.window(), p.filters)

    def unit_economics(self, p: _Params) -> Any:
        by = p.by("feature")
        if len(by) != 1:
            raise GatewayError(400, "by takes exactly one dimension here", param="by")
        month = p.raw.get("month")
        return reports.unit_economics(self.gateway.store, self.features, month, p.filters, by=by[0])

    def trends(self, p: _Params) -> Any:
        bucket = p.raw.get("bucket", "day")
        return reports.tier_trends(self.gateway.store, self.tiers, p.window(), p.filters, bucket)

    def system_prompt(self, p: _Params) -> Any:
        store = self.gateway.store
        return reports.system_prompt_report(store, p.by("feature"), p.window(), p.filters)

    def savings(self, p: _Params) -> Any:
        return reports.savings_report(self.gateway.store, p.by(""), p.window(), p.filters)

    def economics(self, p: _Params) -> Any:
        month = p.raw.get("month")
        return reports.feature_economics(self.gateway.store, self.features, month, p.filters)


_REPORTS: list[tuple[str, set[str], str, Callable[[_Admin, _Params], Any]]] = [
    ("/admin/spend", {"by"}, "spend", _Admin.spend),
    ("/admin/unit-economics", {"by", "month"}, "unit-economics", _Admin.unit_economics),
    ("/admin/trends", {"bucket"}, "trends", _Admin.trends),
    ("/admin/system-prompt", {"by"}, "system-prompt", _Admin.system_prompt),
    ("/admin/savings", {"by"}, "savings", _Admin.savings),
    ("/admin/features/economics", {"month"}, "feature-economics", _Admin.economics),
]
"""(path, its own query parameters, the report's name in downloads, how to build it)."""


class _AdminAuth:
    """ASGI wrapper: the admin key (or the documented open/closed modes) before any route."""

    def __init__(self, app: Any, key: str | None, open_: bool, env: str | None, public: set[str]):
        self.app = app
        self.key = key.encode() if key else None
        self.open = open_
        self.env = env or "SPENDGATE_ADMIN_KEY"
        self.public = public

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] in self.public:
            await self.app(scope, receive, send)
            return
        refusal = self._check(scope)
        if refusal is None:
            await self.app(scope, receive, send)
        else:
            await _error(refusal)(scope, receive, send)

    def _check(self, scope: Any) -> GatewayError | None:
        if self.key is None:
            if self.open:
                return _writes_are_json(scope)
            return GatewayError(
                403,
                f"The admin API is disabled: no admin key is configured. Set the environment "
                f"variable {self.env} (server.admin_key_env) to a secret, restart, and send "
                f"it as `Authorization: Bearer KEY`.",
                type="permission_error",
                code="admin_key_not_configured",
            )
        token = b""
        for name, value in scope.get("headers", ()):
            if name == b"authorization" and value[:7].lower() == b"bearer ":
                token = value[7:].strip()
            elif name == b"x-api-key" and not token:
                token = value.strip()
        if token and hmac.compare_digest(token, self.key):
            return _writes_are_json(scope)
        return GatewayError(
            401,
            "The admin API needs the admin key: send `Authorization: Bearer KEY` with the "
            f"value of {self.env}."
            if not token
            else "Incorrect admin key.",
            type="authentication_error",
            code="missing_admin_key" if not token else "invalid_admin_key",
            headers={"www-authenticate": "Bearer"},
        )


def _writes_are_json(scope: Any) -> GatewayError | None:
    """A body sent to the admin API must be JSON: a cross-site form can't send
    `application/json` without a CORS preflight, which this API never grants."""
    if scope.get("method") in ("GET", "HEAD", "OPTIONS"):
        return None
    media = None
    has_body = False
    for name, value in scope.get("headers", ()):
        if name == b"content-type":
            media = value.split(b";")[0].strip().lower()
        elif name == b"content-length":
            has_body = value.strip() not in (b"", b"0")
        elif name == b"transfer-encoding":
            has_body = True
    if media == b"application/json" or (media is None and not has_body):
        return None
    return GatewayError(
        415,
        "Admin writes take a JSON body: send `Content-Type: application/json`.",
        code="unsupported_media_type",
    )


def build_admin(gateway: AdminHost) -> Any:
    """The ASGI app for `/admin/*` and `/dashboard*`, wrapped in the admin-key check."""
    admin = _Admin(gateway)
    routes: list[BaseRoute] = [
        Route("/admin", admin.index),
        Route("/admin/", admin.index),
        *(admin.report_route(*report) for report in _REPORTS),
    ]
    routes.append(Mount("/admin/budgets", routes=list(budgets_admin.routes)))
    routes.append(Mount("/admin/routing", routes=list(routing_admin.routes)))
    routes.extend(dashboard.routes)
    public = set(dashboard.public_paths)

    async def not_found(request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 404
        method, path = request.method, request.url.path
        return _error(
            GatewayError(
                status,
                f"no admin route for {method} {path}"
                if status == 404
                else f"{method} is not allowed on {path}",
                code="unknown_url" if status == 404 else "method_not_allowed",
            )
        )

    app = Starlette(routes=routes, exception_handlers={404: not_found, 405: not_found})
    app.state.gateway = gateway
    server = gateway.settings.server
    env = server.admin_key_env
    key = os.environ.get(env) if env else None
    return _AdminAuth(app, key or None, server.auth == "off", env, public)
