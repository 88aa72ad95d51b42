"""Talking to a deployment's batch endpoints: JSON, file uploads and raw downloads, with the
deployment's own key (the client's virtual key never leaves the gateway)."""

from __future__ import annotations

from typing import Any

import aiohttp
import orjson

from spendgate.errors import GatewayError
from spendgate.providers.anthropic import ANTHROPIC_VERSION
from spendgate.providers.base import Deployment, UpstreamHTTP, upstream_failure

__all__ = ["Upstream", "UpstreamAnswer"]


class UpstreamAnswer:
    def __init__(self, status: int, body: bytes, content_type: str) -> None:
        self.status = status
        self.body = body
        self.content_type = content_type

    def json(self) -> Any:
        return orjson.loads(self.body)


class Upstream:
    """Batch-API requests to deployments, over the gateway's pooled HTTP session."""

    def __init__(self, http: UpstreamHTTP) -> None:
        self.http = http

    @staticmethod
    def headers(dep: Deployment, anthropic: bool) -> dict[str, str]:
        headers = dict(dep.extra_headers)
        if anthropic:
            headers["anthropic-version"] = ANTHROPIC_VERSION
            if dep.api_key:
                headers["x-api-key"] = dep.api_key
        elif dep.api_key:
            headers["authorization"] = f"Bearer {dep.api_key}"
        return headers

    async def call(
        self,
        dep: Deployment,
        method: str,
        path: str,
        *,
        anthropic: bool = False,
        json: Any = None,
        form: aiohttp.FormData | None = None,
        timeout_s: float | None = None,
    ) -> UpstreamAnswer:
        """One request; a failure to reach the deployment is a 502 `GatewayError`."""
        url = dep.base_url.rstrip("/") + path
        headers = self.headers(dep, anthropic)
        data: Any = form
        if json is not None:
            data = orjson.dumps(json)
            headers["content-type"] = "application/json"
        timeout = aiohttp.ClientTimeout(
            total=None, connect=dep.connect_timeout_s, sock_read=timeout_s or dep.timeout_s
        )
        try:
            async with self.http.session().request(
                method, url, data=data, headers=headers, timeout=timeout
            ) as resp:
                body = await resp.read()
                return UpstreamAnswer(resp.status, body, resp.headers.get("content-type", ""))
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise GatewayError(
                502,
                f"cannot reach upstream deployment {dep.name!r}: {exc}",
                type="upstream_error",
                code="upstream_unreachable",
            ) from None

    async def ok(self, dep: Deployment, method: str, path: str, **kwargs: Any) -> UpstreamAnswer:
        """Like `call`, but an error answer becomes the `GatewayError` the client sees."""
        answer = await self.call(dep, method, path, **kwargs)
        if answer.status >= 400:
            raise upstream_failure(answer.status, answer.body, dep, {})
        return answer
