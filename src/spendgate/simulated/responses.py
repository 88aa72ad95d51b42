"""`POST /v1/responses`: OpenAI's Responses API, answered by the same deterministic "model"
as Chat Completions.

It reads the request its own way (not through the gateway's translator, so a translation bug
cannot hide behind a matching one here), counts input with the project's tokenizers in
Chat's framing, models OpenAI's automatic prompt caching, returns reasoning items for
reasoning models, and streams the typed events OpenAI streams.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

import orjson

from spendgate import tokens
from spendgate.simulated.chat import forced_tool, openai_tier
from spendgate.simulated.faults import usage_override
from spendgate.simulated.model import Answer, Ask
from spendgate.simulated.state import UpstreamState
from spendgate.simulated.wire import Exchange, named_event, send_error, text_of

__all__ = ["serve_responses"]


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
            out.append({"role": item.get("role"), "content": text_of(item.get("content"))})
        elif kind == "function_call":
            call = {
                "id": item.get("call_id"),
                "type": "function",
                "function": {"name": item.get("name"), "arguments": item.get("arguments")},
            }
            out.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            out.append({"role": "tool", "content": text_of(item.get("output"))})
        elif kind != "reasoning":
            raise ValueError(f"input item type {kind!r} is not supported by the simulator")
    return out


def _missing(body: dict[str, Any], model: str) -> str | None:
    if not model:
        return "Missing required parameter: 'model'."
    if body.get("input") is None:
        return "Missing required parameter: 'input'."
    if body.get("previous_response_id") is not None:
        # The gateway resolves conversations itself; the simulator stores nothing.
        return "previous_response_id is not supported here."
    return None


async def serve_responses(state: UpstreamState, ex: Exchange) -> None:
    body, model, send, fault = ex.body, ex.model, ex.send, ex.fault
    problem = _missing(body, model)
    if problem:
        await send_error(send, "openai", 400, problem)
        return
    request = _Request(body, model)
    out, pace = state.answer(request.ask)
    cached = state.openai_cache.cached(model, request.counted, request.ask.prompt_tokens)
    usage = usage_override(fault) or _usage(request.ask.prompt_tokens, cached, out)
    response = request.response("resp_" + state.next_id(), out, usage)
    if body.get("stream"):
        await state.stream(send, _events(response, out.pieces), pace, fault)
    else:
        await state.respond(send, response, pace.whole(out), fault)


class _Request:
    """A Responses body read into the model's `Ask`, and its Chat-shaped twin (`counted`)
    for counting and prompt caching."""

    def __init__(self, body: dict[str, Any], model: str) -> None:
        self.body = body
        self.model = model
        messages = _as_messages(body)
        self.tools = [t for t in body.get("tools") or () if isinstance(t, dict)]
        functions = [t for t in self.tools if t.get("type") == "function"]
        chat_tools = [
            {"type": "function",
             "function": {k: t[k] for k in ("name", "description", "parameters") if k in t}}
            for t in functions
        ]  # fmt: skip
        self.counted: dict[str, Any] = {"messages": messages, "tools": chat_tools}
        self.format: dict[str, Any] = (body.get("text") or {}).get("format") or {}
        is_schema = self.format.get("type") == "json_schema"
        if is_schema:
            self.counted["response_format"] = {"type": "json_schema", "json_schema": self.format}
        raw_reasoning = body.get("reasoning")
        self.reasoning: dict[str, Any] = raw_reasoning if isinstance(raw_reasoning, dict) else {}
        limit = body.get("max_output_tokens")
        self.ask = Ask(
            model,
            orjson.dumps(
                ["responses", model, messages, self.tools, self.format],
                option=orjson.OPT_SORT_KEYS,
            ),
            "\n".join(text_of(m.get("content")) for m in messages),
            tokens.count_openai_request(model, self.counted),
            limit=int(limit) if limit else None,
            json_schema=self.format.get("schema") or {} if is_schema else None,
            json_object=self.format.get("type") == "json_object",
            reasoning_effort=self.reasoning.get("effort"),
        )
        tool_defs = {str(t["name"]): t.get("parameters") or {} for t in functions if "name" in t}
        choice, forced = forced_tool(body.get("tool_choice"), lambda c: c.get("name"))
        last = messages[-1] if messages else None
        last_user = text_of(last.get("content")) if last and last.get("role") == "user" else None
        self.ask.choose_tool(tool_defs, choice, forced, last_user)

    def response(self, rid: str, out: Answer, usage: dict[str, Any]) -> dict[str, Any]:
        body = self.body
        status = "incomplete" if out.truncated else "completed"
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
            "max_output_tokens": body.get("max_output_tokens"),
            "model": self.model,
            "output": self._output(out, status),
            "parallel_tool_calls": body.get("parallel_tool_calls", True),
            "previous_response_id": None,
            "reasoning": {
                "effort": self.reasoning.get("effort"),
                "summary": self.reasoning.get("summary"),
            },
            "service_tier": openai_tier(body.get("service_tier")),
            "store": body.get("store", True),
            "temperature": body.get("temperature", 1.0),
            "text": {"format": self.format or {"type": "text"}},
            "tool_choice": body.get("tool_choice") or "auto",
            "tools": [
                {"strict": True, "parameters": None, **t} if t.get("type") == "function" else t
                for t in self.tools
            ],
            "top_p": body.get("top_p", 1.0),
            "truncation": body.get("truncation") or "disabled",
            "usage": usage,
            "metadata": body.get("metadata") or {},
        }
        if isinstance(body.get("user"), str):
            response["user"] = body["user"]
        return response

    def _output(self, out: Answer, status: str) -> list[dict[str, Any]]:
        digest = hashlib.blake2b(self.ask.prompt_key, digest_size=12).hexdigest()
        output: list[dict[str, Any]] = []
        if out.reasoning:
            output.append({"id": "rs_" + digest, "type": "reasoning", "summary": []})
        if out.tool:
            output.append({"id": "fc_" + digest, "type": "function_call", "status": "completed",
                           "call_id": "call_" + digest, "name": out.tool,
                           "arguments": out.args})  # fmt: skip
        else:
            part = {"type": "output_text", "text": out.text, "annotations": [], "logprobs": []}
            output.append({"id": "msg_" + digest, "type": "message", "role": "assistant",
                           "status": status, "content": [part]})  # fmt: skip
        return output


def _usage(prompt_tokens: int, cached: int, out: Answer) -> dict[str, Any]:
    return {
        "input_tokens": prompt_tokens,
        "input_tokens_details": {"cached_tokens": cached, "cache_write_tokens": 0},
        "output_tokens": out.completion,
        "output_tokens_details": {"reasoning_tokens": out.reasoning},
        "total_tokens": prompt_tokens + out.completion,
    }


class _Events:
    """The typed events of one streamed response, numbered as OpenAI numbers them."""

    def __init__(self) -> None:
        self.items: list[bytes] = []

    def add(self, kind: str, **fields: Any) -> None:
        data = {"type": kind, "sequence_number": len(self.items), **fields}
        self.items.append(named_event(kind, data))


def _events(response: dict[str, Any], pieces: list[str]) -> list[bytes]:
    start = {k: v for k, v in response.items() if k != "usage"}
    start.update(status="in_progress", completed_at=None, output=[], incomplete_details=None)
    events = _Events()
    events.add("response.created", response=start)
    events.add("response.in_progress", response=start)
    for index, item in enumerate(response["output"]):
        if item["type"] == "message":
            _message_events(events, index, item, pieces)
        elif item["type"] == "function_call":
            _call_events(events, index, item)
        else:
            events.add("response.output_item.added", output_index=index, item=item)
        events.add("response.output_item.done", output_index=index, item=item)
    final = "response.completed" if response["status"] == "completed" else "response.incomplete"
    events.add(final, response=response)
    return events.items


def _message_events(events: _Events, index: int, item: dict[str, Any], pieces: list[str]) -> None:
    opened = {**item, "status": "in_progress", "content": []}
    events.add("response.output_item.added", output_index=index, item=opened)
    part = item["content"][0]
    base = {"item_id": item["id"], "output_index": index, "content_index": 0}
    events.add("response.content_part.added", **base, part={**part, "text": ""})
    for piece in pieces:
        events.add("response.output_text.delta", **base, delta=piece, logprobs=[])
    events.add("response.output_text.done", **base, text=part["text"], logprobs=[])
    events.add("response.content_part.done", **base, part=part)


def _call_events(events: _Events, index: int, item: dict[str, Any]) -> None:
    opened = {**item, "status": "in_progress", "arguments": ""}
    events.add("response.output_item.added", output_index=index, item=opened)
    base = {"item_id": item["id"], "output_index": index}
    args = item["arguments"]
    for i in range(0, len(args), 8):
        events.add("response.function_call_arguments.delta", **base, delta=args[i : i + 8])
    events.add("response.function_call_arguments.done", **base, name=item["name"], arguments=args)
