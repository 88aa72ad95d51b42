"""OpenAI Chat Completions and Embeddings, for OpenAI itself and every server that speaks
the same API by `base_url` (Azure OpenAI's v1 endpoint, vLLM, Ollama, Groq, Together…)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson

from spendgate.call import API, Call
from spendgate.errors import GatewayError
from spendgate.pricing import usage_from_openai
from spendgate.providers.base import (
    Deployment,
    UpstreamHTTP,
    bearer_headers,
    exchange,
    iter_sse,
    sse_event,
)
from spendgate.providers.dialects import OPENAI, dialect_for
from spendgate.providers.streaming import StreamTally, stream_cut
from spendgate.providers.translate import OpenAIToAnthropicStream
from spendgate.reply import Attempt, Reply

__all__ = ["OpenAIAdapter"]


class OpenAIAdapter:
    api: API = "openai"

    def headers(self, dep: Deployment) -> dict[str, str]:
        return bearer_headers(dep)

    async def send(self, call: Call, dep: Deployment, http: UpstreamHTTP) -> Reply:
        model = dep.upstream_model(call.model)
        attempt = Attempt(deployment=dep.name, model=model)
        started = time.perf_counter()
        if call.endpoint == "embeddings":
            body = {**call.body, "model": model}
            path = "/embeddings"
        else:
            body = {**dialect_for(call.api).request_as(self.api, call.body), "model": model}
            path = "/chat/completions"
        client_wants_usage = bool((call.body.get("stream_options") or {}).get("include_usage"))
        stream = call.stream and call.endpoint != "embeddings"
        if call.stream:
            # Always ask for usage: a stream without it could only be estimated.
            body["stream"] = True
            body["stream_options"] = {**(body.get("stream_options") or {}), "include_usage": True}
        url = dep.base_url.rstrip("/") + path
        got = await exchange(http, dep, attempt, started, (url, body, self.headers(dep)),
                             stream=stream)  # fmt: skip
        if not isinstance(got, dict):
            reply = Reply(served_model=model, deployment=dep.name, attempts=[attempt])
            tally = StreamTally(model, "openai", body)
            reply.chunks = self._stream(got, call, reply, tally, client_wants_usage)
            return reply
        return _reply(got, call, dep, model, attempt)

    async def _stream(
        self,
        resp: aiohttp.ClientResponse,
        call: Call,
        reply: Reply,
        tally: StreamTally,
        client_wants_usage: bool,
    ) -> AsyncIterator[bytes]:
        relayed = dialect_for(call.api) is OPENAI
        to_anthropic = None if relayed else OpenAIToAnthropicStream(tally.model)
        completed = False
        try:
            try:
                async for ev in iter_sse(resp):
                    reply.mark_first_byte(call.started)
                    if ev.data == b"[DONE]":
                        completed = True
                        break
                    chunk = orjson.loads(ev.data)
                    if not isinstance(chunk, dict):
                        raise ValueError("stream chunk is not an object")
                    if isinstance(chunk.get("error"), dict):
                        raise ValueError(str(chunk["error"].get("message")))
                    self._observe(chunk, reply, tally)
                    if to_anthropic is not None:
                        for name, payload in to_anthropic.feed(chunk):
                            yield sse_event(name, payload)
                    elif client_wants_usage or chunk.get("choices"):
                        yield b"data: " + ev.data + b"\n\n"
            except (TimeoutError, aiohttp.ClientError, ValueError) as exc:
                reply.extra["stream_error"] = f"{type(exc).__name__}: {exc}"
            if to_anthropic is not None:
                if completed:
                    # Only a complete upstream stream may end in message_stop; a cut one
                    # ends in the error frame below (after message_stop it would be ignored).
                    for name, payload in to_anthropic.finish():
                        yield sse_event(name, payload)
            elif completed:
                yield b"data: [DONE]\n\n"
            if not completed:
                yield stream_cut(reply, call.api, "upstream stream ended without [DONE]")
        finally:
            resp.close()
            if reply.usage is None:
                reply.usage = tally.estimate()

    @staticmethod
    def _observe(chunk: dict[str, Any], reply: Reply, tally: StreamTally) -> None:
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            reply.usage = usage_from_openai(usage)
        if chunk.get("model"):
            reply.served_model = str(chunk["model"])
        if isinstance(chunk.get("service_tier"), str):
            reply.service_tier = chunk["service_tier"]
        for choice in chunk.get("choices") or ():
            delta = choice.get("delta") or {}
            tally.add(delta.get("content"))
            for tc in delta.get("tool_calls") or ():
                tally.add((tc.get("function") or {}).get("arguments"))
            if choice.get("finish_reason"):
                reply.finish_reason = choice["finish_reason"]


def _reply(
    data: dict[str, Any], call: Call, dep: Deployment, model: str, attempt: Attempt
) -> Reply:
    usage = usage_from_openai(data["usage"]) if isinstance(data.get("usage"), dict) else None
    finish = None
    choices = data.get("choices")
    if isinstance(choices, list) and choices and isinstance(choices[0], dict):
        finish = choices[0].get("finish_reason")
    out = dialect_for(call.api).response_from(
        "openai", data, request=call.body, model=model, response_id=""
    )
    tier = data.get("service_tier")
    return Reply(
        body=out,
        usage=usage,
        served_model=str(data.get("model") or model),
        deployment=dep.name,
        finish_reason=finish,
        service_tier=tier if isinstance(tier, str) else None,
        attempts=[attempt],
    )


def embeddings_unsupported(dep: Deployment) -> GatewayError:
    return GatewayError(
        400,
        f"deployment {dep.name!r} speaks Anthropic's API, which has no embeddings endpoint",
        param="model",
        code="embeddings_unsupported",
    )
