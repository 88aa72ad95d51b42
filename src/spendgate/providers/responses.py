"""The OpenAI Responses API as a wire format ("dialect"): its requests, responses, streamed
events and usage, and their translation to and from Chat Completions.

Why one module: a Responses call is carried natively to a deployment that has the API
(OpenAI, the simulated upstream) and translated for one that hasn't (an Anthropic
deployment, an OpenAI-compatible server such as vLLM). Translation goes through Chat
Completions because the gateway already translates Chat ↔ Anthropic Messages; composing the
two keeps one Anthropic translator. Everything here is a pure function or a small state
machine over parsed JSON, usable by the adapter, the cache, the edge and the tests alike.

Mappings with no exact equivalent (Responses → Chat):

* ``instructions`` becomes a leading system message; ``input`` as a string is one user
  message. ``reasoning`` items in the input are **dropped** (their encrypted content means
  nothing to another provider), as Chat ↔ Anthropic drops thinking blocks.
* ``function_call`` items become an assistant message's ``tool_calls`` (consecutive calls,
  and assistant text right before them, are merged into one message, as Chat requires);
  ``function_call_output`` items become ``tool`` messages.
* ``text.format`` json_schema/json_object become ``response_format``; ``reasoning.effort``
  becomes ``reasoning_effort`` (its ``summary`` is dropped: Chat has no summaries);
  ``max_output_tokens`` becomes ``max_completion_tokens``.
* Built-in tools (web search, file search, computer use, code interpreter, MCP…),
  ``item_reference`` items, stored prompts, ``conversation`` and ``background`` cannot be
  expressed in Chat and raise :class:`TranslationError` (a 400 naming the field).
* ``include``, ``truncation``, ``max_tool_calls`` and ``stream_options`` only shape what
  OpenAI itself returns or stores and are ignored.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable
from typing import Any

import orjson

from spendgate.providers.translate import TranslationError
from spendgate.tokens import count_openai_request

__all__ = [
    "LIFECYCLE_EVENTS",
    "ChatToResponsesStream",
    "body_from_events",
    "chat_usage_to_responses",
    "count_input_tokens",
    "echo_tools",
    "events_from_response",
    "finish_reason_of",
    "from_chat_response",
    "input_items",
    "is_cacheable",
    "response_skeleton",
    "sse",
    "to_chat_request",
    "zero_usage",
]

JSON = dict[str, Any]

LIFECYCLE_EVENTS = frozenset(
    {
        "response.created",
        "response.queued",
        "response.in_progress",
        "response.completed",
        "response.incomplete",
        "response.failed",
    }
)
"""Events that carry the whole `response` object (its id, its status, at the end its usage)."""

_IGNORED = frozenset(
    {
        "include",
        "truncation",
        "max_tool_calls",
        "stream_options",
        "previous_response_id",  # resolved by the gateway before any translation
        "context_management",
        "moderation",
        "prompt_cache_options",
    }
)
_PASSED = {
    "temperature": "temperature",
    "top_p": "top_p",
    "parallel_tool_calls": "parallel_tool_calls",
    "service_tier": "service_tier",
    "store": "store",
    "metadata": "metadata",
    "user": "user",
    "safety_identifier": "safety_identifier",
    "prompt_cache_key": "prompt_cache_key",
    "prompt_cache_retention": "prompt_cache_retention",
    "stream": "stream",
}
_HANDLED = frozenset(
    {
        "model",
        "input",
        "instructions",
        "tools",
        "tool_choice",
        "text",
        "reasoning",
        "max_output_tokens",
        "top_logprobs",
        "background",
        "conversation",
        "prompt",
    }
)


def _new_id(prefix: str) -> str:
    return prefix + uuid.uuid4().hex


# --------------------------------------------------------------------------- input


def input_items(body: JSON) -> list[JSON]:
    """The request's `input` as a list of items (a string is one user message)."""
    raw = body.get("input")
    if raw is None:
        return []
    if isinstance(raw, str):
        return [{"role": "user", "content": raw}]
    if isinstance(raw, list):
        return raw
    raise TranslationError("input must be a string or an array of items", param="input")


def _part_to_chat(part: Any, role: str, param: str) -> JSON | None:
    if isinstance(part, str):
        return {"type": "text", "text": part}
    if not isinstance(part, dict):
        raise TranslationError("content parts must be objects", param=param)
    kind = part.get("type")
    if kind in ("input_text", "output_text", "text"):
        return {"type": "text", "text": str(part.get("text") or "")}
    if kind == "refusal":
        return {"type": "refusal", "refusal": str(part.get("refusal") or "")}
    if kind == "input_image" and role == "user":
        url = part.get("image_url")
        if not isinstance(url, str) or not url:
            raise TranslationError(
                "only images given by image_url (an http(s) or data: URL) can be translated "
                "for this model's provider; file_id images cannot",
                param=f"{param}.image_url",
            )
        image: JSON = {"url": url}
        if part.get("detail") in ("low", "high", "auto"):
            image["detail"] = part["detail"]
        return {"type": "image_url", "image_url": image}
    if kind == "input_file" and role == "user":
        data = part.get("file_data")
        if not isinstance(data, str) or not data:
            raise TranslationError(
                "only inline files (file_data) can be translated for this model's provider",
                param=f"{param}.file_data",
            )
        file: JSON = {"file_data": data}
        if part.get("filename"):
            file["filename"] = part["filename"]
        return {"type": "file", "file": file}
    raise TranslationError(
        f"content part type {kind!r} cannot be translated for this model's provider",
        param=param,
    )


def _message_to_chat(item: JSON, param: str) -> JSON:
    role = item.get("role")
    if role not in ("user", "system", "developer", "assistant"):
        raise TranslationError(f"unknown message role {role!r}", param=f"{param}.role")
    content = item.get("content")
    if isinstance(content, str):
        return {"role": role, "content": content}
    if not isinstance(content, list):
        raise TranslationError(
            "content must be a string or an array of parts", param=f"{param}.content"
        )
    parts = [
        p
        for j, part in enumerate(content)
        if (p := _part_to_chat(part, role, f"{param}.content[{j}]")) is not None
    ]
    if role in ("system", "developer", "assistant"):
        # Chat takes only text (and, for the assistant, refusal) parts here; join them.
        refusal = next((p["refusal"] for p in parts if p["type"] == "refusal"), None)
        text = "".join(p.get("text", "") for p in parts if p["type"] == "text")
        if role == "assistant" and refusal is not None and not text:
            return {"role": role, "content": None, "refusal": refusal}
        if any(p["type"] not in ("text", "refusal") for p in parts):
            raise TranslationError(f"{role} content may hold only text", param=f"{param}.content")
        return {"role": role, "content": text}
    return {"role": role, "content": parts}


def _output_text(output: Any) -> str:
    """A function_call_output's `output`: a string, or input_text parts (joined)."""
    if isinstance(output, str):
        return output
    if isinstance(output, list):
        return "".join(
            str(p.get("text") or "") for p in output if isinstance(p, dict) and "text" in p
        )
    return orjson.dumps(output).decode()


def _items_to_messages(items: list[Any]) -> list[JSON]:
    messages: list[JSON] = []
    for i, item in enumerate(items):
        param = f"input[{i}]"
        if not isinstance(item, dict):
            raise TranslationError("input items must be objects", param=param)
        kind = item.get("type", "message")
        if kind == "message":
            messages.append(_message_to_chat(item, param))
        elif kind == "function_call":
            call = {
                "id": str(item.get("call_id") or item.get("id") or f"call_{i}"),
                "type": "function",
                "function": {
                    "name": str(item.get("name") or ""),
                    "arguments": str(item.get("arguments") or "{}"),
                },
            }
            last = messages[-1] if messages else None
            if last is not None and last.get("role") == "assistant" and not last.get("refusal"):
                last.setdefault("tool_calls", []).append(call)
                if last.get("content") == "":
                    last["content"] = None
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            messages.append(
                {
                    "role": "tool",
                    "tool_call_id": str(item.get("call_id") or ""),
                    "content": _output_text(item.get("output")),
                }
            )
        elif kind == "reasoning":
            continue
        else:
            raise TranslationError(
                f"input item type {kind!r} cannot be translated for this model's provider",
                param=f"{param}.type",
            )
    return messages


def _tools_to_chat(tools: Any) -> list[JSON]:
    if not isinstance(tools, list):
        raise TranslationError("tools must be an array", param="tools")
    out: list[JSON] = []
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict) or tool.get("type") != "function":
            kind = tool.get("type") if isinstance(tool, dict) else None
            raise TranslationError(
                f"tool type {kind!r} is built into OpenAI's Responses API and cannot be "
                "offered to this model's provider; only function tools can",
                param=f"tools[{i}]",
            )
        function: JSON = {"name": tool.get("name")}
        for key in ("description", "parameters", "strict"):
            if tool.get(key) is not None:
                function[key] = tool[key]
        out.append({"type": "function", "function": function})
    return out


def _tool_choice_to_chat(choice: Any) -> Any:
    if choice is None or choice in ("auto", "none", "required"):
        return choice
    if isinstance(choice, dict) and choice.get("type") == "function" and choice.get("name"):
        return {"type": "function", "function": {"name": choice["name"]}}
    raise TranslationError(
        "this tool_choice cannot be translated for this model's provider", param="tool_choice"
    )


def _format_to_chat(text: Any) -> JSON | None:
    if text is None:
        return None
    if not isinstance(text, dict):
        raise TranslationError("text must be an object", param="text")
    fmt = text.get("format")
    if not isinstance(fmt, dict) or fmt.get("type") in (None, "text"):
        return None
    if fmt.get("type") == "json_object":
        return {"type": "json_object"}
    if fmt.get("type") == "json_schema":
        schema: JSON = {"name": fmt.get("name") or "response", "schema": fmt.get("schema") or {}}
        for key in ("description", "strict"):
            if fmt.get(key) is not None:
                schema[key] = fmt[key]
        return {"type": "json_schema", "json_schema": schema}
    raise TranslationError(f"text.format type {fmt.get('type')!r} is unknown", param="text.format")


def to_chat_request(body: JSON) -> JSON:
    """A Responses request as the equivalent Chat Completions request (see the module
    docstring for what has no equivalent). Raises `TranslationError` naming the field."""
    try:
        return _to_chat_request(body)
    except TranslationError:
        raise
    except (TypeError, KeyError, AttributeError, ValueError, IndexError) as exc:
        raise TranslationError(
            "this request can't be translated to the Chat Completions format: a field has an "
            f"unexpected shape ({type(exc).__name__}: {str(exc)[:120]})"
        ) from None


def _to_chat_request(body: JSON) -> JSON:
    for key in body:
        if key not in _HANDLED and key not in _PASSED and key not in _IGNORED:
            raise TranslationError(f"Unrecognized request argument supplied: {key}", param=key)
    if body.get("background"):
        raise TranslationError(
            "background responses are not supported through this gateway", param="background"
        )
    for key in ("conversation", "prompt"):
        if body.get(key) is not None:
            raise TranslationError(
                f"{key} is stored by OpenAI and cannot be used with this model's provider",
                param=key,
            )
    messages: list[JSON] = []
    instructions = body.get("instructions")
    if isinstance(instructions, str) and instructions:
        messages.append({"role": "system", "content": instructions})
    elif isinstance(instructions, list):
        messages += _items_to_messages(instructions)
    messages += _items_to_messages(input_items(body))
    out: JSON = {"model": body.get("model"), "messages": messages}
    for key, target in _PASSED.items():
        if body.get(key) is not None:
            out[target] = body[key]
    if body.get("max_output_tokens") is not None:
        out["max_completion_tokens"] = body["max_output_tokens"]
    if body.get("tools"):
        out["tools"] = _tools_to_chat(body["tools"])
    choice = _tool_choice_to_chat(body.get("tool_choice"))
    if choice is not None and out.get("tools"):
        out["tool_choice"] = choice
    fmt = _format_to_chat(body.get("text"))
    if fmt is not None:
        out["response_format"] = fmt
    text = body.get("text")
    if isinstance(text, dict) and text.get("verbosity") is not None:
        out["verbosity"] = text["verbosity"]
    reasoning = body.get("reasoning")
    if isinstance(reasoning, dict) and reasoning.get("effort") is not None:
        out["reasoning_effort"] = reasoning["effort"]
    if body.get("top_logprobs"):
        out["logprobs"] = True
        out["top_logprobs"] = body["top_logprobs"]
    if out.get("stream"):
        out["stream_options"] = {"include_usage": True}
    return out


def chat_view(body: JSON) -> JSON:
    """A best-effort Chat Completions view of a Responses body, for reading (token counts,
    routing text): never raises, skips what it cannot express."""
    try:
        return _to_chat_request(
            {k: v for k, v in body.items() if k in _VIEWED or k in _PASSED}
            | {"tools": [t for t in body.get("tools") or () if _is_function(t)] or None}
            | {"input": [i for i in input_items(body) if _readable(i)]}
        )
    except (TranslationError, TypeError, KeyError, AttributeError, ValueError, IndexError):
        return {"model": body.get("model"), "messages": []}


_VIEWED = _HANDLED - {"background", "conversation", "prompt"}


def _is_function(tool: Any) -> bool:
    return isinstance(tool, dict) and tool.get("type") == "function"


def _readable(item: Any) -> bool:
    return isinstance(item, dict) and item.get("type", "message") in (
        "message",
        "function_call",
        "function_call_output",
    )


def count_input_tokens(model: str, body: JSON) -> int:
    """Input tokens of a Responses request (an estimate: OpenAI frames items as it frames
    chat messages, which is what the count assumes); built-in tools count as their JSON."""
    view = chat_view(body)
    total = count_openai_request(model, view)
    from spendgate.tokens import count_text

    for tool in body.get("tools") or ():
        if isinstance(tool, dict) and not _is_function(tool):
            total += count_text(model, orjson.dumps(tool).decode())
    return total


# --------------------------------------------------------------------------- usage


def chat_usage_to_responses(usage: JSON | None) -> JSON:
    """Chat Completions usage → Responses usage (same counts, Responses' names)."""
    usage = usage or {}
    prompt = int(usage.get("prompt_tokens") or 0)
    completion = int(usage.get("completion_tokens") or 0)
    in_det = usage.get("prompt_tokens_details") or {}
    out_det = usage.get("completion_tokens_details") or {}
    return {
        "input_tokens": prompt,
        "input_tokens_details": {
            "cached_tokens": int(in_det.get("cached_tokens") or 0),
            "cache_write_tokens": int(in_det.get("cache_write_tokens") or 0),
        },
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": int(out_det.get("reasoning_tokens") or 0)},
        "total_tokens": prompt + completion,
    }


def zero_usage() -> JSON:
    """What a reply nobody was billed for reports (a cache hit)."""
    return chat_usage_to_responses(None)


# --------------------------------------------------------------------------- responses


def response_skeleton(
    request: JSON,
    *,
    response_id: str,
    model: str,
    status: str = "in_progress",
    created_at: int | None = None,
) -> JSON:
    """The Response object's fields that echo the request (what OpenAI returns in
    `response.created`), with no output yet."""
    raw_reasoning, raw_text = request.get("reasoning"), request.get("text")
    reasoning: JSON = raw_reasoning if isinstance(raw_reasoning, dict) else {}
    text: JSON = raw_text if isinstance(raw_text, dict) else {}
    return {
        "id": response_id,
        "object": "response",
        "created_at": created_at if created_at is not None else int(time.time()),
        "status": status,
        "completed_at": None,
        "error": None,
        "incomplete_details": None,
        "instructions": request.get("instructions"),
        "max_output_tokens": request.get("max_output_tokens"),
        "model": model,
        "output": [],
        "parallel_tool_calls": request.get("parallel_tool_calls", True),
        "previous_response_id": request.get("previous_response_id"),
        "reasoning": {"effort": reasoning.get("effort"), "summary": reasoning.get("summary")},
        "service_tier": request.get("service_tier") or "auto",
        "store": request.get("store", True),
        "temperature": request.get("temperature", 1.0),
        "text": {"format": text.get("format") or {"type": "text"}},
        "tool_choice": request.get("tool_choice") or "auto",
        "tools": echo_tools(request.get("tools")),
        "top_p": request.get("top_p", 1.0),
        "truncation": request.get("truncation") or "disabled",
        "metadata": request.get("metadata") or {},
    } | ({"user": request["user"]} if isinstance(request.get("user"), str) else {})


def echo_tools(tools: Any) -> list[Any]:
    """The request's tools as a Response lists them: function tools with `strict` (true
    unless the request said otherwise, as in OpenAI's Responses API) and `parameters`."""
    out: list[Any] = []
    for tool in tools or ():
        if isinstance(tool, dict) and tool.get("type") == "function":
            tool = {"strict": True, "parameters": None, **tool}
        out.append(tool)
    return out


def _status_for(finish: str | None) -> tuple[str, JSON | None]:
    if finish == "length":
        return "incomplete", {"reason": "max_output_tokens"}
    if finish == "content_filter":
        return "incomplete", {"reason": "content_filter"}
    return "completed", None


def _message_item(item_id: str, text: str | None, refusal: str | None, status: str) -> JSON:
    content: list[JSON] = []
    if text:
        content.append({"type": "output_text", "text": text, "annotations": [], "logprobs": []})
    if refusal:
        content.append({"type": "refusal", "refusal": refusal})
    return {
        "id": item_id,
        "type": "message",
        "role": "assistant",
        "status": status,
        "content": content,
    }


def _call_item(item_id: str, call: JSON, status: str) -> JSON:
    fn = call.get("function") or {}
    return {
        "id": item_id,
        "type": "function_call",
        "call_id": str(call.get("id") or item_id),
        "name": str(fn.get("name") or ""),
        "arguments": str(fn.get("arguments") or ""),
        "status": status,
    }


def from_chat_response(chat: JSON, request: JSON, *, response_id: str) -> JSON:
    """A Chat Completions answer as the Response the client asked for."""
    choices = chat.get("choices") or [{}]
    choice = choices[0] if isinstance(choices[0], dict) else {}
    message = choice.get("message") or {}
    status, incomplete = _status_for(choice.get("finish_reason"))
    item_status = "completed" if status == "completed" else "incomplete"
    out = response_skeleton(
        request,
        response_id=response_id,
        model=str(chat.get("model") or request.get("model") or ""),
        status=status,
        created_at=int(chat.get("created") or time.time()),
    )
    output: list[JSON] = []
    text = message.get("content")
    if isinstance(text, list):
        text = "".join(str(p.get("text") or "") for p in text if isinstance(p, dict))
    if text or message.get("refusal"):
        output.append(_message_item(_new_id("msg_"), text, message.get("refusal"), item_status))
    for call in message.get("tool_calls") or ():
        output.append(_call_item(_new_id("fc_"), call, "completed"))
    out.update(
        output=output,
        incomplete_details=incomplete,
        completed_at=int(time.time()) if status == "completed" else None,
        usage=chat_usage_to_responses(chat.get("usage")),
    )
    if chat.get("service_tier"):
        out["service_tier"] = chat["service_tier"]
    return out


def finish_reason_of(response: JSON) -> str | None:
    """The ledger's finish reason for a Response: its status, or why it is incomplete."""
    status = response.get("status")
    details = response.get("incomplete_details")
    if status == "incomplete" and isinstance(details, dict) and details.get("reason"):
        return str(details["reason"])
    if status == "completed" and any(
        isinstance(i, dict) and i.get("type") == "function_call"
        for i in response.get("output") or ()
    ):
        return "tool_calls"
    return str(status) if status else None


def is_cacheable(response: Any, *, cache_tool_calls: bool) -> str | None:
    """Why this Response must not be stored in the cache (None: it may)."""
    if not isinstance(response, dict) or response.get("object") != "response":
        return "unknown shape"
    if response.get("status") != "completed":
        return f"status={response.get('status')}"
    for item in response.get("output") or ():
        kind = item.get("type") if isinstance(item, dict) else None
        if kind == "function_call":
            if not cache_tool_calls:
                return "tool_calls"
        elif kind == "message":
            if any(p.get("type") == "refusal" for p in item.get("content") or ()):
                return "refusal"
        elif kind != "reasoning":
            return f"output {kind}"
    return None


# --------------------------------------------------------------------------- streams


def sse(event: JSON) -> bytes:
    """One typed Responses event as SSE (`event:` names the type, as OpenAI sends it)."""
    return b"event: " + str(event["type"]).encode() + b"\ndata: " + orjson.dumps(event) + b"\n\n"


class _Sequencer:
    def __init__(self) -> None:
        self.n = 0

    def __call__(self, event: JSON) -> JSON:
        event["sequence_number"] = self.n
        self.n += 1
        return event


def events_from_response(response: JSON) -> list[JSON]:
    """The typed events a provider would have streamed for a finished Response (for a
    cache replay): created, in_progress, each item's added/deltas/done, completed."""
    seq = _Sequencer()
    start = {k: v for k, v in response.items() if k != "usage"}
    start.update(status="in_progress", output=[], completed_at=None, incomplete_details=None)
    events = [
        seq({"type": "response.created", "response": start}),
        seq({"type": "response.in_progress", "response": start}),
    ]
    for index, item in enumerate(response.get("output") or ()):
        kind = item.get("type")
        if kind == "message":
            events.append(
                seq(
                    {
                        "type": "response.output_item.added",
                        "output_index": index,
                        "item": {**item, "status": "in_progress", "content": []},
                    }
                )
            )
            for c, part in enumerate(item.get("content") or ()):
                base = {"item_id": item["id"], "output_index": index, "content_index": c}
                if part.get("type") == "output_text":
                    empty = {**part, "text": ""}
                    events.append(seq({"type": "response.content_part.added", **base,
                                       "part": empty}))  # fmt: skip
                    events.append(seq({"type": "response.output_text.delta", **base,
                                       "delta": part["text"], "logprobs": []}))  # fmt: skip
                    events.append(seq({"type": "response.output_text.done", **base,
                                       "text": part["text"], "logprobs": []}))  # fmt: skip
                else:
                    empty = {**part, "refusal": ""}
                    events.append(seq({"type": "response.content_part.added", **base,
                                       "part": empty}))  # fmt: skip
                    events.append(seq({"type": "response.refusal.delta", **base,
                                       "delta": part.get("refusal", "")}))  # fmt: skip
                    events.append(seq({"type": "response.refusal.done", **base,
                                       "refusal": part.get("refusal", "")}))  # fmt: skip
                events.append(seq({"type": "response.content_part.done", **base, "part": part}))
        elif kind == "function_call":
            events.append(
                seq(
                    {
                        "type": "response.output_item.added",
                        "output_index": index,
                        "item": {**item, "status": "in_progress", "arguments": ""},
                    }
                )
            )
            base = {"item_id": item.get("id", ""), "output_index": index}
            events.append(seq({"type": "response.function_call_arguments.delta", **base,
                               "delta": item.get("arguments", "")}))  # fmt: skip
            events.append(seq({"type": "response.function_call_arguments.done", **base,
                               "name": item.get("name", ""),
                               "arguments": item.get("arguments", "")}))  # fmt: skip
        else:
            events.append(seq({"type": "response.output_item.added", "output_index": index,
                               "item": item}))  # fmt: skip
        events.append(seq({"type": "response.output_item.done", "output_index": index,
                           "item": item}))  # fmt: skip
    final = "response.completed"
    if response.get("status") == "incomplete":
        final = "response.incomplete"
    elif response.get("status") == "failed":
        final = "response.failed"
    events.append(seq({"type": final, "response": response}))
    return events


def body_from_events(events: Iterable[tuple[str | None, bytes]]) -> JSON | None:
    """The Response a stream amounts to: the `response` of its final lifecycle event
    (None when the stream never finished)."""
    final: JSON | None = None
    for name, data in events:
        if name is not None and name not in ("response.completed", "response.incomplete"):
            continue
        try:
            payload = orjson.loads(data)
        except orjson.JSONDecodeError:
            return None
        if not isinstance(payload, dict):
            continue
        if payload.get("type") in ("response.completed", "response.incomplete"):
            response = payload.get("response")
            final = response if isinstance(response, dict) else None
    return final


class ChatToResponsesStream:
    """Chat Completions chunks in, typed Responses events out.

    Feed each parsed chunk; `finish()` closes open items and emits `response.completed`
    (or `response.incomplete` when the answer was cut by the token limit) carrying the
    whole Response and its usage. `fail(message)` ends a broken stream the way OpenAI
    does: an `error` event, then `response.failed`."""

    def __init__(self, request: JSON, *, response_id: str, model: str) -> None:
        self.request = request
        self.seq = _Sequencer()
        self.response = response_skeleton(request, response_id=response_id, model=model)
        self.output: list[JSON] = []
        self.usage: JSON | None = None
        self.finish_reason: str | None = None
        self._started = False
        self._message: JSON | None = None  # the open message item
        self._text: list[str] = []
        self._refusal: list[str] = []
        self._part: str | None = None  # "output_text" | "refusal"
        self._calls: dict[int, JSON] = {}  # chat tool index → open function_call item
        self._call_index: dict[int, int] = {}  # chat tool index → output index

    # -- helpers
    def _emit(self, event: JSON) -> JSON:
        return self.seq(event)

    def _start(self) -> list[JSON]:
        if self._started:
            return []
        self._started = True
        snapshot = dict(self.response)
        return [
            self._emit({"type": "response.created", "response": snapshot}),
            self._emit({"type": "response.in_progress", "response": snapshot}),
        ]

    def _open_message(self) -> list[JSON]:
        if self._message is not None:
            return []
        item = _message_item(_new_id("msg_"), None, None, "in_progress")
        self._message = item
        self.output.append(item)
        return [
            self._emit(
                {
                    "type": "response.output_item.added",
                    "output_index": len(self.output) - 1,
                    "item": dict(item, content=[]),
                }
            )
        ]

    def _open_part(self, kind: str) -> list[JSON]:
        assert self._message is not None
        if self._part == kind:
            return []
        events = self._close_part()
        self._part = kind
        empty: JSON = (
            {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
            if kind == "output_text"
            else {"type": "refusal", "refusal": ""}
        )
        events.append(
            self._emit(
                {
                    "type": "response.content_part.added",
                    "item_id": self._message["id"],
                    "output_index": self.output.index(self._message),
                    "content_index": len(self._message["content"]),
                    "part": empty,
                }
            )
        )
        self._message["content"].append(empty)
        return events

    def _close_part(self) -> list[JSON]:
        if self._message is None or self._part is None:
            return []
        index = self.output.index(self._message)
        content_index = len(self._message["content"]) - 1
        base = {"item_id": self._message["id"], "output_index": index,
                "content_index": content_index}  # fmt: skip
        if self._part == "output_text":
            text = "".join(self._text)
            part: JSON = {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
            done = self._emit({"type": "response.output_text.done", **base, "text": text,
                               "logprobs": []})  # fmt: skip
            self._text = []
        else:
            refusal = "".join(self._refusal)
            part = {"type": "refusal", "refusal": refusal}
            done = self._emit({"type": "response.refusal.done", **base, "refusal": refusal})
            self._refusal = []
        self._message["content"][content_index] = part
        self._part = None
        return [done, self._emit({"type": "response.content_part.done", **base, "part": part})]

    def _close_message(self, status: str) -> list[JSON]:
        if self._message is None:
            return []
        events = self._close_part()
        self._message["status"] = status
        events.append(
            self._emit(
                {
                    "type": "response.output_item.done",
                    "output_index": self.output.index(self._message),
                    "item": self._message,
                }
            )
        )
        self._message = None
        return events

    def _close_calls(self) -> list[JSON]:
        events: list[JSON] = []
        for chat_index in sorted(self._calls):
            item = self._calls[chat_index]
            index = self._call_index[chat_index]
            item["status"] = "completed"
            events.append(
                self._emit(
                    {
                        "type": "response.function_call_arguments.done",
                        "item_id": item["id"],
                        "output_index": index,
                        "name": item["name"],
                        "arguments": item["arguments"],
                    }
                )
            )
            events.append(
                self._emit(
                    {"type": "response.output_item.done", "output_index": index, "item": item}
                )
            )
        self._calls = {}
        return events

    # -- input
    def feed(self, chunk: JSON) -> list[JSON]:
        events = self._start()
        if chunk.get("model"):
            self.response["model"] = chunk["model"]
        if isinstance(chunk.get("service_tier"), str):
            self.response["service_tier"] = chunk["service_tier"]
        if isinstance(chunk.get("usage"), dict):
            self.usage = chunk["usage"]
        for choice in chunk.get("choices") or ():
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            if delta.get("content"):
                events += self._part_delta("output_text", delta["content"])
            if delta.get("refusal"):
                events += self._part_delta("refusal", delta["refusal"])
            for tc in delta.get("tool_calls") or ():
                events += self._tool_delta(tc)
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]
        return events

    def _part_delta(self, kind: str, piece: str) -> list[JSON]:
        """Text or refusal text appended to the open message's part of that `kind`."""
        events = self._open_message()
        events += self._open_part(kind)
        assert self._message is not None
        event: JSON = {
            "type": "response.output_text.delta"
            if kind == "output_text"
            else "response.refusal.delta",
            "item_id": self._message["id"],
            "output_index": self.output.index(self._message),
            "content_index": len(self._message["content"]) - 1,
            "delta": piece,
        }
        if kind == "output_text":
            self._text.append(piece)
            event["logprobs"] = []
        else:
            self._refusal.append(piece)
        events.append(self._emit(event))
        return events

    def _tool_delta(self, tc: JSON) -> list[JSON]:
        events: list[JSON] = []
        chat_index = int(tc.get("index", 0))
        fn = tc.get("function") or {}
        item = self._calls.get(chat_index)
        if item is None:
            events += self._close_message("completed")
            item = {
                "id": _new_id("fc_"),
                "type": "function_call",
                "call_id": str(tc.get("id") or _new_id("call_")),
                "name": str(fn.get("name") or ""),
                "arguments": "",
                "status": "in_progress",
            }
            self.output.append(item)
            self._calls[chat_index] = item
            self._call_index[chat_index] = len(self.output) - 1
            events.append(
                self._emit(
                    {
                        "type": "response.output_item.added",
                        "output_index": len(self.output) - 1,
                        "item": dict(item),
                    }
                )
            )
        piece = fn.get("arguments")
        if piece:
            item["arguments"] += piece
            events.append(
                self._emit(
                    {
                        "type": "response.function_call_arguments.delta",
                        "item_id": item["id"],
                        "output_index": self._call_index[chat_index],
                        "delta": piece,
                    }
                )
            )
        return events

    def finish(self) -> list[JSON]:
        """The closing events of a stream that ended well."""
        events = self._start()
        status, incomplete = _status_for(self.finish_reason)
        events += self._close_message("completed" if status == "completed" else "incomplete")
        events += self._close_calls()
        self.response.update(
            status=status,
            incomplete_details=incomplete,
            completed_at=int(time.time()) if status == "completed" else None,
            output=self.output,
            usage=chat_usage_to_responses(self.usage),
        )
        kind = "response.completed" if status == "completed" else "response.incomplete"
        events.append(self._emit({"type": kind, "response": self.response}))
        return events

    def fail(self, message: str, code: str = "server_error") -> list[JSON]:
        """The closing events of a stream that broke: `error`, then `response.failed`."""
        events = self._start()
        events.append(
            self._emit({"type": "error", "code": code, "message": message, "param": None})
        )
        self.response.update(
            status="failed",
            output=self.output,
            error={"code": "server_error", "message": message},
        )
        if self.usage:
            self.response["usage"] = chat_usage_to_responses(self.usage)
        events.append(self._emit({"type": "response.failed", "response": self.response}))
        return events
