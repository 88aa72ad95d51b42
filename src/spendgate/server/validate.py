"""Request validation at the edge, with OpenAI's wording and the offending `param` named.

Hand-written rather than a pydantic model of the whole request: it checks only what the
gateway relies on or what would otherwise reach the provider as a confusing error, and it
costs a few microseconds on the hot path. Unknown top-level parameters are refused the way
OpenAI refuses them, so a typo is not silently dropped.
"""

from __future__ import annotations

from typing import Any

from spendgate.errors import GatewayError

__all__ = ["validate_chat", "validate_embeddings", "validate_messages"]

CHAT_PARAMS = frozenset(
    {
        "audio", "frequency_penalty", "function_call", "functions", "logit_bias", "logprobs",
        "max_completion_tokens", "max_tokens", "messages", "metadata", "modalities", "model",
        "moderation", "n", "parallel_tool_calls", "prediction", "presence_penalty",
        "prompt_cache_key", "prompt_cache_options", "prompt_cache_retention",
        "reasoning_effort", "response_format", "safety_identifier", "seed", "service_tier",
        "stop", "store", "stream", "stream_options", "temperature", "tool_choice", "tools",
        "top_logprobs", "top_p", "user", "verbosity", "web_search_options",
    }
)  # fmt: skip
CHAT_ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})

MESSAGES_PARAMS = frozenset(
    {
        "model", "messages", "max_tokens", "system", "metadata", "stop_sequences", "stream",
        "temperature", "top_p", "top_k", "tools", "tool_choice", "thinking", "service_tier",
        "container", "mcp_servers", "context_management",
    }
)  # fmt: skip

EMBEDDING_PARAMS = frozenset({"model", "input", "dimensions", "encoding_format", "user"})
MAX_EMBEDDING_DIMENSIONS = 4096
"""The widest embedding any provider serves is 3,072 (text-embedding-3-large); the bound keeps
a request from asking a provider, or the simulated upstream, for a billion floats."""


def _bad(message: str, param: str | None, code: str | None = None) -> GatewayError:
    return GatewayError(400, message, param=param, code=code)


def _unknown(body: dict[str, Any], allowed: frozenset[str]) -> None:
    for key in body:
        if key not in allowed:
            raise _bad(f"Unrecognized request argument supplied: {key}", key, "unknown_parameter")


def _model(body: dict[str, Any]) -> str:
    model = body.get("model")
    if model is None:
        raise _bad("you must provide a model parameter", "model", "missing_required_parameter")
    if not isinstance(model, str) or not model.strip():
        raise _bad("'model' must be a non-empty string", "model", "invalid_type")
    if len(model) > 256 or not model.isprintable():
        raise _bad(
            "'model' must be at most 256 printable characters (no control characters)",
            "model",
            "invalid_value",
        )
    return model


def _int(body: dict[str, Any], key: str, lo: int, hi: int | None = None) -> None:
    v = body.get(key)
    if v is None:
        return
    if isinstance(v, bool) or not isinstance(v, int):
        raise _bad(f"'{key}' must be an integer, got {type(v).__name__}", key, "invalid_type")
    if v < lo or (hi is not None and v > hi):
        rng = f"at least {lo}" if hi is None else f"between {lo} and {hi}"
        raise _bad(f"'{key}' must be {rng}, got {v}", key, "invalid_value")


def _num(body: dict[str, Any], key: str, lo: float, hi: float) -> None:
    v = body.get(key)
    if v is None:
        return
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise _bad(f"'{key}' must be a number, got {type(v).__name__}", key, "invalid_type")
    if not lo <= v <= hi:
        raise _bad(f"'{key}' must be between {lo:g} and {hi:g}, got {v}", key, "invalid_value")


def _type(
    body: dict[str, Any], key: str, kinds: tuple[type, ...], name: str, *, prefix: str = ""
) -> None:
    v = body.get(key)
    if v is not None and ((isinstance(v, bool) and bool not in kinds) or not isinstance(v, kinds)):
        where = f"{prefix}.{key}" if prefix else key
        raise _bad(f"'{where}' must be {name}, got {type(v).__name__}", where, "invalid_type")


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


CHAT_PART_FIELDS: dict[str, tuple[str, tuple[type, ...]]] = {
    "text": ("text", (str,)),
    "image_url": ("image_url", (dict, str)),
    "input_audio": ("input_audio", (dict,)),
    "file": ("file", (dict,)),
    "refusal": ("refusal", (str,)),
}
"""Chat content part type → the field it must carry, and that field's type."""


def _chat_parts(parts: list[Any], param: str) -> None:
    """Every part is an object of a known type carrying its field: stages read text parts,
    and a translator must never meet a shape it can't express (a 400, not a 500)."""
    for j, part in enumerate(parts):
        where = f"{param}[{j}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if not isinstance(kind, str) or kind not in CHAT_PART_FIELDS:
            raise _bad(
                f"'{where}' must be an object whose 'type' is one of {', '.join(CHAT_PART_FIELDS)}",
                where,
                "invalid_type",
            )
        field, kinds = CHAT_PART_FIELDS[kind]
        value = part.get(field)
        if not isinstance(value, kinds):
            raise _bad(f"'{where}.{field}' is required for a {kind} part", f"{where}.{field}")
        if (
            kind == "image_url"
            and isinstance(value, dict)
            and not isinstance(value.get("url"), str)
        ):
            raise _bad(f"'{where}.image_url.url' must be a string", f"{where}.image_url.url")


def _tool_calls(msg: dict[str, Any], param: str) -> None:
    calls = msg.get("tool_calls")
    if calls is None:
        return
    if not isinstance(calls, list):
        raise _bad(f"'{param}.tool_calls' must be an array", f"{param}.tool_calls", "invalid_type")
    for k, call in enumerate(calls):
        where = f"{param}.tool_calls[{k}]"
        function = call.get("function") if isinstance(call, dict) else None
        if (
            not isinstance(function, dict)
            or not isinstance(function.get("name"), str)
            or not isinstance(function.get("arguments", ""), str)
            or not isinstance(call.get("id", ""), str)
        ):
            raise _bad(
                f"'{where}' must be an object with a string 'id' and a 'function' with string "
                "'name' and 'arguments'",
                where,
                "invalid_type",
            )


ANTHROPIC_BLOCK_FIELDS: dict[str, tuple[tuple[str, tuple[type, ...]], ...]] = {
    "text": (("text", (str,)),),
    "image": (("source", (dict,)),),
    "document": (("source", (dict,)),),
    "tool_use": (("id", (str,)), ("name", (str,)), ("input", (dict,))),
    "tool_result": (("tool_use_id", (str,)),),
    "thinking": (("thinking", (str,)),),
    "redacted_thinking": (("data", (str,)),),
}
"""The blocks spendgate reads or translates, and the fields each must carry. Other block
types (Anthropic adds server-tool blocks often) pass through to Anthropic untouched; a
translator refuses them with a 400."""


def _anthropic_blocks(blocks: list[Any], param: str, only: tuple[str, ...] | None = None) -> None:
    for j, block in enumerate(blocks):
        where = f"{param}.{j}"
        kind = block.get("type") if isinstance(block, dict) else None
        if not isinstance(kind, str) or (only is not None and kind not in only):
            allowed = f"one of {', '.join(only)}" if only else "a string"
            raise _bad(f"{where}: each block must be an object whose type is {allowed}", where)
        for field, kinds in ANTHROPIC_BLOCK_FIELDS.get(kind, ()):
            if not isinstance(block.get(field), kinds) or isinstance(block.get(field), bool):
                raise _bad(f"{where}.{field}: required for a {kind} block", f"{where}.{field}")
        if kind == "tool_result":
            inner = block.get("content")
            if inner is not None and not isinstance(inner, str | list):
                raise _bad(f"{where}.content: must be a string or an array", f"{where}.content")
            if isinstance(inner, list):
                _anthropic_blocks(inner, f"{where}.content", only=("text", "image", "document"))


def _tools(body: dict[str, Any]) -> None:
    tools = body.get("tools")
    if tools is None:
        return
    if not isinstance(tools, list):
        raise _bad("'tools' must be an array", "tools", "invalid_type")
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict):
            raise _bad(f"'tools[{i}]' must be an object", f"tools[{i}]", "invalid_type")
        function = tool.get("function")
        if function is not None:
            if not isinstance(function, dict) or not isinstance(function.get("name"), str):
                raise _bad(
                    f"'tools[{i}].function' must be an object with a string 'name'",
                    f"tools[{i}].function",
                    "invalid_type",
                )
            _type(function, "parameters", (dict,), "an object", prefix=f"tools[{i}].function")
            _type(function, "description", (str,), "a string", prefix=f"tools[{i}].function")
        for key in ("name", "type", "description"):
            _type(tool, key, (str,), "a string", prefix=f"tools[{i}]")
        _type(tool, "input_schema", (dict,), "an object", prefix=f"tools[{i}]")


def validate_chat(body: dict[str, Any]) -> str:
    """Check a Chat Completions body; returns the model."""
    _unknown(body, CHAT_PARAMS)
    model = _model(body)
    messages = body.get("messages")
    if messages is None:
        raise _bad("'messages' is a required property", "messages", "missing_required_parameter")
    if not isinstance(messages, list):
        raise _bad(
            f"'messages' must be an array, got {type(messages).__name__}",
            "messages",
            "invalid_type",
        )
    if not messages:
        raise _bad("'messages' must contain at least one message", "messages", "invalid_value")
    for i, msg in enumerate(messages):
        p = f"messages[{i}]"
        if not isinstance(msg, dict):
            raise _bad(f"'{p}' must be an object", p, "invalid_type")
        role = msg.get("role")
        if not isinstance(role, str) or role not in CHAT_ROLES:
            raise _bad(
                f"'{p}.role' must be one of {sorted(CHAT_ROLES)}, got {_show(role)}",
                f"{p}.role",
                "invalid_value",
            )
        content = msg.get("content")
        if content is not None and not isinstance(content, str | list):
            raise _bad(
                f"'{p}.content' must be a string or an array of content parts",
                f"{p}.content",
                "invalid_type",
            )
        if content is None and role not in ("assistant", "function") and "tool_calls" not in msg:
            raise _bad(f"'{p}.content' is required for role {role}", f"{p}.content", None)
        if isinstance(content, list):
            _chat_parts(content, f"{p}.content")
        if role == "tool" and not isinstance(msg.get("tool_call_id"), str):
            raise _bad(f"'{p}.tool_call_id' is required for tool messages", f"{p}.tool_call_id")
        for key in ("name", "refusal", "tool_call_id"):
            _type(msg, key, (str,), "a string", prefix=p)
        _tool_calls(msg, p)
    _type(body, "stream", (bool,), "a boolean")
    _type(body, "stream_options", (dict,), "an object")
    _int(body, "max_tokens", 1)
    _int(body, "max_completion_tokens", 1)
    _int(body, "n", 1, 128)
    _int(body, "seed", -(2**63), 2**63 - 1)
    _num(body, "temperature", 0, 2)
    _num(body, "top_p", 0, 1)
    _num(body, "presence_penalty", -2, 2)
    _num(body, "frequency_penalty", -2, 2)
    _tools(body)
    _type(body, "response_format", (dict,), "an object")
    rf = body.get("response_format")
    if isinstance(rf, dict) and rf.get("type") not in ("text", "json_object", "json_schema"):
        raise _bad(
            "'response_format.type' must be one of text, json_object, json_schema",
            "response_format.type",
            "invalid_value",
        )
    stop = body.get("stop")
    if stop is not None and not (
        isinstance(stop, str)
        or (isinstance(stop, list) and all(isinstance(s, str) for s in stop) and len(stop) <= 4)
    ):
        raise _bad("'stop' must be a string or an array of up to 4 strings", "stop")
    _type(body, "user", (str,), "a string")
    _type(body, "metadata", (dict,), "an object")
    return model


def validate_messages(body: dict[str, Any]) -> str:
    """Check an Anthropic Messages body; returns the model."""
    _unknown(body, MESSAGES_PARAMS)
    model = _model(body)
    if body.get("max_tokens") is None:
        raise _bad("max_tokens: Field required", "max_tokens", "missing_required_parameter")
    _int(body, "max_tokens", 1)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _bad("messages: a non-empty array of messages is required", "messages")
    for i, msg in enumerate(messages):
        p = f"messages.{i}"
        if not isinstance(msg, dict) or msg.get("role") not in ("user", "assistant"):
            raise _bad(f"{p}: each message needs role 'user' or 'assistant'", p)
        content = msg.get("content")
        if not isinstance(content, str | list):
            raise _bad(f"{p}.content: must be a string or an array of blocks", f"{p}.content")
        if isinstance(content, list):
            _anthropic_blocks(content, f"{p}.content")
    system = body.get("system")
    if system is not None and not isinstance(system, str | list):
        raise _bad("system: must be a string or an array of text blocks", "system")
    if isinstance(system, list):
        _anthropic_blocks(system, "system", only=("text",))
    stop = body.get("stop_sequences")
    if stop is not None and not (isinstance(stop, list) and all(isinstance(x, str) for x in stop)):
        raise _bad("stop_sequences: must be an array of strings", "stop_sequences")
    _type(body, "thinking", (dict,), "an object")
    _type(body, "tool_choice", (dict,), "an object")
    _type(body, "service_tier", (str,), "a string")
    _type(body, "stream", (bool,), "a boolean")
    _num(body, "temperature", 0, 1)
    _num(body, "top_p", 0, 1)
    _int(body, "top_k", 0)
    _tools(body)
    _type(body, "metadata", (dict,), "an object")
    return model


def validate_embeddings(body: dict[str, Any]) -> str:
    _unknown(body, EMBEDDING_PARAMS)
    model = _model(body)
    data = body.get("input")
    ok = (isinstance(data, str) and data != "") or (
        isinstance(data, list)
        and data
        and (
            all(isinstance(x, str) for x in data)
            or all(isinstance(x, int) and not isinstance(x, bool) for x in data)
            or all(isinstance(x, list) and x for x in data)
        )
    )
    if not ok:
        raise _bad(
            "'input' must be a non-empty string or array of strings or token arrays", "input"
        )
    _int(body, "dimensions", 1, MAX_EMBEDDING_DIMENSIONS)
    fmt = body.get("encoding_format")
    if fmt is not None and fmt not in ("float", "base64"):
        raise _bad("'encoding_format' must be 'float' or 'base64'", "encoding_format")
    return model
