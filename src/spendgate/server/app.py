"""The HTTP edge: a small ASGI app in front of the pipeline.

It authenticates, bounds and parses the body, validates, reads tags, builds the `Call`,
and turns the `Reply` into HTTP — nothing else. It is raw ASGI rather than a framework
route table because it has six routes and sits on every request's critical path.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import orjson

from spendgate.accounting import Accountant, cost_header
from spendgate.alerts import service as alerts_service
from spendgate.batches.service import BatchService
from spendgate.batches.upstream import Upstream
from spendgate.call import API, Call, Endpoint, Tags
from spendgate.config import Settings
from spendgate.dispatch.dispatcher import Dispatcher
from spendgate.dispatch.table import ModelTable
from spendgate.errors import GatewayError, internal_error
from spendgate.keys import KeyRecord, KeyStore
from spendgate.ledger import BatchingWriter, LedgerStore, open_ledger
from spendgate.ledger.prompts import PromptLog
from spendgate.ledger.spool import open_spool
from spendgate.metrics import Metrics
from spendgate.pipeline import Pipeline, build_stages
from spendgate.pricing import PriceCatalog, Pricer
from spendgate.providers.base import UpstreamHTTP
from spendgate.providers.dialects import dialect_for
from spendgate.providers.translate import TranslationError
from spendgate.reply import Reply
from spendgate.server.admin import build_admin
from spendgate.server.asgi_io import (
    Receive,
    Scope,
    Send,
    read_body,
    request_headers,
    send_whole,
    too_large,
)
from spendgate.server.batches import BATCH_PREFIXES, serve_batch_route
from spendgate.server.count_tokens import count_message_tokens, count_response_tokens
from spendgate.server.openapi import openapi_document
from spendgate.server.responses import (
    Chained,
    ResponsesService,
    not_found,
    validate_responses,
)
from spendgate.server.sessions import SessionStore
from spendgate.server.tags import TagGuard, read_tags
from spendgate.server.validate import validate_chat, validate_embeddings, validate_messages
from spendgate.stages import Stage, StageContext
from spendgate.state import open_state, owner_of, state_url

__all__ = ["Gateway", "build_gateway"]

log = logging.getLogger(__package__)  # "spendgate.server"


KEY_CACHE_SECONDS = 30.0
_LIMIT_SETTING = "server.max_body_bytes"
KEY_REVISION_POLL_SECONDS = 0.25
"""How often the key cache asks the key store whether any key was created or revoked (by the
CLI, the admin API or another replica): the bound on how long a revoked key keeps working."""
_JSON = [(b"content-type", b"application/json")]
_SSE = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]

_ROUTES: dict[str, tuple[Endpoint, API]] = {
    "/v1/chat/completions": ("chat", "openai"),
    "/chat/completions": ("chat", "openai"),
    "/v1/messages": ("messages", "anthropic"),
    "/v1/embeddings": ("embeddings", "openai"),
    "/embeddings": ("embeddings", "openai"),
    "/v1/responses": ("responses", "responses"),
    "/responses": ("responses", "responses"),
}
_VALIDATORS = {
    "chat": validate_chat,
    "messages": validate_messages,
    "embeddings": validate_embeddings,
    "responses": validate_responses,
}


class Gateway:
    """Everything one gateway process holds; `gateway` itself is the ASGI app."""

    def __init__(
        self,
        settings: Settings,
        *,
        store: LedgerStore | None = None,
        stages: list[Stage] | None = None,
        catalog: PriceCatalog | None = None,
    ) -> None:
        self.settings = settings
        self._owns_store = store is None
        self.store = store or open_ledger(settings.storage.ledger)
        self.writer = _open_writer(settings, self.store, spooled=self._owns_store)
        self.metrics = Metrics()
        self.metrics.watch("spendgate_ledger", self.writer.stats)
        self.catalog = catalog or settings.price_catalog()
        self.table = ModelTable(settings.build_deployments())
        self.http = UpstreamHTTP()
        self.pricer = Pricer(self.catalog, self.table.deployments.values())
        self.accountant = Accountant(
            self.pricer, self.writer, self.metrics, PromptLog.from_settings(settings.ledger)
        )
        self.state = open_state(state_url(settings.storage.ledger, settings.storage.state))
        self.stage_context = StageContext(
            settings=settings,
            catalog=self.catalog,
            pricer=self.pricer,
            table=self.table,
            metrics=self.metrics,
            store=self.store,
            accountant=self.accountant,
            state=self.state,
        )
        self.pipeline = Pipeline(
            build_stages(self.stage_context) if stages is None else stages,
            Dispatcher(self.table, self.http, self.accountant),
            self.accountant,
        )
        self.stage_context.run_internal = self.pipeline.run
        self.stage_context.record = self.accountant.record
        self._build_services(settings)
        self._build_edge(settings)

    def _build_services(self, settings: Settings) -> None:
        """What runs beside the pipeline: the batch service (and the deferral lane it
        completes), the admin app, and extensions with a start/stop (the alerts loop)."""
        lane = self.stage_context.defer_lane
        if lane is not None:
            lane.accountant = self.accountant
        self.batches = BatchService(
            config=settings.batches,
            state=self.state,
            table=self.table,
            upstream=Upstream(self.http),
            accountant=self.accountant,
            lane=lane,
        )
        self.admin = build_admin(self)
        alerts = alerts_service.install(self)
        self.extensions: list[Any] = [self.batches, *([alerts] if alerts is not None else [])]
        """Started by the ASGI lifespan, stopped before the ledger flush."""
        self.responses = ResponsesService(self.state, settings.responses)

    def _build_edge(self, settings: Settings) -> None:
        """The edge's own state: virtual keys (cached, revocation polled), sessions, tags."""
        declared = [
            KeyRecord(id=k.name, name=k.name, hash=k.hash, team=k.team, feature=k.feature,
                      use_case=k.use_case, tenant=k.tenant, user=k.user,
                      may_set_tenant=k.may_set_tenant)
            for k in settings.keys
        ]  # fmt: skip
        self.keys = KeyStore(settings.storage.keys, declared)
        self.sessions = SessionStore(settings.storage.keys)
        self.auth_required = settings.server.auth == "required" or (
            settings.server.auth == "auto" and self.keys.any()
        )
        self.tag_guard = TagGuard(settings.tags.max_values)
        self._auth_checked_until = time.monotonic() + KEY_CACHE_SECONDS
        self._key_cache: dict[str, tuple[KeyRecord | None, float]] = {}
        self._key_revision = self.keys.revision()
        self._key_revision_checked = time.monotonic()
        self._closed = False
        self._warm: asyncio.Future[Any] | None = None
        """Tokenizers loading in a worker thread after start-up; calls wait for it (off the
        event loop) and /healthz answers 503 "starting" until it is done."""

    # ---------------------------------------------------------------- lifecycle
    async def aclose(self) -> None:
        """Graceful shutdown: stop talking upstream, then flush every ledger event."""
        if self._closed:
            return
        self._closed = True
        for ext in self.extensions:
            await ext.stop()
        await self.http.close()
        await self.responses.drain()
        for stage in self.pipeline.stages:  # stages with work in flight (budget settlements)
            stage_close = getattr(stage, "aclose", None)
            if stage_close is not None:
                await stage_close()
        grace = self.settings.ledger.shutdown_grace_s if self.writer.spooled else None
        await asyncio.to_thread(self.writer.close, grace)
        if self._owns_store:
            self.store.close()
        self.keys.close()
        self.sessions.close()
        self.state.close()

    # ---------------------------------------------------------------- ASGI
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await self._lifespan(receive, send)
            return
        if kind != "http":
            return
        path: str = scope["path"]
        method: str = scope["method"]
        route = _ROUTES.get(path)
        if route is not None:
            refusal = None
            if method != "POST":
                # Still a call: it gets a request id and its ledger row like any other refusal.
                refusal = GatewayError(
                    405,
                    f"{method} is not allowed on {path}; use POST",
                    code="method_not_allowed",
                    headers={"allow": "POST"},
                )
            await self._serve_call(scope, receive, send, *route, refusal=refusal)
        elif method == "GET" and path in ("/v1/models", "/models"):
            await _send_json(send, 200, self._models())
        elif method == "GET" and path == "/healthz":
            await self._health(send)
        elif method == "GET" and path == "/openapi.json":
            await _send_json(send, 200, openapi_document(self.table.models()))
        elif method == "GET" and path == "/metrics":
            await send_whole(send, 200, self.metrics.render(), [(b"content-type", b"text/plain")])
        elif path == "/v1/messages/count_tokens":
            count = functools.partial(count_message_tokens, table=self.table, http=self.http)
            await self._serve_count(scope, receive, send, "anthropic", count)
        elif path in ("/v1/responses/input_tokens", "/responses/input_tokens"):
            count = functools.partial(count_response_tokens, table=self.table)
            await self._serve_count(scope, receive, send, "responses", count)
        elif path.startswith(BATCH_PREFIXES):
            await serve_batch_route(self, scope, receive, send)
        elif path.startswith(("/v1/responses/", "/responses/")):
            await self._serve_response(scope, receive, send)
        elif self.admin is not None and path.startswith(("/admin", "/dashboard")):
            await self.admin(scope, receive, send)
        else:
            error = GatewayError(404, f"no route for {method} {path}", code="unknown_url")
            request_id = self.refuse_unrouted(error, request_headers(scope), path)
            headers = [*_JSON, (b"x-spendgate-request-id", request_id.encode())]
            await send_whole(send, 404, orjson.dumps(error.to_openai()), headers)

    async def _health(self, send: Send) -> None:
        """200 `{"status": "ok"}` once the gateway can answer without a start-up stall;
        503 `{"status": "starting"}` (with `retry-after`) while its tokenizers load."""
        warm = self._warm
        if warm is not None and not warm.done():
            body = {"status": "starting", "ledger": self.writer.stats()}
            await send_whole(send, 503, orjson.dumps(body), [*_JSON, (b"retry-after", b"1")])
            return
        body = {"status": "ok", "ledger": self.writer.stats()}
        if warm is not None and warm.exception() is not None:
            body["tokenizers"] = f"failed to preload: {warm.exception()}"
        await _send_json(send, 200, body)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                from spendgate.tokens import warm_up

                # Tokenizer tables only where exact counts are used (the trim stage)
                exact = {s.name for s in self.pipeline.stages} & {"trim"}
                self._warm = asyncio.get_running_loop().run_in_executor(
                    None, functools.partial(warm_up, exact=bool(exact)),
                    self.table.models(),
                )  # fmt: skip
                for ext in self.extensions:
                    await ext.start()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    # ---------------------------------------------------------------- calls
    async def _serve_call(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        endpoint: Endpoint,
        api: API,
        *,
        refusal: GatewayError | None = None,
    ) -> None:
        headers = request_headers(scope)
        call = Call(endpoint=endpoint, api=api, body={}, requested_model="", headers=headers)
        owner: str | None = None
        self.metrics.in_flight.inc()
        try:
            warm = self._warm
            if warm is not None and not warm.done():
                await asyncio.wait([warm])  # tokenizers still loading: wait off the loop
            try:
                if refusal is not None:
                    raise refusal
                key = self._authenticate(headers)
                defaults = key.tags if key is not None else Tags()
                call.tags = defaults  # a refusal past this point is still the key's
                body = await self._read_json(receive, headers)
                model = _VALIDATORS[endpoint](body)
                call.body = body
                call.requested_model = call.model = model
                call.stream = bool(body.get("stream")) and endpoint != "embeddings"
                may_set_tenant = key.may_set_tenant if key is not None else not self.auth_required
                tags = read_tags(headers, body, defaults, may_set_tenant=may_set_tenant)
                call.tags = self.tag_guard.admit(tags)
                if endpoint == "responses":
                    owner = owner_of(tags)  # before the tag guard: a tenant is a boundary
                    await self.responses.prepare(call, owner)
            except GatewayError as exc:
                reply = self._refused(call, exc)
            except Exception:
                # A bug at the edge is still a call: a JSON 500 and its one ledger row.
                log.exception("internal error reading %s", call.request_id)
                reply = self._refused(call, internal_error(call.request_id))
            else:
                reply = await self.pipeline.run(call)
                if owner is not None:
                    chained = call.decisions.get(Chained)
                    previous = chained.previous_response_id if chained is not None else None
                    self.responses.attach(call, reply, owner, previous)
            await self._respond(send, receive, call, reply)
        finally:
            self.metrics.in_flight.dec()

    def refuse_unrouted(
        self,
        error: GatewayError,
        headers: dict[str, str] | None = None,
        path: str = "",
        endpoint: Endpoint = "other",
        model: str = "",
    ) -> str:
        """Record a request refused before it reached an endpoint (an unknown route, a header
        block over the limit), or refused by a route that is not a model call (token counts,
        stored Responses, batches): every request gets one ledger row. Returns its id."""
        api: API = "anthropic" if path.startswith("/v1/messages") else "openai"
        call = Call(endpoint=endpoint, api=api, body={}, requested_model=model, headers={})
        if headers:
            try:
                key = self._authenticate(headers)
            except GatewayError:
                key = None
            if key is not None:
                call.tags = key.tags
        self._refused(call, error)
        return call.request_id

    def _refused(self, call: Call, error: GatewayError) -> Reply:
        """A call that never reached the pipeline: its reply, with its one ledger row."""
        call.requested_model = call.requested_model or "(invalid)"
        call.model = call.model or call.requested_model
        reply = Reply.failed(error)
        reply.on_done(lambda r: self.accountant.record(call, r))
        reply.finish()
        return reply

    def _authenticate(self, headers: dict[str, str]) -> KeyRecord | None:
        """The caller's key record; None when auth is off and no known key was sent."""
        token = headers.get("x-api-key")
        auth = headers.get("authorization", "")
        if auth[:7].lower() == "bearer ":
            token = auth[7:].strip()
        if not self.auth_required and self.settings.server.auth == "auto":
            # `auto` turns auth on as soon as a key exists, also one made while running.
            now = time.monotonic()
            if now >= self._auth_checked_until:
                self._auth_checked_until = now + KEY_CACHE_SECONDS
                self.auth_required = self.keys.any()
        if not self.auth_required:
            return self._lookup(token) if token else None
        if not token:
            raise GatewayError(
                401,
                "You didn't provide an API key. Send a spendgate virtual key as "
                "`Authorization: Bearer KEY` (or `x-api-key`).",
                type="authentication_error",
                code="missing_api_key",
            )
        record = self._lookup(token)
        if record is None:
            raise GatewayError(
                401,
                "Incorrect API key provided: not a valid spendgate virtual key.",
                type="authentication_error",
                code="invalid_api_key",
            )
        return record

    def _lookup(self, token: str) -> KeyRecord | None:
        """Key lookups are cached for `KEY_CACHE_SECONDS`, misses included: an SDK sending
        a provider key (or an attacker guessing) must not cost a hash and a database read
        per request. The cache is dropped whenever the key store's revision moves (checked
        every `KEY_REVISION_POLL_SECONDS`), so a revoked key stops working within that poll,
        and a new key works at once."""
        now = time.monotonic()
        if now - self._key_revision_checked >= KEY_REVISION_POLL_SECONDS:
            self._key_revision_checked = now
            revision = self.keys.revision()
            if revision != self._key_revision:
                self._key_revision = revision
                self._key_cache.clear()
        hit = self._key_cache.get(token)
        if hit is not None and hit[1] > now:
            return hit[0]
        record = self.keys.lookup(token)
        if len(self._key_cache) >= 10_000:
            self._key_cache.clear()
        self._key_cache[token] = (record, now + KEY_CACHE_SECONDS)
        return record

    async def _read_json(self, receive: Receive, headers: dict[str, str]) -> dict[str, Any]:
        limit = self.settings.server.max_body_bytes
        declared = headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise too_large(limit, _LIMIT_SETTING)
        raw = await read_body(receive, limit, _LIMIT_SETTING)
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise GatewayError(
                400,
                f"We could not parse the JSON body of your request ({exc}). "
                "The body must be a JSON object.",
                code="invalid_json",
            ) from None
        if not isinstance(body, dict):
            raise GatewayError(
                400,
                f"The request body must be a JSON object, got a JSON {type(body).__name__}.",
                code="invalid_json",
            )
        _check_depth(raw, body)
        return body

    async def _respond(self, send: Send, receive: Receive, call: Call, reply: Reply) -> None:
        extra = [(b"x-spendgate-request-id", call.request_id.encode())]
        model = reply.served_model or call.model
        if model:
            extra.append((b"x-spendgate-model", header_value(model)))
        if call.cache_outcome:
            extra.append((b"x-spendgate-cache", call.cache_outcome.encode()))
        if reply.is_stream:
            await _stream(send, receive, reply, _SSE + extra)
            return
        if reply.error is not None and reply.body is None:
            err = reply.error
            dialect = dialect_for(call.api)
            relay = err.upstream_body is not None and dialect.passes_upstream_errors
            body = err.upstream_body if relay else orjson.dumps(dialect.error_body(err))
            assert body is not None
            extra += [(k.encode(), header_value(v)) for k, v in err.headers.items()]
            extra.append((b"x-spendgate-cost-usd", cost_header(reply.cost).encode()))
            await send_whole(send, err.status, body, _JSON + extra)
            return
        if reply.deferred:  # 202: the cost is known when its batch comes back
            extra.append((b"x-spendgate-cost-usd", b"pending"))
            extra.append((b"location", f"/v1/deferred/{(reply.body or {}).get('id')}".encode()))
        else:
            extra.append((b"x-spendgate-cost-usd", cost_header(reply.cost).encode()))
        await send_whole(send, reply.status, reply.body_bytes(), _JSON + extra)

    async def _serve_count(
        self, scope: Scope, receive: Receive, send: Send, api: API, count: Callable[..., Any]
    ) -> None:
        """A token count: free, so no ledger row unless it is refused."""
        path: str = scope["path"]
        headers = request_headers(scope)
        model = ""
        try:
            if scope["method"] != "POST":
                raise GatewayError(
                    405,
                    f"{scope['method']} is not allowed on {path}; use POST",
                    code="method_not_allowed",
                    headers={"allow": "POST"},
                )
            self._authenticate(headers)
            body = await self._read_json(receive, headers)
            model = str(body.get("model") or "")
            try:
                payload, extra = await count(body, headers)
            except TranslationError as exc:
                raise GatewayError(400, exc.message, param=exc.param) from None
        except GatewayError as exc:
            request_id = self.refuse_unrouted(exc, headers, path, "count_tokens", model[:256])
            out = [(k.encode(), header_value(v)) for k, v in exc.headers.items()]
            out.append((b"x-spendgate-request-id", request_id.encode()))
            err = dialect_for(api).error_body(exc)
            await send_whole(send, exc.status, orjson.dumps(err), [*_JSON, *out])
            return
        out = [(k.encode(), v.encode()) for k, v in extra.items()]
        await send_whole(send, 200, orjson.dumps(payload), [*_JSON, *out])

    async def _serve_response(self, scope: Scope, receive: Receive, send: Send) -> None:
        """`GET`/`DELETE /v1/responses/{id}` and `GET …/{id}/input_items`: the caller's
        own stored Responses (another owner's id is a 404, like an unknown one)."""
        path: str = scope["path"]
        method: str = scope["method"]
        headers = request_headers(scope)
        rest = path.split("/responses/", 1)[1].strip("/")
        rid, _, sub = rest.partition("/")
        allowed = ("GET",) if sub == "input_items" else ("GET", "DELETE")
        try:
            if sub not in ("", "input_items") or not rid:
                raise GatewayError(404, f"no route for {method} {path}", code="unknown_url")
            if method not in allowed:
                raise GatewayError(
                    405,
                    f"{method} is not allowed on {path}; use {' or '.join(allowed)}",
                    code="method_not_allowed",
                    headers={"allow": ", ".join(allowed)},
                )
            key = self._authenticate(headers)
            defaults = key.tags if key is not None else Tags()
            may_set_tenant = key.may_set_tenant if key is not None else not self.auth_required
            owner = owner_of(read_tags(headers, {}, defaults, may_set_tenant=may_set_tenant))
            if method == "DELETE":
                if not await self.responses.delete(rid, owner):
                    raise not_found(rid)
                payload: Any = {"id": rid, "object": "response", "deleted": True}
            elif sub == "input_items":
                payload = await self.responses.input_items(rid, owner)
            else:
                payload = await self.responses.get(rid, owner)
            if payload is None:
                raise not_found(rid)
        except GatewayError as exc:
            request_id = self.refuse_unrouted(exc, headers, path, "responses")
            extra = [(k.encode(), header_value(v)) for k, v in exc.headers.items()]
            extra.append((b"x-spendgate-request-id", request_id.encode()))
            await send_whole(send, exc.status, orjson.dumps(exc.to_openai()), [*_JSON, *extra])
            return
        await _send_json(send, 200, payload)

    def _models(self) -> dict[str, Any]:
        created = 1_700_000_000
        data = []
        for name in self.table.models():
            dep = self.table.serving(name)[0]
            data.append({"id": name, "object": "model", "created": created, "owned_by": dep.name})
        return {"object": "list", "data": data}


def build_gateway(settings: Settings, **kwargs: Any) -> Gateway:
    return Gateway(settings, **kwargs)


def _open_writer(settings: Settings, store: LedgerStore, *, spooled: bool) -> BatchingWriter:
    """The ledger's batching writer; with a spool only for a store this gateway opened
    from its URL (a store handed in is not the one the URL names)."""
    return BatchingWriter(
        store,
        max_batch=settings.ledger.max_batch,
        flush_interval=settings.ledger.flush_interval_s,
        max_buffer=settings.ledger.max_buffer,
        spool=open_spool(settings.ledger.spool, settings.storage.ledger) if spooled else None,
    )


# -------------------------------------------------------------------- plumbing

MAX_JSON_DEPTH = 64
"""Deeper bodies are refused. Real requests nest a dozen levels (a tool's JSON schema the
most); orjson parses 1,024 but serializes only 254, so a body between the two would parse
and then fail when re-encoded for the upstream, the cache key or the ledger."""
_DEPTH_PROBE_WRAPS = 254 - MAX_JSON_DEPTH


def _check_depth(raw: bytes, body: dict[str, Any]) -> None:
    """Refuse a body nested deeper than `MAX_JSON_DEPTH`, at C speed: fewer brackets than
    the limit can't nest that deep (the common case costs two `bytes.count`); otherwise
    serialize the body wrapped in enough lists that orjson's own limit fires exactly when
    the body is too deep."""
    if raw.count(b"[") + raw.count(b"{") <= MAX_JSON_DEPTH:
        return
    probe: Any = body
    for _ in range(_DEPTH_PROBE_WRAPS):
        probe = [probe]
    try:
        orjson.dumps(probe)
    except orjson.JSONEncodeError:
        raise GatewayError(
            400,
            f"The JSON body is nested more than {MAX_JSON_DEPTH} levels deep.",
            code="invalid_json",
        ) from None


def header_value(text: str) -> bytes:
    """A response header value that can't break the HTTP framing: text we echo (a model
    name, an upstream's) may hold control or non-ASCII characters, which the server would
    refuse by dropping the connection. Those are percent-encoded."""
    if text.isascii() and text.isprintable():
        return text.encode()
    return quote(text, safe=" !#$&'()*+,/:;=?@[]~").encode()


async def _send_json(send: Send, status: int, payload: Any) -> None:
    await send_whole(send, status, orjson.dumps(payload), _JSON)


async def _stream(
    send: Send, receive: Receive, reply: Reply, headers: list[tuple[bytes, bytes]]
) -> None:
    """Pump SSE to the client while watching for it to leave.

    If the client disconnects, the pump is cancelled and the reply's stream is closed
    (which closes the upstream connection, so generation stops and is no longer billed);
    the reply then finishes as `client_disconnected` with the usage consumed so far.
    """
    chunks = reply.iter_bytes()

    async def pump() -> None:
        await send({"type": "http.response.start", "status": reply.status, "headers": headers})
        async for chunk in chunks:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        if reply.priced:  # `unknown` when the price is, as the header says for a whole reply
            trailer = b": x-spendgate-cost-usd=" + cost_header(reply.cost).encode() + b"\n\n"
            await send({"type": "http.response.body", "body": trailer, "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    async def watch() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass

    pump_task = asyncio.ensure_future(pump())
    watch_task = asyncio.ensure_future(watch())
    try:
        await asyncio.wait({pump_task, watch_task}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watch_task.cancel()
        if not pump_task.done():
            pump_task.cancel()
        await asyncio.gather(pump_task, watch_task, return_exceptions=True)
        await chunks.aclose()
        reply.finish(client_disconnected=True)  # no-op when the stream completed
