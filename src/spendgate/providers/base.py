"""What every provider adapter shares: the deployment it talks to, the pooled HTTP client,
SSE reading, and the mapping of upstream failures to gateway errors.

The HTTP client is aiohttp rather than httpx: the gateway makes one upstream request per
client request, and on this 2-core machine aiohttp's client cost about half of httpx's per
request (see bench/overhead.py), which is most of the gateway's own overhead budget.
"""

from __future__ import annotations

import functools
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import aiohttp
import orjson

from spendgate.call import API, Call
from spendgate.errors import GatewayError, SpendgateError
from spendgate.reply import Attempt, Reply

__all__ = [
    "Deployment",
    "Provider",
    "SSEEvent",
    "UpstreamError",
    "UpstreamHTTP",
    "bearer_headers",
    "exchange",
    "iter_sse",
    "upstream_failure",
]


@dataclass(frozen=True)
class Deployment:
    """One upstream endpoint and the models it serves under which names."""

    name: str
    provider: str
    """`openai` (any OpenAI-compatible server), `anthropic`, or `simulated`."""
    base_url: str
    api_key: str | None = None
    models: Mapping[str, str] = field(default_factory=dict)
    """Public model name → the name the upstream knows it by."""
    price: Any = None
    """A `pricing.PriceOverride`, or None to use the price catalog."""
    timeout_s: float = 120.0
    connect_timeout_s: float = 10.0
    extra_headers: Mapping[str, str] = field(default_factory=dict)
    # Resilience (see spendgate.dispatch.resilience): retries on this deployment, then the
    # next deployment serving the model, then the models in `fallbacks`.
    retries: int = 0
    backoff_s: float = 0.5
    backoff_max_s: float = 8.0
    retry_after_max_s: float = 30.0
    fallbacks: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    """Public model name → other public models to try, in order, when every deployment of
    that model failed (they may speak another wire format; the adapters translate)."""
    circuit_failures: int = 0
    """Consecutive failures that open the circuit; 0 with `circuit_error_rate` 0 = no breaker."""
    circuit_error_rate: float = 0.0
    circuit_min_calls: int = 20
    circuit_window_s: float = 60.0
    circuit_cooldown_s: float = 30.0
    responses_api: bool | None = None
    """Does this deployment serve OpenAI's Responses API (`POST /responses`)? None = decide by
    provider: OpenAI itself and the simulated upstream (for non-Claude models) do; an
    Anthropic deployment and other OpenAI-compatible servers get Responses calls translated
    to Chat Completions / Messages."""

    def api_for(self, model: str) -> API:
        """The wire format this deployment speaks for `model`. The simulated upstream speaks
        both; it answers Claude models in Anthropic's format so translation gets exercised."""
        if self.provider == "anthropic":
            return "anthropic"
        if self.provider == "simulated" and self.upstream_model(model).startswith("claude"):
            return "anthropic"
        return "openai"

    def upstream_model(self, model: str) -> str:
        return self.models.get(model, model)

    def serves_responses(self, model: str) -> bool:
        """Whether a Responses call for `model` goes to this deployment natively."""
        if self.api_for(model) == "anthropic":
            return False
        if self.responses_api is not None:
            return self.responses_api
        if self.provider == "simulated":
            return True
        return self.provider == "openai" and "api.openai.com" in self.base_url

    def price_provider(self, model: str) -> str | None:
        """Provider id for the price catalog. The simulated upstream bills like the provider
        whose format it speaks; an OpenAI-compatible server elsewhere (vLLM, Groq…) is not
        OpenAI, so the catalog matches the model name alone."""
        if self.provider == "anthropic":
            return "anthropic"
        if self.provider == "openai":
            return "openai" if "api.openai.com" in self.base_url else None
        return self.api_for(model)


class UpstreamError(SpendgateError):
    """The upstream could not be reached or answered nonsense; carries the gateway error."""

    def __init__(self, error: GatewayError) -> None:
        super().__init__(error.message)
        self.error = error
        self.attempts: list[Attempt] = []
        self.deployment: str | None = None


class Provider(Protocol):
    """A wire-format adapter. `send` returns a `Reply` in the *client's* format."""

    api: API

    async def send(self, call: Call, deployment: Deployment, http: UpstreamHTTP) -> Reply: ...


class UpstreamHTTP:
    """A pooled aiohttp session, created lazily inside the running event loop."""

    def __init__(self, *, limit: int = 512) -> None:
        self._limit = limit
        self._session: aiohttp.ClientSession | None = None

    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=self._limit, ttl_dns_cache=300)
            self._session = aiohttp.ClientSession(
                connector=connector,
                json_serialize=lambda o: orjson.dumps(o).decode(),
                auto_decompress=True,
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = None

    async def open(
        self, url: str, body: dict[str, Any], headers: Mapping[str, str], dep: Deployment
    ) -> aiohttp.ClientResponse:
        """POST and return the response with its body unread (the caller reads or streams)."""
        try:
            return await self.session().post(
                url,
                data=orjson.dumps(body),
                headers=dict(headers),
                timeout=_client_timeout(dep.connect_timeout_s, dep.timeout_s),
            )
        except TimeoutError as exc:
            # A connect timeout, or no response headers within the read timeout.
            raise _timeout(dep, connecting=isinstance(exc, aiohttp.ConnectionTimeoutError)) from exc
        except aiohttp.ClientError as exc:
            raise _broken(dep, f"cannot reach upstream deployment {dep.name!r}: {exc}",
                          "upstream_unreachable") from exc  # fmt: skip


async def read_body(resp: aiohttp.ClientResponse, dep: Deployment) -> bytes:
    try:
        return await resp.read()
    except TimeoutError as exc:
        raise _timeout(dep, connecting=False) from exc
    except aiohttp.ClientError as exc:
        raise _broken(dep, f"upstream deployment {dep.name!r} broke the connection: {exc}",
                      "upstream_disconnected") from exc  # fmt: skip
    finally:
        resp.release()


@functools.lru_cache(maxsize=64)
def _client_timeout(connect_s: float, read_s: float) -> aiohttp.ClientTimeout:
    """One immutable timeout object per (connect, read) pair, not one per request."""
    return aiohttp.ClientTimeout(total=None, connect=connect_s, sock_read=read_s)


def _timeout(dep: Deployment, *, connecting: bool) -> UpstreamError:
    limit = dep.connect_timeout_s if connecting else dep.timeout_s
    return UpstreamError(
        GatewayError(
            504,
            f"upstream deployment {dep.name!r} did not answer within {limit:g}s"
            + (" (connect)" if connecting else ""),
            type="timeout",
            code="upstream_timeout",
        )
    )


def _broken(dep: Deployment, message: str, code: str) -> UpstreamError:
    return UpstreamError(GatewayError(502, message, type="upstream_error", code=code))


def parse_json_body(raw: bytes, dep: Deployment) -> dict[str, Any]:
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        data = None
    if not isinstance(data, dict):
        raise UpstreamError(
            GatewayError(
                502,
                f"upstream deployment {dep.name!r} returned a body that is not a JSON object",
                type="upstream_error",
                code="upstream_bad_response",
            )
        )
    return data


def bearer_headers(dep: Deployment) -> dict[str, str]:
    """JSON content type, the deployment's extra headers, and its key as a bearer token
    (every OpenAI-compatible API)."""
    headers = {"content-type": "application/json", **dep.extra_headers}
    if dep.api_key:
        headers["authorization"] = f"Bearer {dep.api_key}"
    return headers


async def exchange(
    http: UpstreamHTTP,
    dep: Deployment,
    attempt: Attempt,
    started: float,
    request: tuple[str, dict[str, Any], Mapping[str, str]],
    *,
    stream: bool,
    keep_error_body: bool = True,
) -> aiohttp.ClientResponse | dict[str, Any]:
    """POST `request` (url, body, headers) and return the open response when `stream`, else
    the parsed JSON body. A failure is raised as `UpstreamError` carrying `attempt`; the
    attempt's status and duration are filled in either way. `keep_error_body=False` drops
    the upstream's error body (it is in another format than the client's)."""
    url, body, headers = request
    try:
        resp = await http.open(url, body, headers, dep)
        attempt.status = resp.status
        if resp.status != 200:
            raw = await read_body(resp, dep)
            failure = upstream_failure(resp.status, raw, dep, resp.headers)
            if not keep_error_body:
                failure.upstream_body = None
            raise UpstreamError(failure)
        if stream:
            return resp
        return parse_json_body(await read_body(resp, dep), dep)
    except UpstreamError as exc:
        attempt.error = exc.error.code
        attempt.status = attempt.status or exc.error.status
        exc.attempts.append(attempt)
        exc.deployment = dep.name
        raise
    finally:
        attempt.ms = (time.perf_counter() - started) * 1000


def upstream_failure(
    status: int, raw: bytes, dep: Deployment, headers: Mapping[str, str]
) -> GatewayError:
    """Map an upstream error answer to what the client sees.

    4xx are the client's own mistakes (bad params, context too long, rate limits) and pass
    through with their status and message; 5xx are ours to own: 502 with a clear message.
    """
    message = ""
    try:
        data = orjson.loads(raw)
        if isinstance(data, dict) and isinstance(data.get("error"), dict):
            message = str(data["error"].get("message") or "")
    except orjson.JSONDecodeError:
        message = raw[:200].decode("utf-8", "replace")
    passthrough: dict[str, str] = {}
    if "retry-after" in headers:
        passthrough["retry-after"] = headers["retry-after"]
    if status < 500:
        kind = {
            401: "authentication_error",
            403: "permission_error",
            404: "not_found_error",
            429: "rate_limit_error",
        }.get(status, "invalid_request_error")
        return GatewayError(
            status,
            message or f"upstream deployment {dep.name!r} rejected the request ({status})",
            type=kind,
            code="upstream_" + str(status),
            headers=passthrough,
            upstream_body=raw,
        )
    return GatewayError(
        502,
        f"upstream deployment {dep.name!r} failed with {status}"
        + (f": {message}" if message else ""),
        type="upstream_error",
        code="upstream_" + str(status),
        headers=passthrough,
    )


@dataclass(slots=True)
class SSEEvent:
    event: str | None
    data: bytes


async def iter_sse(resp: aiohttp.ClientResponse) -> AsyncIterator[SSEEvent]:
    """Server-sent events from an upstream response, as (event name, data) pairs."""
    event: str | None = None
    data: list[bytes] = []
    async for raw_line in resp.content:
        line = raw_line.rstrip(b"\r\n")
        if not line:
            if data:
                yield SSEEvent(event, b"\n".join(data))
            event, data = None, []
            continue
        if line.startswith(b"data:"):
            data.append(line[5:].lstrip(b" "))
        elif line.startswith(b"event:"):
            event = line[6:].strip().decode()
    if data:
        yield SSEEvent(event, b"\n".join(data))


def sse_event(name: str, payload: dict[str, Any]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"
