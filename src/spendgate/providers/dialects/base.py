"""The `Dialect` protocol: everything spendgate knows about one wire format, in one place.

A wire format is the shape of a request and answer body (OpenAI Chat Completions, Anthropic
Messages, OpenAI Responses). Stages, the cache, budgets and batches ask the call's dialect
instead of branching on `call.api`, so a new wire format is one new module implementing this
protocol, one line in `spendgate.providers.dialects`, and the adapter or route that carries it.

This module is a leaf (it imports no dialect) so the dialect modules can share its helpers
without an import cycle through the package `__init__`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

import orjson

from spendgate.call import API, Endpoint, Usage
from spendgate.errors import GatewayError

__all__ = [
    "GOOD_FINISH",
    "JSON",
    "NON_ANSWER_FIELDS",
    "TOOL_FINISH",
    "Dialect",
    "DialectDefaults",
    "content_text",
    "events",
    "plain_text",
    "sse",
    "text_parts",
    "without",
]

JSON = dict[str, Any]

NON_ANSWER_FIELDS = frozenset(
    {"stream", "stream_options", "user", "metadata", "store", "include", "safety_identifier"}
)
"""Request fields that cannot change the answer: left out of cache keys, so a streamed and a
plain request share an entry. One set for every dialect: a field absent from a format's
bodies costs nothing, and a shared set keeps stored keys stable."""


class Dialect(Protocol):
    """One wire format. Implementations are stateless singletons (see the package)."""

    api: API
    endpoint: Endpoint
    """The generation endpoint's name in the ledger (`chat`, `messages`, `responses`)."""
    path: str
    """Its path, on the gateway and on an upstream that speaks it (`/v1/...`)."""
    chat_family: bool
    """True when a call in this format goes to the deployment's own adapter (Chat or
    Messages, translating between the two); False when it has an adapter of its own."""
    system_in_messages: bool
    """True when the system prompt is a leading message; False when it is a top-level field."""
    client_cache_control: bool
    """True when clients mark prompt-cache breakpoints themselves (`cache_control` blocks)."""
    passes_upstream_errors: bool
    """Whether an upstream 4xx body is relayed verbatim to a client of this format."""
    client_headers: Mapping[str, str]
    """Headers a client of this format must send (Anthropic's `anthropic-version`)."""

    # ---- reading a request
    def count_request(self, model: str, body: JSON) -> int:
        """Prompt tokens of a request body, as the provider would report them."""
        ...

    def content_text(self, content: Any) -> str:
        """The text of one message's `content` (blocks joined by newlines)."""
        ...

    def system_text(self, body: JSON) -> str:
        """The system prompt as plain text ('' when there is none)."""
        ...

    def system_material(self, body: JSON) -> Any:
        """The system prompt in its wire shape (for hashing the stable prompt prefix)."""
        ...

    def cache_key_body(self, body: JSON) -> JSON:
        """What the exact cache hashes of a body: everything that can change the answer."""
        ...

    def output_limit(self, body: JSON, reasoning: bool) -> tuple[str, int | None]:
        """Which field carries the output cap (for a reasoning model or not), and the
        client's value of it."""
        ...

    def answers_per_call(self, body: JSON) -> int:
        """How many answers one call asks for (Chat's `n`); output is reserved per answer."""
        ...

    logprobs_field: str | None
    """The request flag that asks for token log-probabilities (None: the format has none
    the cascade can read)."""

    # ---- changing a request
    def with_hint(self, body: JSON, text: str, *, reasoning: bool, json_mode: bool) -> JSON:
        """A copy of `body` with an instruction added after the prompt (the prefix, and so
        provider prompt caching, unchanged); `json_mode` also asks for a JSON answer where
        the format has a switch for it."""
        ...

    def with_history(self, head: list[Any], kept: list[Any], note: str) -> list[Any]:
        """The messages of a windowed conversation: `head` (leading system messages), the
        summary `note` where this format keeps system text in messages, the `kept` turns."""
        ...

    def with_summary(self, body: JSON, summary: str) -> JSON:
        """`body` (already windowed) with the summary put where `with_history` did not."""
        ...

    def conversation(self, model: str, system: str, messages: list[Any]) -> JSON:
        """A request body for `messages` under system prompt `system`."""
        ...

    def client_request(self, payload: JSON) -> JSON:
        """`payload` with the fields this format requires filled in (a gateway-made call)."""
        ...

    # ---- answers
    def parse_usage(self, raw: Mapping[str, Any]) -> Usage:
        """The provider's usage object → spendgate's `Usage`."""
        ...

    def answer_text(self, body: JSON) -> str:
        """The answer of a response body (tool calls as JSON)."""
        ...

    def is_answer(self, body: JSON) -> bool:
        """Whether `body` is an answer in this format (told apart by shape alone, for
        stored answers that do not say which format they are in)."""
        ...

    def skip_reason(self, body: JSON, *, cache_tool_calls: bool) -> str | None:
        """Why this answer must not be cached (None: it may). Errors, refusals, truncated
        and filtered answers never are; tool calls only when `cache_tool_calls`."""
        ...

    def zero_usage(self, body: JSON) -> JSON:
        """`body` with the usage of a call nobody was billed for (a cache hit)."""
        ...

    def error_body(self, error: GatewayError) -> JSON:
        """A gateway error as this format's error body."""
        ...

    def error_frame(self, message: str, code: str) -> bytes:
        """An in-band error event for a stream that already sent its 200 status."""
        ...

    def body_from_sse(self, raw: bytes) -> JSON | None:
        """The non-streaming body a recorded stream amounts to (None: not replayable)."""
        ...

    def sse_from_body(self, body: JSON, *, include_usage: bool) -> list[bytes]:
        """The SSE events a provider would have streamed for `body`, with zero usage."""
        ...

    # ---- between formats
    def upstream_api(self, serves_natively: bool, wire: API) -> API:
        """The format a call in this dialect is sent upstream in, given the deployment's
        own format `wire` and whether it serves this dialect natively."""
        ...

    def request_as(self, wire: API, body: JSON) -> JSON:
        """A request body in this format, rewritten in format `wire` (itself: unchanged)."""
        ...

    def response_from(
        self, wire: API, data: JSON, *, request: JSON, model: str, response_id: str
    ) -> JSON:
        """An upstream answer in format `wire`, rewritten in this format."""
        ...


GOOD_FINISH = frozenset({"stop", "end_turn", "stop_sequence"})
"""Finish reasons of a complete answer (Chat's and Messages' names)."""
TOOL_FINISH = frozenset({"tool_calls", "tool_use", "function_call"})
"""Finish reasons of an answer that calls tools."""


class DialectDefaults:
    """What most formats do the same way; a dialect inherits it and overrides the rest."""

    client_headers: Mapping[str, str] = {}

    def content_text(self, content: Any) -> str:
        return content_text(content)

    def cache_key_body(self, body: JSON) -> JSON:
        return without(body, NON_ANSWER_FIELDS)

    def answers_per_call(self, body: JSON) -> int:
        return 1

    def client_request(self, payload: JSON) -> JSON:
        return payload

    def upstream_api(self, serves_natively: bool, wire: API) -> API:
        return wire


def content_text(content: Any) -> str:
    """The text of a message's `content` in the chat formats: a string as is, else the
    `text` of each block (a tool result's own content read through), newline-joined."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for block in content:
            if isinstance(block, dict):
                text = block.get("text")
                if isinstance(text, str):
                    parts.append(text)
                elif block.get("type") == "tool_result":
                    parts.append(content_text(block.get("content")))
        return "\n".join(parts)
    return ""


def plain_text(content: Any) -> str | None:
    """The text of a content made of text alone (a string, or text blocks newline-joined);
    None when it holds anything else (images, files, tool results) or is not content."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return None
    parts = []
    for part in content:
        if not isinstance(part, dict) or part.get("type") != "text":
            return None
        parts.append(str(part.get("text", "")))
    return "\n".join(parts)


def text_parts(content: Any) -> list[str]:
    """The text pieces of a `content` value in any format: a string, or the `text` of each
    block that has one (plain strings in a list count too)."""
    if isinstance(content, str):
        return [content]
    out: list[str] = []
    if isinstance(content, list):
        for part in content:
            if isinstance(part, str):
                out.append(part)
            elif isinstance(part, dict) and isinstance(part.get("text"), str):
                out.append(part["text"])
    return out


def without(body: JSON, fields: frozenset[str]) -> JSON:
    return {k: v for k, v in body.items() if k not in fields}


def events(raw: bytes) -> list[tuple[str | None, bytes]]:
    """(event name, data) of every server-sent event in a recorded stream."""
    out: list[tuple[str | None, bytes]] = []
    for block in raw.replace(b"\r\n", b"\n").split(b"\n\n"):
        event: str | None = None
        data: list[bytes] = []
        for line in block.split(b"\n"):
            if line.startswith(b"data:"):
                data.append(line[5:].lstrip(b" "))
            elif line.startswith(b"event:"):
                event = line[6:].strip().decode()
        if data:
            out.append((event, b"\n".join(data)))
    return out


def sse(name: str | None, payload: Any) -> bytes:
    """One server-sent event (`payload` already encoded when it is bytes)."""
    data = payload if isinstance(payload, bytes) else orjson.dumps(payload)
    return (b"event: " + name.encode() + b"\n" if name else b"") + b"data: " + data + b"\n\n"
