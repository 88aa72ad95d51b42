"""The simulated upstream's ASGI app: reads a request, applies any fault queued for it, and
routes it to its endpoint; `/_sim/…` routes let a test queue faults and read counters.

It is a raw ASGI app (no framework, orjson) so that a gateway benchmark measures the gateway,
not this.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson

from spendgate.simulated.batches import SimBatches
from spendgate.simulated.endpoints import ENDPOINTS
from spendgate.simulated.faults import take_fault
from spendgate.simulated.model import MODELS
from spendgate.simulated.state import UpstreamState
from spendgate.simulated.wire import (
    JSON_HEADERS,
    Cut,
    Exchange,
    Fault,
    Receive,
    Scope,
    Send,
    send_error,
    send_json,
)

__all__ = ["SimApp", "create_app"]


class _Request:
    """One HTTP request, read whole (bodies here are small)."""

    __slots__ = ("headers", "method", "path", "raw", "shown")

    def __init__(self, scope: Scope, raw: bytes) -> None:
        self.shown: str = scope["path"]
        self.method: str = scope["method"]
        self.headers: dict[bytes, bytes] = dict(scope["headers"])
        self.raw = raw
        path = self.shown.rstrip("/")
        self.path = path[3:] if path.startswith("/v1/") else path

    @property
    def api(self) -> str:
        """The wire format errors are answered in."""
        return "anthropic" if self.path.startswith("/messages") else "openai"


class SimApp(UpstreamState):
    """The ASGI callable over the upstream's state."""

    def __init__(self, latency: str = "none", seed: int = 0, require_key: str | None = None):
        super().__init__(latency=latency, seed=seed, require_key=require_key)
        self._closing: asyncio.Event | None = None
        self.batches = SimBatches(self)

    def release(self) -> None:
        """Let held ("timeout") responses go, so a graceful stop does not wait on them."""
        if self._closing is not None:
            self._closing.set()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        if self._closing is None:
            self._closing = asyncio.Event()
        request = _Request(scope, await _read_body(receive))
        if request.path.startswith("/_sim/"):
            await self._control(request.method, request.path, request.raw, send)
        elif self.batches.handles(request.path):
            if await self._authorized(request, send):
                await self.batches.handle(
                    request.method, request.path, request.headers, request.raw, send
                )
        elif request.method == "GET" and request.path == "/models":
            await _models(request.headers, send)
        else:
            await self._model_call(request, receive, send)

    async def _model_call(self, request: _Request, receive: Receive, send: Send) -> None:
        api = request.api
        endpoint = ENDPOINTS.get(request.path)
        if endpoint is None or request.method != "POST":
            await send_error(send, api, 404, f"Unknown route {request.method} {request.shown}")
            return
        if not await self._authorized(request, send):
            return
        body = await _json_body(request, send)
        if body is None:
            return
        model = str(body.get("model") or "")
        self.stats_total += 1
        self.by_path[request.path] += 1
        self.by_model[model] += 1
        fault = take_fault(self.faults, request.path, model, request.headers)
        if fault is not None and not await self._fire(fault, api, receive, send):
            return
        try:
            await endpoint(self, Exchange(body, model, request.headers, send, fault))
        except Cut:
            return  # uvicorn closes the connection: the client sees a truncated response
        except (TypeError, KeyError, AttributeError, ValueError, IndexError) as exc:
            # A body of a shape the simulator can't read is the client's error, as upstream.
            await send_error(send, api, 400, f"Invalid request body ({type(exc).__name__}).")

    async def _authorized(self, request: _Request, send: Send) -> bool:
        if self.require_key is None:
            return True
        auth = request.headers.get(b"authorization", b"").decode("latin-1")
        key = request.headers.get(b"x-api-key", b"").decode("latin-1")
        if self.require_key in (key, auth.removeprefix("Bearer ").strip()):
            return True
        await send_error(send, request.api, 401, "Incorrect API key provided.")
        return False

    async def _fire(self, fault: Fault, api: str, receive: Receive, send: Send) -> bool:
        """Apply a fault that acts before the answer; False when it has replaced it."""
        kind = fault.get("kind")
        self.faults_fired[str(kind)] += 1
        if kind == "status":
            status = int(fault.get("status", 500))
            extra = []
            if fault.get("retry_after") is not None:
                extra.append((b"retry-after", str(fault["retry_after"]).encode()))
            msg = str(fault.get("message") or f"Simulated upstream error {status}.")
            await send_error(send, api, status, msg, extra)
            return False
        if kind == "garbage":
            await send_json(send, b"<html>502 Bad Gateway", 200, JSON_HEADERS)
            return False
        if kind == "timeout":
            return await self._hold(float(fault.get("seconds", 30)), receive)
        return True

    async def _hold(self, seconds: float, receive: Receive) -> bool:
        """Wait `seconds` without blocking other requests; False if the client went away or
        the server is stopping (then there is no one to answer)."""
        assert self._closing is not None
        waiters = {
            asyncio.ensure_future(asyncio.sleep(seconds)),
            asyncio.ensure_future(receive()),
            asyncio.ensure_future(self._closing.wait()),
        }
        done, pending = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        first = done.pop()
        result = first.result()
        return result is None and not self._closing.is_set()

    async def _control(self, method: str, path: str, raw: bytes, send: Send) -> None:
        route = (method, path)
        if route == ("POST", "/_sim/faults"):
            await self._queue_faults(raw, send)
        elif route == ("DELETE", "/_sim/faults"):
            self.faults.clear()
            await send_json(send, {"pending": []})
        elif route == ("GET", "/_sim/faults"):
            await send_json(send, {"pending": self.faults})
        elif route == ("GET", "/_sim/stats"):
            await send_json(send, self.stats())
        elif route == ("DELETE", "/_sim/stats"):
            self.stats_total = 0
            self.by_path.clear()
            self.by_model.clear()
            self.faults_fired.clear()
            await send_json(send, self.stats())
        elif route == ("DELETE", "/_sim/cache"):
            self.openai_cache.clear()
            self.anthropic_cache.clear()
            await send_json(send, {"cleared": True})
        else:
            await send_error(send, "openai", 404, f"Unknown control route {method} {path}")

    async def _queue_faults(self, raw: bytes, send: Send) -> None:
        try:
            payload = orjson.loads(raw or b"{}")
            faults = payload["faults"] if isinstance(payload, dict) else payload
            assert isinstance(faults, list) and all(isinstance(f, dict) for f in faults)
        except (orjson.JSONDecodeError, KeyError, AssertionError):
            await send_error(send, "openai", 400, 'Expected {"faults": [{"kind": …}]}')
            return
        self.faults.extend(dict(f) for f in faults)
        await send_json(send, {"queued": len(faults), "pending": self.faults})


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def _read_body(receive: Receive) -> bytes:
    raw = b""
    more = True
    while more:
        message = await receive()
        raw += message.get("body", b"")
        more = message.get("more_body", False)
    return raw


async def _json_body(request: _Request, send: Send) -> dict[str, Any] | None:
    """The request's JSON object, or None once a 400 has been sent."""
    try:
        body = orjson.loads(request.raw)
    except orjson.JSONDecodeError as exc:
        await send_error(send, request.api, 400, f"We could not parse the JSON body: {exc}")
        return None
    if not isinstance(body, dict):
        await send_error(send, request.api, 400, "The request body must be a JSON object.")
        return None
    return body


async def _models(headers: dict[bytes, bytes], send: Send) -> None:
    if b"anthropic-version" in headers:
        claude = [
            {"type": "model", "id": m, "display_name": m, "created_at": "2025-01-01T00:00:00Z"}
            for m in MODELS
            if m.startswith("claude")
        ]
        first, last = claude[0]["id"], claude[-1]["id"]
        page = {"data": claude, "has_more": False, "first_id": first, "last_id": last}
        await send_json(send, page)
        return
    data: list[dict[str, Any]] = [
        {"id": m, "object": "model", "created": 1_700_000_000, "owned_by": "spendgate-sim"}
        for m in MODELS
    ]
    await send_json(send, {"object": "list", "data": data})


def create_app(latency: str = "none", seed: int = 0, require_key: str | None = None) -> SimApp:
    """The simulated upstream as an ASGI app (mount it, or run it with `serve`)."""
    return SimApp(latency=latency, seed=seed, require_key=require_key)
