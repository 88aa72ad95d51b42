"""HTTP routes of the Batch APIs and of deferred calls; the work is `BatchService`'s and
`DeferLane`'s, this module only reads requests and writes answers.

    POST /v1/files               GET /v1/files[/{id}[/content]]   DELETE /v1/files/{id}
    POST /v1/batches             GET /v1/batches[/{id}]           POST /v1/batches/{id}/cancel
    POST /v1/messages/batches    GET /v1/messages/batches[/{id}[/results]]
    POST /v1/messages/batches/{id}/cancel     DELETE /v1/messages/batches/{id}
    GET  /v1/deferred/{id}[?wait=N]

Management calls cost nothing and leave no ledger row unless refused (then one, as for any
refusal); what a batch costs is recorded line by line when it ends.
"""

from __future__ import annotations

from typing import Any, Protocol
from urllib.parse import parse_qs

import orjson

from spendgate.batches.service import BatchService
from spendgate.call import Endpoint, Tags
from spendgate.config import Settings
from spendgate.errors import GatewayError
from spendgate.keys import KeyRecord
from spendgate.server.asgi_io import Receive, Scope, Send, read_body, request_headers, send_whole
from spendgate.server.tags import read_tags
from spendgate.stages import StageContext
from spendgate.state import owner_of

__all__ = ["BATCH_PREFIXES", "BatchHost", "serve_batch_route"]


class BatchHost(Protocol):
    """What these routes use of the gateway (`spendgate.server.app.Gateway`): named here so
    the edge imports this module and not the other way round."""

    settings: Settings
    auth_required: bool
    batches: BatchService
    stage_context: StageContext

    def _authenticate(self, headers: dict[str, str]) -> KeyRecord | None: ...

    def refuse_unrouted(
        self,
        error: GatewayError,
        headers: dict[str, str] | None = None,
        path: str = "",
        endpoint: Endpoint = "other",
        model: str = "",
    ) -> str: ...


BATCH_PREFIXES = ("/v1/files", "/v1/batches", "/v1/messages/batches", "/v1/deferred/")
_JSON = [(b"content-type", b"application/json")]


def _not_found(method: str, path: str) -> GatewayError:
    return GatewayError(404, f"no route for {method} {path}", code="unknown_url")


def _json(raw: bytes) -> dict[str, Any]:
    try:
        body = orjson.loads(raw or b"{}")
    except orjson.JSONDecodeError as exc:
        raise GatewayError(400, f"We could not parse the JSON body of your request ({exc}).",
                           code="invalid_json") from None  # fmt: skip
    if not isinstance(body, dict):
        raise GatewayError(400, "The request body must be a JSON object.", code="invalid_json")
    return body


def _base_url(scope: Scope, headers: dict[str, str]) -> str:
    scheme = headers.get("x-forwarded-proto") or scope.get("scheme") or "http"
    host = headers.get("x-forwarded-host") or headers.get("host") or "localhost"
    return f"{scheme}://{host}"


async def serve_batch_route(gw: BatchHost, scope: Scope, receive: Receive, send: Send) -> None:
    path: str = scope["path"].rstrip("/")
    method: str = scope["method"]
    headers = request_headers(scope)
    anthropic = path.startswith("/v1/messages/")
    endpoint = "files" if path.startswith("/v1/files") else "batches"
    try:
        key = gw._authenticate(headers)
        defaults = key.tags if key is not None else Tags()
        may_set_tenant = key.may_set_tenant if key is not None else not gw.auth_required
        body: dict[str, Any] = {}
        raw = b""
        if method == "POST":
            limit = max(gw.settings.server.max_body_bytes, gw.batches.config.max_file_bytes)
            raw = await read_body(receive, limit)
            if path != "/v1/files":
                body = _json(raw)
        tags = read_tags(headers, body, defaults, may_set_tenant=may_set_tenant)
        owner = owner_of(tags)
        status, payload, ctype, extra = await _route(gw, scope, method, path, headers, owner,
                                                     tags, body, raw)  # fmt: skip
    except GatewayError as exc:
        request_id = gw.refuse_unrouted(exc, headers, path, endpoint)  # type: ignore[arg-type]
        out = [(k.encode(), v.encode()) for k, v in exc.headers.items()]
        out.append((b"x-spendgate-request-id", request_id.encode()))
        err = exc.to_anthropic() if anthropic else exc.to_openai()
        await send_whole(send, exc.status, orjson.dumps(err), [*_JSON, *out])
        return
    data = payload if isinstance(payload, bytes) else orjson.dumps(payload)
    await send_whole(send, status, data, [(b"content-type", ctype), *extra])


async def _route(
    gw: BatchHost,
    scope: Scope,
    method: str,
    path: str,
    headers: dict[str, str],
    owner: str,
    tags: Tags,
    body: dict[str, Any],
    raw: bytes,
) -> tuple[int, Any, bytes, list[tuple[bytes, bytes]]]:
    svc = gw.batches
    json = b"application/json"
    parts = [p for p in path.split("/") if p][1:]  # drop "v1"
    if parts[0] == "deferred":
        lane = gw.stage_context.defer_lane
        if method != "GET" or len(parts) != 2 or lane is None:
            raise _not_found(method, path)
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        try:
            wait = float((query.get("wait") or ["0"])[0])
        except ValueError:
            raise GatewayError(400, "wait must be a number of seconds", param="wait") from None
        status, payload, extra = await lane.fetch(parts[1], owner, wait)
        return status, payload, json, [(k.encode(), v.encode()) for k, v in extra.items()]
    if parts[0] == "files":
        if len(parts) == 1 and method == "POST":
            obj = await svc.upload_file(owner, headers.get("content-type", ""), raw)
            return 200, obj, json, []
        if len(parts) == 1 and method == "GET":
            return 200, await svc.files(owner), json, []
        if len(parts) == 2 and method == "GET":
            return 200, await svc.file(owner, parts[1]), json, []
        if len(parts) == 2 and method == "DELETE":
            return 200, await svc.delete_file(owner, parts[1]), json, []
        if len(parts) == 3 and parts[2] == "content" and method == "GET":
            return 200, await svc.file_content(owner, parts[1]), b"application/octet-stream", []
        raise _not_found(method, path)
    if parts[0] == "batches":
        if len(parts) == 1 and method == "POST":
            return 200, await svc.create_batch(owner, tags, body), json, []
        if len(parts) == 1 and method == "GET":
            data = await svc.batches(owner, "openai")
            return 200, {"object": "list", "data": data, "has_more": False,
                         "first_id": data[0]["id"] if data else None,
                         "last_id": data[-1]["id"] if data else None}, json, []  # fmt: skip
        if len(parts) == 2 and method == "GET":
            return 200, await svc.batch(owner, parts[1]), json, []
        if len(parts) == 3 and parts[2] == "cancel" and method == "POST":
            return 200, await svc.cancel_batch(owner, parts[1]), json, []
        raise _not_found(method, path)
    # /v1/messages/batches
    parts = parts[2:]
    base = _base_url(scope, headers)
    if not parts and method == "POST":
        obj = await svc.create_message_batch(owner, tags, body)
        return 200, _results_url(obj, base), json, []
    if not parts and method == "GET":
        data = [_results_url(o, base) for o in await svc.batches(owner, "anthropic")]
        return 200, {"data": data, "has_more": False,
                     "first_id": data[0]["id"] if data else None,
                     "last_id": data[-1]["id"] if data else None}, json, []  # fmt: skip
    if len(parts) == 1 and method == "GET":
        return 200, _results_url(await svc.batch(owner, parts[0]), base), json, []
    if len(parts) == 1 and method == "DELETE":
        return 200, await svc.delete_message_batch(owner, parts[0]), json, []
    if len(parts) == 2 and parts[1] == "results" and method == "GET":
        return 200, await svc.message_results(owner, parts[0]), b"application/x-jsonl", []
    if len(parts) == 2 and parts[1] == "cancel" and method == "POST":
        return 200, _results_url(await svc.cancel_batch(owner, parts[0]), base), json, []
    raise _not_found(method, path)


def _results_url(obj: dict[str, Any], base: str) -> dict[str, Any]:
    """Point `results_url` at the gateway, which holds the deployment's key."""
    if obj.get("results_url"):
        return {**obj, "results_url": f"{base}/v1/messages/batches/{obj['id']}/results"}
    return obj
