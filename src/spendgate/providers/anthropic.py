"""Anthropic Messages. An Anthropic client's body passes through untouched (cache_control,
thinking, betas); an OpenAI client's body is translated both ways."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson

from spendgate.call import API, Call
from spendgate.pricing import merge_anthropic_stream_usage, usage_from_anthropic
from spendgate.providers.base import (
    Deployment,
    UpstreamError,
    UpstreamHTTP,
    exchange,
    iter_sse,
)
from spendgate.providers.dialects import ANTHROPIC, dialect_for
from spendgate.providers.dialects.anthropic import ANTHROPIC_VERSION
from spendgate.providers.openai import embeddings_unsupported
from spendgate.providers.streaming import StreamTally, stream_cut
from spendgate.providers.translate import AnthropicToOpenAIStream
from spendgate.reply import Attempt, Reply

__all__ = ["ANTHROPIC_VERSION", "AnthropicAdapter"]


class AnthropicAdapter:
    api: API = "anthropic"

    def headers(self, dep: Deployment, call: Call) -> dict[str, str]:
        headers = {
            "content-type": "application/json",
            "anthropic-version": call.headers.get("anthropic-version", ANTHROPIC_VERSION),
            **dep.extra_headers,
        }
        if "anthropic-beta" in call.headers:
            headers["anthropic-beta"] = call.headers["anthropic-beta"]
        if dep.api_key:
            headers["x-api-key"] = dep.api_key
        return headers

    async def send(self, call: Call, dep: Deployment, http: UpstreamHTTP) -> Reply:
        if call.endpoint == "embeddings":
            raise UpstreamError(embeddings_unsupported(dep))
        model = dep.upstream_model(call.model)
        attempt = Attempt(deployment=dep.name, model=model)
        started = time.perf_counter()
        client = dialect_for(call.api)
        body = {**client.request_as(self.api, call.body), "model": model}
        if call.stream:
            body["stream"] = True
        url = dep.base_url.rstrip("/") + "/messages"
        # The upstream's error body is in Anthropic's format: for a client of another format
        # the edge must re-render it rather than pass it through verbatim.
        got = await exchange(http, dep, attempt, started, (url, body, self.headers(dep, call)),
                             stream=call.stream, keep_error_body=client is ANTHROPIC)  # fmt: skip
        if not isinstance(got, dict):
            reply = Reply(served_model=model, deployment=dep.name, attempts=[attempt])
            reply.chunks = self._stream(got, call, reply, StreamTally(model, "anthropic", body))
            return reply
        raw_usage = got.get("usage") if isinstance(got.get("usage"), dict) else None
        return Reply(
            body=client.response_from(
                self.api, got, request=call.body, model=model, response_id=""
            ),
            usage=usage_from_anthropic(raw_usage) if raw_usage is not None else None,
            served_model=str(got.get("model") or model),
            deployment=dep.name,
            finish_reason=got.get("stop_reason"),
            service_tier=_tier(raw_usage),
            attempts=[attempt],
        )

    async def _stream(
        self,
        resp: aiohttp.ClientResponse,
        call: Call,
        reply: Reply,
        tally: StreamTally,
    ) -> AsyncIterator[bytes]:
        include_usage = bool((call.body.get("stream_options") or {}).get("include_usage"))
        to_openai = (
            None
            if dialect_for(call.api) is ANTHROPIC
            else AnthropicToOpenAIStream(tally.model, include_usage=include_usage)
        )
        start_usage: dict[str, Any] | None = None
        delta_usage: dict[str, Any] | None = None
        completed = False
        try:
            try:
                async for ev in iter_sse(resp):
                    reply.mark_first_byte(call.started)
                    data = orjson.loads(ev.data)
                    if not isinstance(data, dict):
                        raise ValueError("stream event is not an object")
                    kind = ev.event or str(data.get("type", ""))
                    if kind == "error":
                        err = data.get("error") or {}
                        raise ValueError(str(err.get("message") or "upstream stream error"))
                    if kind == "message_start":
                        message = data.get("message") or {}
                        start_usage = message.get("usage") or {}
                        reply.service_tier = _tier(start_usage)
                        if message.get("model"):
                            reply.served_model = str(message["model"])
                    elif kind == "message_delta":
                        delta_usage = {**(delta_usage or {}), **(data.get("usage") or {})}
                        stop = (data.get("delta") or {}).get("stop_reason")
                        if stop:
                            reply.finish_reason = stop
                    elif kind == "content_block_delta":
                        delta = data.get("delta") or {}
                        tally.add(delta.get("text") or delta.get("partial_json"))
                    if start_usage is not None and kind in ("message_delta", "message_stop"):
                        reply.usage = merge_anthropic_stream_usage(start_usage, delta_usage)
                    if to_openai is not None:
                        for chunk in to_openai.feed(kind, data):
                            yield b"data: " + orjson.dumps(chunk) + b"\n\n"
                    else:
                        yield b"event: " + kind.encode() + b"\ndata: " + ev.data + b"\n\n"
                    if kind == "message_stop":
                        completed = True
                        break
            except (TimeoutError, aiohttp.ClientError, ValueError) as exc:
                reply.extra["stream_error"] = f"{type(exc).__name__}: {exc}"
            if completed and to_openai is not None:
                yield b"data: [DONE]\n\n"
            if not completed:
                why = "upstream stream ended without message_stop"
                yield stream_cut(reply, call.api, why)
        finally:
            resp.close()
            if reply.usage is None:
                if start_usage is None:
                    reply.usage = tally.estimate()
                else:
                    # Input is known from message_start; output only from what we saw.
                    usage = merge_anthropic_stream_usage(start_usage, delta_usage)
                    usage.output_tokens = max(usage.output_tokens, tally.output_tokens())
                    usage.estimated = True
                    reply.usage = usage


def _tier(usage: dict[str, Any] | None) -> str | None:
    """Anthropic says which tier served a call in `usage.service_tier` (standard, priority,
    batch)."""
    tier = (usage or {}).get("service_tier")
    return tier if isinstance(tier, str) else None
