"""Translate between the OpenAI Chat Completions and Anthropic Messages wire formats.

Why this exists: a client speaks one dialect while routing picks a deployment that speaks the
other. Everything here is a pure function (or a small state machine for streams) over parsed
JSON dicts, so the edge, the cache and the tests can all use it without HTTP.

Decisions on mappings that have no exact equivalent (also in the function docstrings):

* ``temperature`` — OpenAI allows 0–2, Anthropic 0–1. Values above 1 are **clamped to 1**,
  not scaled: scaling would turn OpenAI's default (1) into 0.5 and change every default call.
* ``response_format`` json_object / json_schema — Anthropic has no JSON mode, so an
  instruction ("reply with JSON only", plus the schema) is **appended to ``system``**. It is
  a request, not a guarantee; forcing a tool call would be stricter but changes the response
  shape the client sees.
* OpenAI params whose contract cannot be honoured (``n > 1``, ``logprobs``, ``top_logprobs``,
  ``logit_bias``, audio output, non-zero ``presence_penalty``/``frequency_penalty``,
  ``web_search_options``, legacy ``functions``) raise :class:`TranslationError`; their
  neutral values (``n: 1``, ``logprobs: false``, ``logit_bias: {}``, penalties ``0``) pass,
  since some SDKs send them by default. Params that only affect storage, billing, latency
  or determinism hints (``store``, ``metadata``, ``service_tier``, ``seed``, ``prediction``,
  ``prompt_cache_key``, ``prompt_cache_retention``, ``stream_options``, ``reasoning_effort``,
  ``verbosity``) are ignored. Unknown params raise, like OpenAI itself does.
  ``top_k`` and ``thinking`` are passed through as Anthropic extensions.
* ``thinking`` (Anthropic → OpenAI) is **dropped**: an answer without thinking blocks is
  still a valid Anthropic message, and ``reasoning_effort`` would 400 on non-reasoning
  models. Thinking blocks in history are dropped too (their signatures mean nothing to
  OpenAI). ``cache_control`` is dropped (OpenAI caches prefixes automatically). ``top_k``
  is dropped (no OpenAI equivalent; sampling advice only).
* Mid-conversation system/developer messages are hoisted into Anthropic's top-level
  ``system`` in order; Anthropic has nowhere else to put them.
"""

from __future__ import annotations

import functools
import json
import time
import uuid
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

from spendgate.errors import SpendgateError

__all__ = [
    "AnthropicToOpenAIStream",
    "OpenAIToAnthropicStream",
    "TranslationError",
    "anthropic_response_to_openai",
    "anthropic_stop_to_openai",
    "anthropic_to_openai_request",
    "anthropic_usage_to_openai",
    "openai_finish_to_anthropic",
    "openai_response_to_anthropic",
    "openai_to_anthropic_request",
    "openai_usage_to_anthropic",
]

JSON = dict[str, Any]


class TranslationError(SpendgateError, ValueError):
    """A request that cannot be expressed in the target format.

    ``param`` names the offending request field (OpenAI-style path such as
    ``messages[2].content[0]``) so the edge can return a 400 that points at it.
    """

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


_P = ParamSpec("_P")
_R = TypeVar("_R")


def _shape_errors_are_400(target: str) -> Callable[[Callable[_P, _R]], Callable[_P, _R]]:
    """A request translator meets client input: the edge checks the shapes stages rely on,
    and anything it let through that a translator can't read is still the client's error
    (a 400 naming the target format), never a crash."""

    def wrap(fn: Callable[_P, _R]) -> Callable[_P, _R]:
        @functools.wraps(fn)
        def guarded(*args: _P.args, **kwargs: _P.kwargs) -> _R:
            try:
                return fn(*args, **kwargs)
            except TranslationError:
                raise
            except (TypeError, KeyError, AttributeError, ValueError, IndexError) as exc:
                raise TranslationError(
                    f"this request can't be translated to the {target} format: a field has "
                    f"an unexpected shape ({type(exc).__name__}: {str(exc)[:120]})"
                ) from None

        return guarded

    return wrap


# --------------------------------------------------------------------------- stop reasons

_ANTHROPIC_STOP_TO_OPENAI = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}

_OPENAI_FINISH_TO_ANTHROPIC = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}


def anthropic_stop_to_openai(stop_reason: str | None) -> str:
    """OpenAI's ``finish_reason`` is non-null in a final answer, so unknown reasons become stop."""
    return _ANTHROPIC_STOP_TO_OPENAI.get(stop_reason or "end_turn", "stop")


def openai_finish_to_anthropic(finish_reason: str | None) -> str:
    """OpenAI cannot say which stop sequence matched, so ``stop`` is always ``end_turn``."""
    return _OPENAI_FINISH_TO_ANTHROPIC.get(finish_reason or "stop", "end_turn")


# --------------------------------------------------------------------------- usage


def anthropic_usage_to_openai(usage: JSON | None) -> JSON:
    """Anthropic's ``input_tokens`` excludes cache reads/writes; OpenAI's prompt includes them.

    OpenAI's usage has no cache writes, which Anthropic bills above input (and a 1-hour write
    at twice the 5-minute one), so the converted usage carries them in extension fields the
    SDKs keep: ``prompt_tokens_details.cache_write_tokens`` and, mirroring Anthropic's names,
    ``cache_creation: {ephemeral_5m_input_tokens, ephemeral_1h_input_tokens}`` — enough for a
    client to reproduce the billed cost from the published prices."""
    usage = usage or {}
    fresh = int(usage.get("input_tokens") or 0)
    read = int(usage.get("cache_read_input_tokens") or 0)
    written = int(usage.get("cache_creation_input_tokens") or 0)
    output = int(usage.get("output_tokens") or 0)
    prompt = fresh + read + written
    details: JSON = {"cached_tokens": read}
    out: JSON = {
        "prompt_tokens": prompt,
        "completion_tokens": output,
        "total_tokens": prompt + output,
        "prompt_tokens_details": details,
    }
    if written:
        details["cache_write_tokens"] = written
        split = usage.get("cache_creation")
        one_hour = (
            int(split.get("ephemeral_1h_input_tokens") or 0) if isinstance(split, dict) else 0
        )
        out["cache_creation"] = {
            "ephemeral_5m_input_tokens": max(written - one_hour, 0),
            "ephemeral_1h_input_tokens": one_hour,
        }
    return out


def openai_usage_to_anthropic(usage: JSON | None) -> JSON:
    """OpenAI's prompt includes cached tokens; Anthropic reports them apart from input."""
    usage = usage or {}
    prompt = int(usage.get("prompt_tokens") or 0)
    cached = int((usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0)
    return {
        "input_tokens": max(prompt - cached, 0),
        "output_tokens": int(usage.get("completion_tokens") or 0),
        "cache_read_input_tokens": cached,
        "cache_creation_input_tokens": 0,
    }


# --------------------------------------------------------------------------- OpenAI → Anthropic

_OPENAI_IGNORED = frozenset(
    {
        "store",
        "metadata",
        "service_tier",
        "seed",
        "prediction",
        "prompt_cache_key",
        "prompt_cache_retention",
        "safety_identifier",
        "stream_options",
        "reasoning_effort",
        "verbosity",
    }
)
_OPENAI_HANDLED = frozenset(
    {
        "model",
        "messages",
        "max_tokens",
        "max_completion_tokens",
        "temperature",
        "top_p",
        "stop",
        "stream",
        "user",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "response_format",
        "n",
        "logprobs",
        "top_logprobs",
        "logit_bias",
        "presence_penalty",
        "frequency_penalty",
        "modalities",
        "audio",
        "top_k",
        "thinking",
    }
)
_DATA_URL_MEDIA = ("image/jpeg", "image/png", "image/gif", "image/webp")


def _reject_unsupported(body: JSON) -> None:
    """Fail loudly where the client relies on a contract Anthropic cannot honour."""
    n = body.get("n")
    if n is not None and n != 1:
        raise TranslationError("n > 1 is not supported by this model's provider", param="n")
    if body.get("logprobs"):
        raise TranslationError(
            "logprobs are not supported by this model's provider", param="logprobs"
        )
    if body.get("top_logprobs"):
        raise TranslationError(
            "top_logprobs are not supported by this model's provider", param="top_logprobs"
        )
    if body.get("logit_bias"):
        raise TranslationError(
            "logit_bias is not supported by this model's provider", param="logit_bias"
        )
    for penalty in ("presence_penalty", "frequency_penalty"):
        if body.get(penalty):
            raise TranslationError(
                f"{penalty} is not supported by this model's provider", param=penalty
            )
    if body.get("audio") is not None:
        raise TranslationError(
            "audio output is not supported by this model's provider", param="audio"
        )
    if "audio" in (body.get("modalities") or []):
        raise TranslationError(
            "audio output is not supported by this model's provider", param="modalities"
        )
    for key in body:
        if key in ("functions", "function_call"):
            raise TranslationError(f"{key} is deprecated; use tools and tool_choice", param=key)
        if key not in _OPENAI_HANDLED and key not in _OPENAI_IGNORED:
            raise TranslationError(f"Unrecognized request argument supplied: {key}", param=key)


def _text_of(content: Any, param: str) -> list[JSON]:
    """Text blocks from a system/developer/tool content (string or text parts)."""
    if content is None:
        return []
    return _blocks_of(content, param, text_only=True)


def _image_block(part: JSON, param: str) -> JSON:
    image = part.get("image_url")
    url = image.get("url") if isinstance(image, dict) else image
    if not isinstance(url, str) or not url:
        raise TranslationError("image_url.url is required", param=f"{param}.image_url.url")
    if url.startswith("data:"):
        header, sep, data = url[5:].partition(",")
        media_type, _, encoding = header.partition(";")
        if not sep or encoding != "base64":
            raise TranslationError(
                "image data URLs must be base64-encoded", param=f"{param}.image_url.url"
            )
        if media_type not in _DATA_URL_MEDIA:
            raise TranslationError(
                f"unsupported image type {media_type!r}; use one of " + ", ".join(_DATA_URL_MEDIA),
                param=f"{param}.image_url.url",
            )
        source: JSON = {"type": "base64", "media_type": media_type, "data": data}
    elif url.startswith(("http://", "https://")):
        source = {"type": "url", "url": url}
    else:
        raise TranslationError(
            "image_url.url must be an http(s) or data: URL", param=f"{param}.image_url.url"
        )
    return {"type": "image", "source": source}


def _file_block(part: JSON, param: str) -> JSON:
    file = part.get("file") or {}
    data_url = file.get("file_data")
    if not isinstance(data_url, str) or not data_url.startswith("data:application/pdf;base64,"):
        raise TranslationError(
            "only inline PDF files (file_data as a base64 data: URL) are "
            "supported by this model's provider",
            param=f"{param}.file",
        )
    data = data_url.split(",", 1)[1]
    return {
        "type": "document",
        "source": {"type": "base64", "media_type": "application/pdf", "data": data},
    }


def _user_blocks(content: Any, param: str) -> list[JSON]:
    return _blocks_of(content, param, text_only=False)


def _blocks_of(content: Any, param: str, *, text_only: bool) -> list[JSON]:
    """Anthropic blocks from a Chat content: text parts, and (`text_only` False: a user
    turn) images and PDF files; `cache_control` carried over; empty text dropped."""
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    if not isinstance(content, list):
        raise TranslationError("content must be a string or an array of parts", param=param)
    blocks: list[JSON] = []
    for j, part in enumerate(content):
        where = f"{param}[{j}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if text_only and kind != "text":
            raise TranslationError("only text parts are allowed here", param=where)
        if kind == "text":
            if not part.get("text"):
                continue  # Anthropic rejects empty text blocks
            block: JSON = {"type": "text", "text": part["text"]}
        elif kind == "image_url":
            block = _image_block(part, where)
        elif kind == "file":
            block = _file_block(part, where)
        else:
            raise TranslationError(
                f"content part type {kind!r} is not supported by this model's provider", param=where
            )
        if part.get("cache_control"):
            block["cache_control"] = part["cache_control"]
        blocks.append(block)
    return blocks


def _assistant_blocks(msg: JSON, param: str) -> list[JSON]:
    content = msg.get("content")
    blocks: list[JSON] = []
    if isinstance(content, str):
        if content:
            blocks.append({"type": "text", "text": content})
    elif isinstance(content, list):
        for j, part in enumerate(content):
            kind = part.get("type") if isinstance(part, dict) else None
            text = part.get(kind) if kind in ("text", "refusal") else None
            if kind not in ("text", "refusal"):
                raise TranslationError(
                    "assistant content parts must be text or refusal", param=f"{param}.content[{j}]"
                )
            if text:
                blocks.append({"type": "text", "text": text})
    elif content is not None:
        raise TranslationError(
            "content must be a string or an array of parts", param=f"{param}.content"
        )
    for j, call in enumerate(msg.get("tool_calls") or []):
        where = f"{param}.tool_calls[{j}]"
        if call.get("type", "function") != "function":
            raise TranslationError("only function tool calls are supported", param=where)
        fn = call.get("function") or {}
        raw = fn.get("arguments") or "{}"
        try:
            args = json.loads(raw)
        except (TypeError, ValueError) as exc:
            raise TranslationError(
                f"tool call arguments are not valid JSON: {exc}",
                param=f"{where}.function.arguments",
            ) from exc
        if not isinstance(args, dict):
            raise TranslationError(
                "tool call arguments must be a JSON object", param=f"{where}.function.arguments"
            )
        blocks.append(
            {
                "type": "tool_use",
                "id": call.get("id") or f"toolu_{j}",
                "name": fn.get("name", ""),
                "input": args,
            }
        )
    return blocks


def _tool_result_block(msg: JSON, param: str) -> JSON:
    if not msg.get("tool_call_id"):
        raise TranslationError("tool messages need tool_call_id", param=f"{param}.tool_call_id")
    block: JSON = {"type": "tool_result", "tool_use_id": msg["tool_call_id"]}
    content = msg.get("content")
    if isinstance(content, str):
        block["content"] = content
    else:
        block["content"] = _text_of(content, f"{param}.content")
    return block


def _append(messages: list[JSON], role: str, blocks: list[JSON]) -> None:
    """Merge same-role neighbours because Anthropic requires strict user/assistant alternation."""
    if not blocks:
        return
    if messages and messages[-1]["role"] == role:
        messages[-1]["content"].extend(blocks)
    else:
        messages.append({"role": role, "content": list(blocks)})


def _convert_messages(raw: Any) -> tuple[list[JSON], list[JSON]]:
    if not isinstance(raw, list) or not raw:
        raise TranslationError("messages must be a non-empty array", param="messages")
    system: list[JSON] = []
    messages: list[JSON] = []
    for i, msg in enumerate(raw):
        param = f"messages[{i}]"
        role = msg.get("role") if isinstance(msg, dict) else None
        if role in ("system", "developer"):
            system.extend(_text_of(msg.get("content"), f"{param}.content"))
        elif role == "user":
            _append(messages, "user", _user_blocks(msg.get("content"), f"{param}.content"))
        elif role == "assistant":
            _append(messages, "assistant", _assistant_blocks(msg, param))
        elif role == "tool":
            _append(messages, "user", [_tool_result_block(msg, param)])
        else:
            raise TranslationError(f"unsupported message role {role!r}", param=f"{param}.role")
    for msg in messages:
        # Anthropic wants tool_result blocks before any other content in a user turn.
        msg["content"].sort(key=lambda b: b["type"] != "tool_result")
    if not messages:
        raise TranslationError(
            "at least one user or assistant message is required", param="messages"
        )
    return system, messages


def _convert_tools(tools: Any) -> list[JSON]:
    out: list[JSON] = []
    for i, tool in enumerate(tools or []):
        if not isinstance(tool, dict) or tool.get("type") != "function":
            raise TranslationError(
                "only function tools are supported by this model's provider", param=f"tools[{i}]"
            )
        fn = tool.get("function") or {}
        if not fn.get("name"):
            raise TranslationError("tool function needs a name", param=f"tools[{i}].function.name")
        converted: JSON = {
            "name": fn["name"],
            "input_schema": fn.get("parameters") or {"type": "object", "properties": {}},
        }
        if fn.get("description"):
            converted["description"] = fn["description"]
        if tool.get("cache_control"):
            converted["cache_control"] = tool["cache_control"]
        out.append(converted)
    return out


def _convert_tool_choice(choice: Any, parallel: Any) -> JSON | None:
    if choice is None or choice == "auto":
        out: JSON = {"type": "auto"}
    elif choice == "none":
        return {"type": "none"}  # disable_parallel_tool_use is not allowed with none
    elif choice == "required":
        out = {"type": "any"}
    elif isinstance(choice, dict) and choice.get("type") == "function":
        name = (choice.get("function") or {}).get("name")
        if not name:
            raise TranslationError(
                "tool_choice.function.name is required", param="tool_choice.function.name"
            )
        out = {"type": "tool", "name": name}
    else:
        raise TranslationError("unsupported tool_choice", param="tool_choice")
    if parallel is False:
        out["disable_parallel_tool_use"] = True
    elif choice is None:
        return None  # nothing to say beyond Anthropic's default
    return out


def _json_instruction(fmt: Any) -> str | None:
    if not isinstance(fmt, dict) or fmt.get("type") in (None, "text"):
        return None
    if fmt["type"] == "json_object":
        return (
            "Respond with a single valid JSON object and nothing else: no prose, "
            "no Markdown code fences."
        )
    if fmt["type"] == "json_schema":
        spec = fmt.get("json_schema") or {}
        schema = json.dumps(spec.get("schema") or {}, separators=(",", ":"), sort_keys=True)
        return (
            "Respond with a single valid JSON value that conforms to this JSON Schema, "
            "and nothing else: no prose, no Markdown code fences.\n"
            f"Schema ({spec.get('name', 'response')}): {schema}"
        )
    raise TranslationError(
        f"unsupported response_format type {fmt['type']!r}", param="response_format.type"
    )


@_shape_errors_are_400("Anthropic Messages")
def openai_to_anthropic_request(body: JSON, *, default_max_tokens: int = 4096) -> JSON:
    """A Chat Completions request as an Anthropic Messages request.

    Content is always emitted as block lists (never bare strings) so later stages such as
    prompt-prefix caching can attach ``cache_control`` without reshaping. See the module
    docstring for temperature clamping, ``response_format`` and ignored/rejected params.
    Raises :class:`TranslationError` naming the param on anything untranslatable.
    """
    _reject_unsupported(body)
    system, messages = _convert_messages(body.get("messages"))
    out: JSON = {}
    if "model" in body:
        out["model"] = body["model"]
    out["messages"] = messages

    instruction = _json_instruction(body.get("response_format"))
    if instruction:
        system.append({"type": "text", "text": instruction})
    if system:
        out["system"] = system

    limit = body.get("max_completion_tokens")
    if limit is None:
        limit = body.get("max_tokens")
    if limit is None:
        limit = default_max_tokens
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
        key = "max_completion_tokens" if "max_completion_tokens" in body else "max_tokens"
        raise TranslationError("max tokens must be a positive integer", param=key)
    out["max_tokens"] = limit

    temperature = body.get("temperature")
    if temperature is not None:
        if (
            not isinstance(temperature, int | float)
            or isinstance(temperature, bool)
            or temperature < 0
        ):
            raise TranslationError("temperature must be a number >= 0", param="temperature")
        out["temperature"] = min(float(temperature), 1.0)
    if body.get("top_p") is not None:
        out["top_p"] = body["top_p"]
    if body.get("top_k") is not None:
        out["top_k"] = body["top_k"]

    stop = body.get("stop")
    if isinstance(stop, str):
        out["stop_sequences"] = [stop]
    elif isinstance(stop, list) and stop:
        if not all(isinstance(s, str) for s in stop):
            raise TranslationError("stop must be a string or an array of strings", param="stop")
        out["stop_sequences"] = list(stop)
    elif stop not in (None, []):
        raise TranslationError("stop must be a string or an array of strings", param="stop")

    if body.get("stream"):
        out["stream"] = True
    if body.get("user"):
        out["metadata"] = {"user_id": str(body["user"])}
    if body.get("thinking") is not None:
        out["thinking"] = body["thinking"]

    tools = _convert_tools(body.get("tools"))
    if tools:
        out["tools"] = tools
        choice = _convert_tool_choice(body.get("tool_choice"), body.get("parallel_tool_calls"))
        if choice is not None:
            out["tool_choice"] = choice
    return out


def anthropic_response_to_openai(
    resp: JSON, *, model: str | None = None, created: int | None = None
) -> JSON:
    """An Anthropic Message as a ``CreateChatCompletionResponse``.

    Thinking and server-tool blocks are dropped: Chat Completions has no place for them.
    """
    texts: list[str] = []
    tool_calls: list[JSON] = []
    for block in resp.get("content") or []:
        if block.get("type") == "text":
            texts.append(block.get("text", ""))
        elif block.get("type") == "tool_use":
            tool_calls.append(
                {
                    "id": block.get("id", ""),
                    "type": "function",
                    "function": {
                        "name": block.get("name", ""),
                        "arguments": json.dumps(block.get("input") or {}, ensure_ascii=False),
                    },
                }
            )
    text = "".join(texts)
    message: JSON = {
        "role": "assistant",
        "content": None if (tool_calls and not text) else text,
        "refusal": None,
    }
    if tool_calls:
        message["tool_calls"] = tool_calls
    return {
        "id": _openai_id(resp.get("id")),
        "object": "chat.completion",
        "created": int(time.time()) if created is None else created,
        "model": model or resp.get("model") or "",
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": anthropic_stop_to_openai(resp.get("stop_reason")),
            }
        ],
        "usage": anthropic_usage_to_openai(resp.get("usage")),
    }


def _openai_id(anthropic_id: Any) -> str:
    if isinstance(anthropic_id, str) and anthropic_id:
        return anthropic_id if anthropic_id.startswith("chatcmpl-") else f"chatcmpl-{anthropic_id}"
    return f"chatcmpl-{uuid.uuid4().hex}"


def _anthropic_id(openai_id: Any) -> str:
    if isinstance(openai_id, str) and openai_id:
        return openai_id if openai_id.startswith("msg_") else f"msg_{openai_id}"
    return f"msg_{uuid.uuid4().hex}"


# --------------------------------------------------------------------------- Anthropic → OpenAI

_ANTHROPIC_IGNORED = frozenset({"thinking", "service_tier", "top_k", "metadata"})
_ANTHROPIC_HANDLED = frozenset(
    {
        "model",
        "messages",
        "system",
        "max_tokens",
        "stop_sequences",
        "stream",
        "temperature",
        "top_p",
        "tools",
        "tool_choice",
    }
)


def _blocks(content: Any, param: str) -> list[JSON]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if not isinstance(content, list):
        raise TranslationError("content must be a string or an array of blocks", param=param)
    return content


def _image_part(block: JSON, param: str) -> JSON:
    source = block.get("source") or {}
    if source.get("type") == "base64":
        url = f"data:{source.get('media_type')};base64,{source.get('data', '')}"
    elif source.get("type") == "url":
        url = source.get("url", "")
    else:
        raise TranslationError("image source must be base64 or url", param=f"{param}.source")
    return {"type": "image_url", "image_url": {"url": url}}


def _document_part(block: JSON, param: str) -> JSON:
    source = block.get("source") or {}
    if source.get("type") != "base64" or source.get("media_type") != "application/pdf":
        raise TranslationError(
            "only base64 PDF documents are supported by this model's provider",
            param=f"{param}.source",
        )
    return {
        "type": "file",
        "file": {
            "filename": block.get("title") or "document.pdf",
            "file_data": f"data:application/pdf;base64,{source.get('data', '')}",
        },
    }


def _tool_message(block: JSON, param: str) -> JSON:
    content = block.get("content")
    if content is None:
        text = ""
    elif isinstance(content, str):
        text = content
    else:
        parts = []
        for k, item in enumerate(content):
            if item.get("type") != "text":
                raise TranslationError(
                    "tool results may only contain text for this model's provider",
                    param=f"{param}.content[{k}]",
                )
            parts.append(item.get("text", ""))
        text = "\n".join(parts)
    if block.get("is_error"):
        text = f"[tool error] {text}"
    return {"role": "tool", "tool_call_id": block.get("tool_use_id", ""), "content": text}


def _user_messages(content: Any, param: str) -> list[JSON]:
    """Tool results become separate ``tool`` messages placed before the user's own parts."""
    tools: list[JSON] = []
    parts: list[JSON] = []
    for j, block in enumerate(_blocks(content, param)):
        where = f"{param}[{j}]"
        kind = block.get("type")
        if kind == "text":
            parts.append({"type": "text", "text": block.get("text", "")})
        elif kind == "image":
            parts.append(_image_part(block, where))
        elif kind == "document":
            parts.append(_document_part(block, where))
        elif kind == "tool_result":
            tools.append(_tool_message(block, where))
        else:
            raise TranslationError(
                f"content block type {kind!r} is not supported by this model's provider",
                param=where,
            )
    out = list(tools)
    if parts:
        only_text = all(p["type"] == "text" for p in parts)
        body: Any = "".join(p["text"] for p in parts) if only_text and len(parts) == 1 else parts
        out.append({"role": "user", "content": body})
    return out


def _assistant_message(content: Any, param: str) -> JSON | None:
    texts: list[str] = []
    calls: list[JSON] = []
    for j, block in enumerate(_blocks(content, param)):
        kind = block.get("type")
        if kind == "text":
            texts.append(block.get("text", ""))
        elif kind == "tool_use":
            calls.append(
                {
                    "id": block.get("id", ""),
                    "type": "function",
                    "function": {
                        "name": block.get("name", ""),
                        "arguments": json.dumps(block.get("input") or {}, ensure_ascii=False),
                    },
                }
            )
        elif kind in ("thinking", "redacted_thinking"):
            continue
        else:
            raise TranslationError(
                f"content block type {kind!r} is not supported by this model's provider",
                param=f"{param}[{j}]",
            )
    if not texts and not calls:
        return None
    msg: JSON = {"role": "assistant", "content": "".join(texts) if texts else None}
    if calls:
        msg["tool_calls"] = calls
    return msg


def _system_message(system: Any) -> JSON | None:
    if system is None or system == "" or system == []:
        return None
    if isinstance(system, str):
        return {"role": "system", "content": system}
    texts = []
    for j, block in enumerate(system):
        if not isinstance(block, dict) or block.get("type") != "text":
            raise TranslationError("system blocks must be text", param=f"system[{j}]")
        texts.append(block.get("text", ""))
    if len(texts) == 1:
        return {"role": "system", "content": texts[0]}
    return {"role": "system", "content": [{"type": "text", "text": t} for t in texts]}


def _function_tools(tools: Any) -> list[JSON]:
    out = []
    for i, tool in enumerate(tools or []):
        if tool.get("type") not in (None, "custom") or "input_schema" not in tool:
            raise TranslationError(
                f"server tool {tool.get('type')!r} is not supported by this model's provider",
                param=f"tools[{i}]",
            )
        fn: JSON = {"name": tool["name"], "parameters": tool["input_schema"]}
        if tool.get("description"):
            fn["description"] = tool["description"]
        out.append({"type": "function", "function": fn})
    return out


def _openai_tool_choice(choice: Any) -> Any:
    kind = choice.get("type") if isinstance(choice, dict) else None
    if kind == "auto":
        return "auto"
    if kind == "any":
        return "required"
    if kind == "none":
        return "none"
    if kind == "tool":
        return {"type": "function", "function": {"name": choice.get("name", "")}}
    raise TranslationError("unsupported tool_choice", param="tool_choice")


@_shape_errors_are_400("OpenAI Chat Completions")
def anthropic_to_openai_request(body: JSON) -> JSON:
    """An Anthropic Messages request as a Chat Completions request.

    ``max_tokens`` becomes ``max_completion_tokens`` (``max_tokens`` is deprecated and
    rejected by OpenAI reasoning models). Streaming requests ask for usage in the final
    chunk, which the gateway needs for pricing. ``thinking``, ``cache_control``, ``top_k``
    and ``service_tier`` are dropped (see module docstring).
    """
    for key in body:
        if key not in _ANTHROPIC_HANDLED and key not in _ANTHROPIC_IGNORED:
            raise TranslationError(
                f"{key}: Extra inputs are not permitted by this model's provider", param=key
            )
    messages: list[JSON] = []
    system = _system_message(body.get("system"))
    if system:
        messages.append(system)
    raw = body.get("messages")
    if not isinstance(raw, list) or not raw:
        raise TranslationError("messages must be a non-empty array", param="messages")
    for i, msg in enumerate(raw):
        param = f"messages[{i}].content"
        role = msg.get("role") if isinstance(msg, dict) else None
        if role == "user":
            messages.extend(_user_messages(msg.get("content"), param))
        elif role == "assistant":
            converted = _assistant_message(msg.get("content"), param)
            if converted:
                messages.append(converted)
        else:
            raise TranslationError(
                f"unsupported message role {role!r}", param=f"messages[{i}].role"
            )

    out: JSON = {}
    if "model" in body:
        out["model"] = body["model"]
    out["messages"] = messages
    if body.get("max_tokens") is not None:
        out["max_completion_tokens"] = body["max_tokens"]
    for key in ("temperature", "top_p"):
        if body.get(key) is not None:
            out[key] = body[key]
    stops = body.get("stop_sequences")
    if stops:
        if len(stops) > 4:
            raise TranslationError(
                "this model's provider accepts at most 4 stop sequences", param="stop_sequences"
            )
        out["stop"] = list(stops)
    if body.get("stream"):
        out["stream"] = True
        out["stream_options"] = {"include_usage": True}
    user = (body.get("metadata") or {}).get("user_id")
    if user:
        out["user"] = user
    tools = _function_tools(body.get("tools"))
    if tools:
        out["tools"] = tools
        choice = body.get("tool_choice")
        if choice:
            out["tool_choice"] = _openai_tool_choice(choice)
            if choice.get("disable_parallel_tool_use"):
                out["parallel_tool_calls"] = False
    return out


def _parse_arguments(raw: Any) -> JSON:
    """Models sometimes emit invalid JSON; keep the raw text rather than failing the response."""
    if not raw:
        return {}
    try:
        parsed = json.loads(raw)
    except (TypeError, ValueError):
        return {"_raw_arguments": raw}
    return parsed if isinstance(parsed, dict) else {"_value": parsed}


def openai_response_to_anthropic(resp: JSON, *, model: str | None = None) -> JSON:
    """A ``CreateChatCompletionResponse`` as an Anthropic Message (first choice only).

    A refusal becomes a text block with ``stop_reason: refusal``. Tool-call arguments that
    are not valid JSON are kept as ``{"_raw_arguments": "..."}`` instead of failing.
    """
    choices = resp.get("choices") or [{}]
    choice = choices[0]
    message = choice.get("message") or {}
    content: list[JSON] = []
    stop_reason = openai_finish_to_anthropic(choice.get("finish_reason"))
    if message.get("content"):
        content.append({"type": "text", "text": message["content"]})
    if message.get("refusal"):
        content.append({"type": "text", "text": message["refusal"]})
        stop_reason = "refusal"
    for call in message.get("tool_calls") or []:
        fn = call.get("function") or {}
        content.append(
            {
                "type": "tool_use",
                "id": call.get("id", ""),
                "name": fn.get("name", ""),
                "input": _parse_arguments(fn.get("arguments")),
            }
        )
    return {
        "id": _anthropic_id(resp.get("id")),
        "type": "message",
        "role": "assistant",
        "content": content,
        "model": model or resp.get("model") or "",
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": openai_usage_to_anthropic(resp.get("usage")),
    }


# --------------------------------------------------------------------------- streaming


class AnthropicToOpenAIStream:
    """Turns Anthropic SSE events into ``chat.completion.chunk`` dicts, one event at a time.

    Why stateful: Anthropic numbers content blocks across text and tools, OpenAI numbers
    tool calls only, and the finish reason and usage arrive in separate events.
    """

    def __init__(
        self,
        model: str,
        *,
        include_usage: bool,
        created: int | None = None,
        chunk_id: str | None = None,
    ) -> None:
        self.model = model
        self.include_usage = include_usage
        self.created = int(time.time()) if created is None else created
        self.chunk_id = chunk_id
        self._usage: JSON = {}
        self._role_sent = False
        self._finished = False
        self._stopped = False
        self._tool_index: dict[int, int] = {}

    @property
    def usage(self) -> JSON:
        """Anthropic usage as last reported (message_start merged with message_delta)."""
        return dict(self._usage)

    def _chunk(self, delta: JSON, finish_reason: str | None = None) -> JSON:
        if not self._role_sent:
            delta = {"role": "assistant", **delta}
            self._role_sent = True
        chunk: JSON = {
            "id": self.chunk_id or _openai_id(None),
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [
                {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
            ],
        }
        self.chunk_id = chunk["id"]
        if self.include_usage:
            chunk["usage"] = None
        return chunk

    def _merge_usage(self, usage: Any) -> None:
        if isinstance(usage, dict):
            self._usage.update({k: v for k, v in usage.items() if v is not None})

    def feed(self, event_type: str, data: JSON) -> list[JSON]:
        """Zero or more chunks for one Anthropic event; ``ping``/``error``/unknown give none."""
        if event_type == "message_start":
            message = data.get("message") or {}
            if self.chunk_id is None:
                self.chunk_id = _openai_id(message.get("id"))
            self._merge_usage(message.get("usage"))
            return [self._chunk({"content": "", "refusal": None})]
        if event_type == "content_block_start":
            return self._block_start(data)
        if event_type == "content_block_delta":
            return self._block_delta(data)
        if event_type == "message_delta":
            self._merge_usage(data.get("usage"))
            reason = (data.get("delta") or {}).get("stop_reason")
            if reason is None or self._finished:
                return []
            self._finished = True
            return [self._chunk({}, anthropic_stop_to_openai(reason))]
        if event_type == "message_stop":
            return self._stop()
        return []

    def _block_start(self, data: JSON) -> list[JSON]:
        block = data.get("content_block") or {}
        if block.get("type") == "text":
            return [self._chunk({"content": block["text"]})] if block.get("text") else []
        if block.get("type") != "tool_use":
            return []
        index = len(self._tool_index)
        self._tool_index[int(data.get("index", 0))] = index
        call = {
            "index": index,
            "id": block.get("id", ""),
            "type": "function",
            "function": {"name": block.get("name", ""), "arguments": ""},
        }
        return [self._chunk({"tool_calls": [call]})]

    def _block_delta(self, data: JSON) -> list[JSON]:
        delta = data.get("delta") or {}
        if delta.get("type") == "text_delta" and delta.get("text"):
            return [self._chunk({"content": delta["text"]})]
        if delta.get("type") == "input_json_delta" and delta.get("partial_json"):
            index = self._tool_index.get(int(data.get("index", 0)))
            if index is None:
                return []
            call = {"index": index, "function": {"arguments": delta["partial_json"]}}
            return [self._chunk({"tool_calls": [call]})]
        return []

    def _stop(self) -> list[JSON]:
        if self._stopped:
            return []
        self._stopped = True
        out: list[JSON] = []
        if not self._finished:
            self._finished = True
            out.append(self._chunk({}, "stop"))
        if self.include_usage:
            chunk = self._chunk({})
            chunk["choices"] = []
            chunk["usage"] = anthropic_usage_to_openai(self._usage)
            out.append(chunk)
        return out


Event = tuple[str, JSON]


class OpenAIToAnthropicStream:
    """Turns ``chat.completion.chunk`` dicts into Anthropic ``(event, data)`` pairs.

    Why ``message_delta`` waits: OpenAI sends usage in a chunk *after* the finish reason, and
    Anthropic clients read output usage from ``message_delta``, so the close is held until the
    usage chunk arrives or :meth:`finish` is called at ``[DONE]``.
    """

    def __init__(self, model: str) -> None:
        self.model = model
        self._started = False
        self._closed = False
        self._message_id: str | None = None
        self._open: int | None = None  # index of the open Anthropic block
        self._open_kind: str | None = None
        self._next_block = 0
        self._tool_blocks: dict[int, int] = {}
        self._stop_reason: str | None = None
        self._usage: JSON | None = None

    @property
    def usage(self) -> JSON | None:
        """The OpenAI usage from the final chunk, if the upstream sent one."""
        return self._usage

    def feed(self, chunk: JSON) -> list[Event]:
        """Zero or more Anthropic events for one OpenAI chunk."""
        if self._closed:
            return []
        out = self._start(chunk.get("id"))
        for choice in chunk.get("choices") or []:
            if choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            for text_key in ("content", "refusal"):
                if delta.get(text_key):
                    if text_key == "refusal":
                        self._stop_reason = "refusal"
                    out += self._text(delta[text_key])
            for call in delta.get("tool_calls") or []:
                out += self._tool(call)
            if choice.get("finish_reason"):
                if self._stop_reason != "refusal":
                    self._stop_reason = openai_finish_to_anthropic(choice["finish_reason"])
                out += self._close_block()
        if chunk.get("usage"):
            self._usage = chunk["usage"]
            if self._stop_reason is not None:
                out += self._end()
        return out

    def finish(self) -> list[Event]:
        """Close open blocks and the message; safe to call twice or on an empty stream."""
        if self._closed:
            return []
        return self._start(None) + self._close_block() + self._end()

    def _start(self, chunk_id: Any) -> list[Event]:
        if self._started:
            return []
        self._started = True
        self._message_id = _anthropic_id(chunk_id)
        message: JSON = {
            "id": self._message_id,
            "type": "message",
            "role": "assistant",
            "content": [],
            "model": self.model,
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 0, "output_tokens": 0},
        }
        return [("message_start", {"type": "message_start", "message": message})]

    def _open_block(self, kind: str, block: JSON) -> list[Event]:
        out = self._close_block()
        self._open, self._open_kind = self._next_block, kind
        self._next_block += 1
        start = {"type": "content_block_start", "index": self._open, "content_block": block}
        return [*out, ("content_block_start", start)]

    def _close_block(self) -> list[Event]:
        if self._open is None:
            return []
        index, self._open, self._open_kind = self._open, None, None
        return [("content_block_stop", {"type": "content_block_stop", "index": index})]

    def _text(self, text: str) -> list[Event]:
        out = (
            []
            if self._open_kind == "text"
            else self._open_block("text", {"type": "text", "text": ""})
        )
        assert self._open is not None
        delta = {
            "type": "content_block_delta",
            "index": self._open,
            "delta": {"type": "text_delta", "text": text},
        }
        return [*out, ("content_block_delta", delta)]

    def _tool(self, call: JSON) -> list[Event]:
        out: list[Event] = []
        tool_index = int(call.get("index", 0))
        fn = call.get("function") or {}
        if tool_index not in self._tool_blocks:
            out += self._open_block(
                "tool_use",
                {
                    "type": "tool_use",
                    "id": call.get("id") or f"toolu_{uuid.uuid4().hex[:24]}",
                    "name": fn.get("name", ""),
                    "input": {},
                },
            )
            assert self._open is not None
            self._tool_blocks[tool_index] = self._open
        if fn.get("arguments"):
            out.append(
                (
                    "content_block_delta",
                    {
                        "type": "content_block_delta",
                        "index": self._tool_blocks[tool_index],
                        "delta": {"type": "input_json_delta", "partial_json": fn["arguments"]},
                    },
                )
            )
        return out

    def _end(self) -> list[Event]:
        self._closed = True
        usage = openai_usage_to_anthropic(self._usage)
        delta_usage = {
            "output_tokens": usage["output_tokens"],
            "input_tokens": usage["input_tokens"],
            "cache_read_input_tokens": usage["cache_read_input_tokens"],
        }
        return [
            (
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {
                        "stop_reason": self._stop_reason or "end_turn",
                        "stop_sequence": None,
                    },
                    "usage": delta_usage,
                },
            ),
            ("message_stop", {"type": "message_stop"}),
        ]
