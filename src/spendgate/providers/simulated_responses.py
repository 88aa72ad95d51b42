"""The simulated upstream's `POST /v1/responses`: OpenAI's Responses API, answered by the
same deterministic "model" as its Chat Completions (see `simulated.py`).

It reads the request its own way (not through the gateway's translator, so a translation bug
cannot hide behind a matching one here), counts input with the project's tokenizers in
Chat's framing, models OpenAI's automatic prompt caching, returns reasoning items for
reasoning models, and streams the typed events OpenAI streams.
"""

from __future__ import annotations

import hashlib
import random
import time
from typing import TYPE_CHECKING, Any

import orjson

from spendgate import tokens

if TYPE_CHECKING:
    from spendgate.providers.simulated import Send, SimApp

__all__ = ["serve_responses"]


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            str(p.get("text") or "") for p in content if isinstance(p, dict) and "text" in p
        )
    return ""


def _as_messages(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The conversation in Chat's shape, for counting and prompt caching."""
    out: list[dict[str, Any]] = []
    if isinstance(body.get("instructions"), str) and body["instructions"]:
        out.append({"role": "system", "content": body["instructions"]})
    raw = body.get("input")
    items = [{"role": "user", "content": raw}] if isinstance(raw, str) else raw or []
    for item in items:
        if not isinstance(item, dict):
            raise TypeError("input items must be objects")
        kind = item.get("type", "message")
        if kind == "message":
            out.append({"role": item.get("role"), "content": _text(item.get("content"))})
        elif kind == "function_call":
            call = {
                "id": item.get("call_id"),
                "type": "function",
                "function": {"name": item.get("name"), "arguments": item.get("arguments")},
            }
            out.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            out.append({"role": "tool", "content": _text(item.get("output"))})
        elif kind == "reasoning":
            continue
        else:
            raise ValueError(f"input item type {kind!r} is not supported by the simulator")
    return out


def _sse(event: dict[str, Any]) -> bytes:
    return b"event: " + event["type"].encode() + b"\ndata: " + orjson.dumps(event) + b"\n\n"


async def serve_responses(
    app: SimApp,
    body: dict[str, Any],
    model: str,
    headers: dict[bytes, bytes],
    send: Send,
    fault: dict[str, Any] | None,
) -> None:
    from spendgate.providers.simulated import _openai_tier, _pick_tool, _usage_override

    if not model:
        await app._error(send, "openai", 400, "Missing required parameter: 'model'.")
        return
    if body.get("input") is None:
        await app._error(send, "openai", 400, "Missing required parameter: 'input'.")
        return
    if body.get("previous_response_id") is not None:
        # The gateway resolves conversations itself; the simulator stores nothing.
        await app._error(send, "openai", 400, "previous_response_id is not supported here.")
        return
    messages = _as_messages(body)
    tools = [t for t in body.get("tools") or () if isinstance(t, dict)]
    chat_tools = [
        {"type": "function", "function": {k: t[k] for k in ("name", "description",
                                                           "parameters") if k in t}}
        for t in tools
        if t.get("type") == "function"
    ]  # fmt: skip
    counted: dict[str, Any] = {"messages": messages, "tools": chat_tools}
    fmt = (body.get("text") or {}).get("format") or {}
    if fmt.get("type") == "json_schema":
        counted["response_format"] = {"type": "json_schema", "json_schema": fmt}
    prompt_tokens = tokens.count_openai_request(model, counted)
    prompt_text = "\n".join(_text(m.get("content")) for m in messages)
    prompt_key = orjson.dumps(
        ["responses", model, messages, tools, fmt], option=orjson.OPT_SORT_KEYS
    )
    tool_defs = {str(t["name"]): t.get("parameters") or {} for t in tools
                 if t.get("type") == "function" and "name" in t}  # fmt: skip
    choice = body.get("tool_choice")
    forced = None
    if isinstance(choice, dict):
        forced = choice.get("name")
        choice = "required"
    last = messages[-1] if messages else None
    last_user = _text(last.get("content")) if last and last.get("role") == "user" else None
    picked = _pick_tool(list(tool_defs), choice, forced, last_user)
    limit = body.get("max_output_tokens")
    raw_reasoning = body.get("reasoning")
    reasoning: dict[str, Any] = raw_reasoning if isinstance(raw_reasoning, dict) else {}
    out = app._answer(
        model,
        prompt_key,
        prompt_text,
        prompt_tokens,
        int(limit) if limit else None,
        (picked, tool_defs.get(picked) or {}) if picked else None,
        fmt.get("schema") or {} if fmt.get("type") == "json_schema" else None,
        fmt.get("type") == "json_object",
        reasoning.get("effort"),
    )
    cached = app._openai_cached(model, counted, prompt_tokens)
    usage: dict[str, Any] = {
        "input_tokens": prompt_tokens,
        "input_tokens_details": {"cached_tokens": cached, "cache_write_tokens": 0},
        "output_tokens": out.completion,
        "output_tokens_details": {"reasoning_tokens": out.reasoning},
        "total_tokens": prompt_tokens + out.completion,
    }
    usage = _usage_override(fault) or usage
    digest = hashlib.blake2b(prompt_key, digest_size=12).hexdigest()
    rid = "resp_" + app._next_id()
    status = "incomplete" if out.truncated else "completed"
    output: list[dict[str, Any]] = []
    if out.reasoning:
        output.append({"id": "rs_" + digest, "type": "reasoning", "summary": []})
    if out.tool:
        output.append(
            {
                "id": "fc_" + digest,
                "type": "function_call",
                "status": "completed",
                "call_id": "call_" + digest,
                "name": out.tool,
                "arguments": out.args,
            }
        )
    else:
        text = "".join(out.pieces)
        part = {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
        output.append({"id": "msg_" + digest, "type": "message", "role": "assistant",
                       "status": status, "content": [part]})  # fmt: skip
    now = int(time.time())
    response: dict[str, Any] = {
        "id": rid,
        "object": "response",
        "created_at": now,
        "status": status,
        "completed_at": now if status == "completed" else None,
        "error": None,
        "incomplete_details": {"reason": "max_output_tokens"} if out.truncated else None,
        "instructions": body.get("instructions"),
        "max_output_tokens": limit,
        "model": model,
        "output": output,
        "parallel_tool_calls": body.get("parallel_tool_calls", True),
        "previous_response_id": None,
        "reasoning": {"effort": reasoning.get("effort"), "summary": reasoning.get("summary")},
        "service_tier": _openai_tier(body.get("service_tier")),
        "store": body.get("store", True),
        "temperature": body.get("temperature", 1.0),
        "text": {"format": fmt or {"type": "text"}},
        "tool_choice": body.get("tool_choice") or "auto",
        "tools": [
            {"strict": True, "parameters": None, **t} if t.get("type") == "function" else t
            for t in tools
        ],
        "top_p": body.get("top_p", 1.0),
        "truncation": body.get("truncation") or "disabled",
        "usage": usage,
        "metadata": body.get("metadata") or {},
    }
    if isinstance(body.get("user"), str):
        response["user"] = body["user"]
    rng = random.Random(prompt_key)
    per_token = app._per_token(model) if app.latency == "realistic" else 0.0
    ttft = app._ttft(prompt_tokens, out, rng) if app.latency == "realistic" else 0.0
    if not body.get("stream"):
        await app._respond(send, response, ttft + per_token * out.visible, fault)
        return
    await app._stream(send, _events(response, out.pieces), ttft, per_token, fault)


def _events(response: dict[str, Any], pieces: list[str]) -> list[bytes]:
    seq = iter(range(1_000_000))
    start = {k: v for k, v in response.items() if k != "usage"}
    start.update(status="in_progress", completed_at=None, output=[], incomplete_details=None)
    events = [
        _sse({"type": "response.created", "sequence_number": next(seq), "response": start}),
        _sse({"type": "response.in_progress", "sequence_number": next(seq), "response": start}),
    ]

    def ev(kind: str, **fields: Any) -> bytes:
        return _sse({"type": kind, "sequence_number": next(seq), **fields})

    for index, item in enumerate(response["output"]):
        if item["type"] == "message":
            events.append(
                ev(
                    "response.output_item.added",
                    output_index=index,
                    item={**item, "status": "in_progress", "content": []},
                )
            )
            part = item["content"][0]
            base = {"item_id": item["id"], "output_index": index, "content_index": 0}
            events.append(ev("response.content_part.added", **base, part={**part, "text": ""}))
            for piece in pieces:
                events.append(ev("response.output_text.delta", **base, delta=piece, logprobs=[]))
            events.append(ev("response.output_text.done", **base, text=part["text"], logprobs=[]))
            events.append(ev("response.content_part.done", **base, part=part))
        elif item["type"] == "function_call":
            events.append(
                ev(
                    "response.output_item.added",
                    output_index=index,
                    item={**item, "status": "in_progress", "arguments": ""},
                )
            )
            base = {"item_id": item["id"], "output_index": index}
            args = item["arguments"]
            for i in range(0, len(args), 8):
                events.append(
                    ev("response.function_call_arguments.delta", **base, delta=args[i : i + 8])
                )
            events.append(
                ev(
                    "response.function_call_arguments.done",
                    **base,
                    name=item["name"],
                    arguments=args,
                )
            )
        else:
            events.append(ev("response.output_item.added", output_index=index, item=item))
        events.append(ev("response.output_item.done", output_index=index, item=item))
    final = "response.completed" if response["status"] == "completed" else "response.incomplete"
    events.append(_sse({"type": final, "sequence_number": next(seq), "response": response}))
    return events
