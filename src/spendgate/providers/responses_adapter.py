"""Carrying a Responses API call to a deployment: natively where the deployment has the API,
otherwise translated to Chat Completions and sent through the Chat adapter (which speaks
Anthropic's Messages itself when the deployment is Claude's), the answer translated back.

Which way is decided per deployment and model (`Deployment.serves_responses`), so one public
model can be served natively by OpenAI and, as a fallback, by a translated deployment.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import aiohttp
import orjson

import spendgate.providers.responses as wire
from spendgate.call import API, Call
from spendgate.pricing import usage_from_openai
from spendgate.providers.base import (
    Deployment,
    Provider,
    UpstreamHTTP,
    bearer_headers,
    exchange,
    iter_sse,
)
from spendgate.providers.streaming import StreamTally, stream_cut
from spendgate.reply import Attempt, Reply

__all__ = ["ResponsesAdapter", "response_id"]

_DELTAS = frozenset({"response.output_text.delta", "response.function_call_arguments.delta"})


def response_id(request_id: str) -> str:
    """The id the gateway gives the Response of a call: derived from its request id, so a
    Response found by `GET /v1/responses/{id}` names its ledger row, and a cache replay or a
    translated answer gets a fresh id like any other."""
    return "resp_" + request_id.removeprefix("sg-")


class ResponsesAdapter:
    api: API = "responses"

    def __init__(self, chat_adapter_for: Any) -> None:
        self._chat_adapter_for = chat_adapter_for
        """`(dep, model) -> Provider` for Chat calls (the registry's, passed in to avoid an
        import cycle)."""

    def headers(self, dep: Deployment) -> dict[str, str]:
        return bearer_headers(dep)

    async def send(self, call: Call, dep: Deployment, http: UpstreamHTTP) -> Reply:
        if dep.serves_responses(call.model):
            return await self._native(call, dep, http)
        return await self._bridged(call, dep, http)

    # ------------------------------------------------------------------ native
    async def _native(self, call: Call, dep: Deployment, http: UpstreamHTTP) -> Reply:
        model = dep.upstream_model(call.model)
        attempt = Attempt(deployment=dep.name, model=model)
        started = time.perf_counter()
        body = {**call.body, "model": model}
        body.pop("previous_response_id", None)  # resolved by the gateway: input is complete
        if call.stream:
            body["stream"] = True
        url = dep.base_url.rstrip("/") + "/responses"
        got = await exchange(http, dep, attempt, started, (url, body, self.headers(dep)),
                             stream=call.stream)  # fmt: skip
        if not isinstance(got, dict):
            reply = Reply(served_model=model, deployment=dep.name, attempts=[attempt])
            tally = StreamTally(model, "openai", wire.chat_view(body))
            reply.chunks = self._stream(got, call, reply, tally)
            return reply
        reply = Reply(body=got, served_model=model, deployment=dep.name, attempts=[attempt])
        self._observe(got, reply)
        reply.finish_reason = wire.finish_reason_of(got)
        return reply

    async def _stream(
        self,
        resp: aiohttp.ClientResponse,
        call: Call,
        reply: Reply,
        tally: StreamTally,
    ) -> AsyncIterator[bytes]:
        completed = False
        deltas: list[bytes] = []
        """Delta events, parsed only if the stream ends without usage (most never are):
        parsing every delta would cost more than the rest of the relay."""
        try:
            try:
                async for ev in iter_sse(resp):
                    reply.mark_first_byte(call.started)
                    kind = ev.event or ""
                    if kind in _DELTAS:
                        deltas.append(ev.data)
                    else:
                        data = orjson.loads(ev.data)
                        if not isinstance(data, dict):
                            raise ValueError("stream event is not an object")
                        kind = str(data.get("type") or kind)
                        if kind in _DELTAS:
                            deltas.append(ev.data)
                        elif kind in wire.LIFECYCLE_EVENTS:
                            self._observe(data.get("response"), reply)
                        elif kind == "error":
                            raise ValueError(str(data.get("message") or "upstream stream error"))
                    yield b"event: " + kind.encode() + b"\ndata: " + ev.data + b"\n\n"
                    if kind in ("response.completed", "response.incomplete", "response.failed"):
                        completed = True
                        break
            except (TimeoutError, aiohttp.ClientError, ValueError) as exc:
                reply.extra["stream_error"] = f"{type(exc).__name__}: {exc}"
            if not completed:
                why = "upstream stream ended without response.completed"
                yield stream_cut(reply, "responses", why)
        finally:
            resp.close()
            if reply.usage is None:
                for raw in deltas:
                    try:
                        delta = orjson.loads(raw)
                    except orjson.JSONDecodeError:
                        continue
                    if isinstance(delta, dict):
                        tally.add(delta.get("delta"))
                reply.usage = tally.estimate()

    @staticmethod
    def _observe(response: Any, reply: Reply) -> None:
        if not isinstance(response, dict):
            return
        if isinstance(response.get("usage"), dict):
            reply.usage = usage_from_openai(response["usage"])
        if response.get("model"):
            reply.served_model = str(response["model"])
        if isinstance(response.get("service_tier"), str):
            reply.service_tier = response["service_tier"]
        if response.get("status") in ("completed", "incomplete", "failed"):
            reply.finish_reason = wire.finish_reason_of(response)

    # ------------------------------------------------------------------ translated
    async def _bridged(self, call: Call, dep: Deployment, http: UpstreamHTTP) -> Reply:
        chat_call = replace(
            call, api="openai", endpoint="chat", body=wire.to_chat_request(call.body)
        )
        inner: Provider = self._chat_adapter_for(dep, call.model)
        reply = await inner.send(chat_call, dep, http)
        rid = response_id(call.request_id)
        if reply.chunks is not None:
            model = reply.served_model or dep.upstream_model(call.model)
            reply.chunks = _translate_stream(reply.chunks, reply, call.body, rid, model)
        elif reply.body is not None:
            reply.body = wire.from_chat_response(reply.body, call.body, response_id=rid)
            reply.finish_reason = wire.finish_reason_of(reply.body)
        return reply


async def _translate_stream(
    chunks: AsyncIterator[bytes], reply: Reply, request: dict[str, Any], rid: str, model: str
) -> AsyncIterator[bytes]:
    """Chat SSE bytes (as the Chat adapter yields them) → typed Responses events."""
    machine = wire.ChatToResponsesStream(request, response_id=rid, model=model)
    buffer = b""
    done = False
    failed: str | None = None
    try:
        async for raw in chunks:
            buffer += raw
            while b"\n\n" in buffer:
                block, buffer = buffer.split(b"\n\n", 1)
                lines = block.split(b"\n")
                data = b"\n".join(x[5:].lstrip(b" ") for x in lines if x.startswith(b"data:"))
                if not data:
                    continue
                if data == b"[DONE]":
                    done = True
                    continue
                chunk = orjson.loads(data)
                if isinstance(chunk, dict) and isinstance(chunk.get("error"), dict):
                    failed = str(chunk["error"].get("message") or "upstream stream error")
                    continue
                if isinstance(chunk, dict):
                    for event in machine.feed(chunk):
                        yield wire.sse(event)
        if done and failed is None:
            for event in machine.finish():
                yield wire.sse(event)
        else:
            message = failed or "upstream stream ended early"
            for event in machine.fail(message):
                yield wire.sse(event)
    finally:
        aclose = getattr(chunks, "aclose", None)
        if aclose is not None:
            await aclose()
        if machine.finish_reason:
            reply.finish_reason = wire.finish_reason_of(machine.response) or reply.finish_reason
