"""Prompt tokens of whole request bodies, in each provider's framing.

OpenAI: the cookbook's "How to count tokens with tiktoken" rules, which match the API's
`prompt_tokens` exactly for text messages and tool definitions on gpt-3.5/gpt-4/gpt-4o
(3 tokens per message, +1 for a `name`, the role itself counted, 3 to prime the reply;
tools: 7 per function on o200k models, 10 on cl100k, 3 per property, 12 to close).
What the cookbook does not cover is estimated and marked so below.

Anthropic: ctok's measured single-message frame, the text of every block, the documented
tool-use system prompt (346 tokens for tool_choice auto/none on Claude 3.5 Sonnet and later,
313 for any/tool; older models per Anthropic's table), and an estimated 3 tokens per extra
turn.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson

from spendgate.tokens.encoders import claude_frame, claude_version, count_text, family

__all__ = [
    "ANTHROPIC_IMAGE_TOKENS",
    "OPENAI_IMAGE_TOKENS_HIGH",
    "OPENAI_IMAGE_TOKENS_LOW",
    "anthropic_cache_breakpoints",
    "count_anthropic_request",
    "count_embedding_input",
    "count_openai_request",
    "iter_anthropic_prompt",
]

OPENAI_IMAGE_TOKENS_LOW = 85
"""OpenAI's documented flat cost of an image at `detail: "low"`."""
OPENAI_IMAGE_TOKENS_HIGH = 85 + 170 * 4
"""`detail: "high"/"auto"` at an assumed 1024×1024 (4 tiles of 512 px): we never decode the
image on the request path, so the size is unknown; 1024² is the common upload size."""
ANTHROPIC_IMAGE_TOKENS = 1600
"""Anthropic's documented ceiling (≈ width·height/750 at the 1.15-megapixel resize limit):
images larger than that are scaled down to it, and we do not decode to learn the size."""

_TOKENS_PER_MESSAGE = 3
_TOKENS_PER_NAME = 1
_REPLY_PRIMING = 3
_TOOL_CALL_OVERHEAD = 3
"""Estimate (not in the cookbook): framing around one assistant tool call."""
_CLAUDE_TURN = 3
"""Estimate: the turn marker of each message after the first (ctok measures one-message
frames only)."""


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


# ---- OpenAI -----------------------------------------------------------------------------


def _openai_content(model: str, content: Any) -> int:
    if isinstance(content, str):
        return count_text(model, content)
    if not isinstance(content, list):
        return 0 if content is None else count_text(model, _dumps(content))
    total = 0
    for part in content:
        if isinstance(part, str):
            total += count_text(model, part)
            continue
        if not isinstance(part, dict):
            continue
        kind = part.get("type")
        if kind == "text" or kind == "refusal":
            total += count_text(model, str(part.get(kind) or ""))
        elif kind == "image_url":
            image = part.get("image_url")
            detail = image.get("detail") if isinstance(image, dict) else None
            total += OPENAI_IMAGE_TOKENS_LOW if detail == "low" else OPENAI_IMAGE_TOKENS_HIGH
        elif kind == "file":
            file = part.get("file") or {}
            total += count_text(model, str(file.get("filename") or ""))
        # input_audio: billed as audio tokens, which this counter does not estimate
    return total


def _openai_tools(model: str, tools: list[Any]) -> int:
    func_init = 10 if family(model) == "cl100k" else 7
    prop_init, prop_key, enum_init, enum_item, func_end = 3, 3, -3, 3, 12
    total = 0
    for tool in tools:
        if not isinstance(tool, dict):
            continue
        function = tool.get("function") if tool.get("type", "function") == "function" else None
        if not isinstance(function, dict):  # custom / built-in tools: their JSON, estimated
            total += count_text(model, _dumps(tool))
            continue
        total += func_init
        desc = str(function.get("description") or "").removesuffix(".")
        total += count_text(model, f"{function.get('name', '')}:{desc}")
        params = function.get("parameters") or {}
        properties = params.get("properties") if isinstance(params, dict) else None
        if isinstance(properties, dict) and properties:
            total += prop_init
            for key, schema in properties.items():
                total += prop_key
                schema = schema if isinstance(schema, dict) else {}
                enum = schema.get("enum")
                if isinstance(enum, list):
                    total += enum_init
                    for item in enum:
                        total += enum_item + count_text(model, str(item))
                p_type = schema.get("type", "")
                if isinstance(p_type, list):
                    p_type = "|".join(map(str, p_type))
                p_desc = str(schema.get("description") or "").removesuffix(".")
                total += count_text(model, f"{key}:{p_type}:{p_desc}")
    if total:
        total += func_end
    return total


def count_openai_request(model: str, body: dict[str, Any]) -> int:
    """Prompt tokens of a Chat Completions body, as OpenAI would report `prompt_tokens`."""
    total = 0
    for message in body.get("messages") or ():
        if not isinstance(message, dict):
            continue
        total += _TOKENS_PER_MESSAGE
        total += count_text(model, str(message.get("role") or ""))
        total += _openai_content(model, message.get("content"))
        name = message.get("name")
        if isinstance(name, str) and name:
            total += count_text(model, name) + _TOKENS_PER_NAME
        refusal = message.get("refusal")
        if isinstance(refusal, str):
            total += count_text(model, refusal)
        calls = list(message.get("tool_calls") or ())
        if isinstance(message.get("function_call"), dict):
            calls.append({"function": message["function_call"]})
        for call in calls:
            function = call.get("function") if isinstance(call, dict) else None
            if isinstance(function, dict):
                total += _TOOL_CALL_OVERHEAD
                total += count_text(model, str(function.get("name") or ""))
                total += count_text(model, str(function.get("arguments") or ""))
    total += _REPLY_PRIMING
    tools = list(body.get("tools") or ())
    tools += [{"type": "function", "function": f} for f in body.get("functions") or ()]
    if tools:
        total += _openai_tools(model, tools)
    response_format = body.get("response_format")
    if isinstance(response_format, dict) and response_format.get("type") == "json_schema":
        # Estimate: structured outputs show the model its schema; the cookbook is silent.
        total += count_text(model, _dumps(response_format.get("json_schema") or {}))
    return total


# ---- Anthropic --------------------------------------------------------------------------


def _tool_system_prompt(model: str, tool_choice: Any) -> int:
    forced = isinstance(tool_choice, dict) and tool_choice.get("type") in ("any", "tool")
    name = model.lower()
    if "claude-3-opus" in name:
        return 281 if forced else 530
    if "claude-3-sonnet" in name:
        return 235 if forced else 159
    if "claude-3-haiku" in name or "claude-3-5-haiku" in name:
        return 340 if forced else 264
    return 313 if forced else 346


def _anthropic_block(model: str, block: Any) -> int:
    if isinstance(block, str):
        return count_text(model, block)
    if not isinstance(block, dict):
        return 0
    kind = block.get("type")
    if kind == "text":
        return count_text(model, str(block.get("text") or ""))
    if kind == "image":
        return ANTHROPIC_IMAGE_TOKENS
    if kind == "document":
        source = block.get("source") or {}
        if source.get("type") == "text":
            return count_text(model, str(source.get("data") or ""))
        return ANTHROPIC_IMAGE_TOKENS  # a PDF page is rendered as an image (estimate: one)
    if kind == "tool_use" or kind == "server_tool_use":
        name = str(block.get("name") or "")
        return count_text(model, name) + count_text(model, _dumps(block.get("input") or {}))
    if kind == "tool_result":
        content = block.get("content")
        if isinstance(content, list):
            return sum(_anthropic_block(model, b) for b in content)
        return count_text(model, str(content or ""))
    if kind == "thinking":
        return count_text(model, str(block.get("thinking") or ""))
    if kind == "redacted_thinking":
        return 0
    return count_text(model, _dumps(block))


def _anthropic_tool(model: str, tool: Any) -> int:
    if not isinstance(tool, dict):
        return 0
    if "input_schema" not in tool:  # server tools (web_search_…, bash_…): their JSON
        return count_text(model, _dumps({k: v for k, v in tool.items() if k != "cache_control"}))
    return (
        count_text(model, str(tool.get("name") or ""))
        + count_text(model, str(tool.get("description") or ""))
        + count_text(model, _dumps(tool.get("input_schema") or {}))
    )


def iter_anthropic_prompt(model: str, body: dict[str, Any]) -> Iterator[tuple[int, Any]]:
    """(tokens, piece) for every piece of an Anthropic prompt, in the order the model reads it
    (tools, system, messages) — the order cache prefixes are taken in. A piece is the source
    block (tool definition, system block, content block), or a `{"role": …}` marker for the
    framing that precedes each message."""
    frame = claude_frame(claude_version(model))
    tools = body.get("tools") or ()
    yield (
        frame + (_tool_system_prompt(model, body.get("tool_choice")) if tools else 0),
        {"frame": bool(tools)},
    )
    for tool in tools:
        yield _anthropic_tool(model, tool), tool
    yield from _anthropic_content(model, body.get("system"))
    for index, message in enumerate(body.get("messages") or ()):
        if not isinstance(message, dict):
            continue
        yield (_CLAUDE_TURN if index else 0), {"role": message.get("role")}
        yield from _anthropic_content(model, message.get("content"))


def _anthropic_content(model: str, content: Any) -> Iterator[tuple[int, Any]]:
    """The pieces of a `system` or message `content`: a string is one text block."""
    if isinstance(content, str):
        yield count_text(model, content), {"type": "text", "text": content}
    elif isinstance(content, list):
        for block in content:
            yield _anthropic_block(model, block), block


def count_anthropic_request(model: str, body: dict[str, Any]) -> int:
    """Prompt tokens of a Messages body: Anthropic's `input_tokens` with nothing cached."""
    return sum(tokens for tokens, _ in iter_anthropic_prompt(model, body))


def anthropic_cache_breakpoints(model: str, body: dict[str, Any]) -> list[tuple[int, str]]:
    """(prefix tokens, ttl) at every `cache_control` breakpoint, in prompt order. The prefix
    includes the marked block; ttl is "5m" or "1h". The prefix stage uses it to tell whether
    a breakpoint clears the provider's minimum cacheable length."""
    points: list[tuple[int, str]] = []
    running = 0
    for tokens, piece in iter_anthropic_prompt(model, body):
        running += tokens
        control = piece.get("cache_control") if isinstance(piece, dict) else None
        if isinstance(control, dict) and control.get("type") == "ephemeral":
            points.append((running, "1h" if control.get("ttl") == "1h" else "5m"))
    return points


# ---- embeddings -------------------------------------------------------------------------


def count_embedding_input(model: str, input: Any) -> int:
    """Tokens of an embeddings `input`: text is tokenized, token-id arrays are their length."""
    if isinstance(input, str):
        return count_text(model, input)
    if not isinstance(input, list) or not input:
        return 0
    if all(isinstance(x, int) for x in input):
        return len(input)
    total = 0
    for item in input:
        if isinstance(item, str):
            total += count_text(model, item)
        elif isinstance(item, list):
            total += len(item)
    return total
