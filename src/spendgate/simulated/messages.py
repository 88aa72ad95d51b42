"""`POST /v1/messages` and `/v1/messages/count_tokens`: Anthropic's Messages API, plain
and streamed, with tool use and prompt caching at explicit breakpoints."""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

from spendgate import tokens
from spendgate.simulated.faults import usage_override
from spendgate.simulated.model import Answer, Ask, last_user_text
from spendgate.simulated.prompt_cache import CacheUse
from spendgate.simulated.state import UpstreamState
from spendgate.simulated.wire import (
    Exchange,
    named_event,
    send_error,
    send_json,
    text_of,
)

__all__ = ["serve_count_tokens", "serve_messages"]


async def serve_messages(state: UpstreamState, ex: Exchange) -> None:
    body, model, send, fault = ex.body, ex.model, ex.send, ex.fault
    problem = _missing(body, model)
    if problem:
        await send_error(send, "anthropic", 400, problem)
        return
    cache = state.anthropic_cache.usage(model, body)
    ask = _ask(body, model, cache.total)
    out, pace = state.answer(ask)
    usage = usage_override(fault) or _usage(cache, out)
    tool_id = "toolu_" + hashlib.blake2b(ask.prompt_key, digest_size=12).hexdigest()
    message = _message("msg_" + state.next_id(), model, out, tool_id, usage)
    if body.get("stream"):
        await state.stream(send, _events(message, out), pace, fault)
    else:
        await state.respond(send, message, pace.whole(out), fault)


def _missing(body: dict[str, Any], model: str) -> str | None:
    messages = body.get("messages")
    if not model:
        return "model: Field required"
    if body.get("max_tokens") is None:
        return "max_tokens: Field required"
    if not isinstance(messages, list) or not messages:
        return "messages: at least one message is required"
    return None


def _ask(body: dict[str, Any], model: str, prompt_tokens: int) -> Ask:
    messages: list[Any] = body["messages"]
    system = body.get("system")
    ask = Ask(
        model,
        orjson.dumps([model, system, messages, body.get("tools")], option=orjson.OPT_SORT_KEYS),
        "\n".join(
            [text_of(system)] + [text_of(m.get("content")) for m in messages if isinstance(m, dict)]
        ),
        prompt_tokens,
        limit=int(body["max_tokens"]),
        # Claude has no JSON mode; it follows a system instruction asking for JSON only
        # (what translate.py appends for response_format), so the simulation does too.
        json_object="respond with a single valid json" in text_of(system).lower(),
    )
    tool_defs = {
        t["name"]: t.get("input_schema") or {}
        for t in body.get("tools") or ()
        if isinstance(t, dict) and "name" in t
    }
    raw_tc = body.get("tool_choice")
    tc: dict[str, Any] = raw_tc if isinstance(raw_tc, dict) else {}
    kind = tc.get("type", "auto")
    forced = tc.get("name") if kind == "tool" else None
    ask.choose_tool(tool_defs, kind, forced, last_user_text(messages))
    return ask


def _usage(cache: CacheUse, out: Answer) -> dict[str, Any]:
    return {
        "input_tokens": cache.uncached,
        "cache_creation_input_tokens": cache.write_5m + cache.write_1h,
        "cache_read_input_tokens": cache.read,
        "output_tokens": out.completion,
        "cache_creation": {
            "ephemeral_5m_input_tokens": cache.write_5m,
            "ephemeral_1h_input_tokens": cache.write_1h,
        },
        "service_tier": "standard",
    }


def _message(
    mid: str, model: str, out: Answer, tool_id: str, usage: dict[str, Any]
) -> dict[str, Any]:
    if out.tool:
        block = {
            "type": "tool_use",
            "id": tool_id,
            "name": out.tool,
            "input": orjson.loads(out.args),
        }
    else:
        block = {"type": "text", "text": out.text}
    return {
        "id": mid,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [block],
        "stop_reason": "tool_use" if out.tool else ("max_tokens" if out.truncated else "end_turn"),
        "stop_sequence": None,
        "usage": usage,
    }


def _events(message: dict[str, Any], out: Answer) -> list[bytes]:
    def event(data: dict[str, Any]) -> bytes:
        return named_event(data["type"], data)

    usage = message["usage"]
    start = {**message, "content": [], "stop_reason": None, "usage": {**usage, "output_tokens": 1}}
    events = [event({"type": "message_start", "message": start})]
    if out.tool:
        block: dict[str, Any] = {**message["content"][0], "input": {}}
        deltas = [
            {"type": "input_json_delta", "partial_json": out.args[i : i + 8]}
            for i in range(0, len(out.args), 8)
        ]
    else:
        block = {"type": "text", "text": ""}
        deltas = [{"type": "text_delta", "text": piece} for piece in out.pieces]
    events.append(event({"type": "content_block_start", "index": 0, "content_block": block}))
    events.append(event({"type": "ping"}))
    events.extend(
        event({"type": "content_block_delta", "index": 0, "delta": delta}) for delta in deltas
    )
    events.append(event({"type": "content_block_stop", "index": 0}))
    output_tokens = usage.get("output_tokens", out.completion)
    stop = {"stop_reason": message["stop_reason"], "stop_sequence": None}
    events.append(
        event({"type": "message_delta", "delta": stop, "usage": {"output_tokens": output_tokens}})
    )
    events.append(event({"type": "message_stop"}))
    return events


async def serve_count_tokens(state: UpstreamState, ex: Exchange) -> None:
    if not ex.model or not isinstance(ex.body.get("messages"), list):
        await send_error(ex.send, "anthropic", 400, "model and messages are required")
        return
    await send_json(ex.send, {"input_tokens": tokens.count_anthropic_request(ex.model, ex.body)})
