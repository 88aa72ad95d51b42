"""`POST /v1/chat/completions`: OpenAI's Chat Completions, plain and streamed, with tool
calls, JSON modes, reasoning tokens, automatic prompt caching and service tiers."""

from __future__ import annotations

import hashlib
import time
from typing import Any

import orjson

from spendgate import tokens
from spendgate.simulated.faults import usage_override
from spendgate.simulated.model import Answer, Ask, last_user_text
from spendgate.simulated.state import UpstreamState
from spendgate.simulated.wire import Exchange, send_error, text_of

__all__ = ["openai_tier", "serve_chat"]


def openai_tier(requested: Any) -> str:
    """The tier OpenAI reports as having served a request: flex and priority when asked,
    `default` otherwise (including `auto` on a project without scale capacity)."""
    return requested if requested in ("flex", "priority") else "default"


def forced_tool(choice: Any, name_of: Any) -> tuple[Any, str | None]:
    """(choice, forced name): a `tool_choice` object names the one tool the model must call
    (`name_of` finds the name in it), which is a "required" choice."""
    if isinstance(choice, dict):
        return "required", name_of(choice)
    return choice, None


async def serve_chat(state: UpstreamState, ex: Exchange) -> None:
    body, model, send, fault = ex.body, ex.model, ex.send, ex.fault
    messages = body.get("messages")
    if not model:
        await send_error(send, "openai", 400, "you must provide a model parameter")
        return
    if not isinstance(messages, list) or not messages:
        await send_error(send, "openai", 400, "'messages' must be a non-empty array.")
        return
    ask = _ask(body, model, messages)
    out, pace = state.answer(ask)
    cached = state.openai_cache.cached(model, body, ask.prompt_tokens)
    usage = usage_override(fault) or _usage(ask.prompt_tokens, cached, out)
    reply = _Reply(state, body, model, ask.prompt_key, out, usage)
    if body.get("stream"):
        await state.stream(send, reply.events(), pace, fault)
    else:
        await state.respond(send, reply.completion(), pace.whole(out), fault)


def _ask(body: dict[str, Any], model: str, messages: list[Any]) -> Ask:
    prompt_key = orjson.dumps(
        [model, messages, body.get("tools"), body.get("response_format")],
        option=orjson.OPT_SORT_KEYS,
    )
    raw_rf = body.get("response_format")
    rf: dict[str, Any] = raw_rf if isinstance(raw_rf, dict) else {}
    limit = body.get("max_completion_tokens") or body.get("max_tokens")
    ask = Ask(
        model,
        prompt_key,
        "\n".join(text_of(m.get("content")) for m in messages if isinstance(m, dict)),
        tokens.count_openai_request(model, body),
        limit=int(limit) if limit else None,
        json_schema=(
            (rf.get("json_schema") or {}).get("schema") or {}
            if rf.get("type") == "json_schema"
            else None
        ),
        json_object=rf.get("type") == "json_object",
        reasoning_effort=body.get("reasoning_effort"),
    )
    tool_defs = {
        t["function"]["name"]: t["function"].get("parameters") or {}
        for t in body.get("tools") or ()
        if isinstance(t, dict) and isinstance(t.get("function"), dict)
    }
    choice, forced = forced_tool(
        body.get("tool_choice"), lambda c: (c.get("function") or {}).get("name")
    )
    ask.choose_tool(tool_defs, choice, forced, last_user_text(messages))
    return ask


def _usage(prompt_tokens: int, cached: int, out: Answer) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": out.completion,
        "total_tokens": prompt_tokens + out.completion,
        "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": out.reasoning,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


class _Reply:
    """One answer as a `chat.completion` or as its stream of chunks."""

    def __init__(
        self,
        state: UpstreamState,
        body: dict[str, Any],
        model: str,
        prompt_key: bytes,
        out: Answer,
        usage: dict[str, Any],
    ) -> None:
        self.body = body
        self.model = model
        self.out = out
        self.usage = usage
        self.tier = openai_tier(body.get("service_tier"))
        self.finish = "tool_calls" if out.tool else ("length" if out.truncated else "stop")
        self.id = "chatcmpl-" + state.next_id()
        self.created = int(time.time())
        self.call_id = "call_" + hashlib.blake2b(prompt_key, digest_size=12).hexdigest()

    def completion(self) -> dict[str, Any]:
        out = self.out
        message: dict[str, Any] = {
            "role": "assistant",
            "content": None if out.tool else out.text,
            "refusal": None,
            "annotations": [],
        }
        if out.tool:
            call = {"name": out.tool, "arguments": out.args}
            message["tool_calls"] = [{"id": self.call_id, "type": "function", "function": call}]
        return {
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "choices": [
                {"index": 0, "message": message, "logprobs": None, "finish_reason": self.finish}
            ],
            "usage": self.usage,
            "service_tier": self.tier,
            "system_fingerprint": "fp_spendgate_sim",
        }

    def events(self) -> list[bytes]:
        include_usage = bool((self.body.get("stream_options") or {}).get("include_usage"))
        head = (
            b'{"id":"'
            + self.id.encode()
            + b'","object":"chat.completion.chunk","created":'
            + str(self.created).encode()
            + b',"model":'
            + orjson.dumps(self.model)
            + b',"service_tier":'
            + orjson.dumps(self.tier)
            + b',"system_fingerprint":"fp_spendgate_sim","choices":'
        )
        tail = b',"usage":null}\n\n' if include_usage else b"}\n\n"

        def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
            return b"data: " + head + orjson.dumps([choice]) + tail

        events = [chunk(delta) for delta in self._deltas()]
        events.append(chunk({}, self.finish))
        if include_usage:
            events.append(b"data: " + head + b'[],"usage":' + orjson.dumps(self.usage) + b"}\n\n")
        events.append(b"data: [DONE]\n\n")
        return events

    def _deltas(self) -> list[dict[str, Any]]:
        out = self.out
        if not out.tool:
            first = {"role": "assistant", "content": "", "refusal": None}
            return [first, *({"content": p} for p in out.pieces)]
        call = {"name": out.tool, "arguments": ""}
        opening = {"index": 0, "id": self.call_id, "type": "function", "function": call}
        deltas: list[dict[str, Any]] = [
            {"role": "assistant", "content": None, "tool_calls": [opening]}
        ]
        for i in range(0, len(out.args), 8):
            piece = {"index": 0, "function": {"arguments": out.args[i : i + 8]}}
            deltas.append({"tool_calls": [piece]})
        return deltas
