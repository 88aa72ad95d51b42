"""ASGI plumbing every endpoint of the simulated upstream shares: the callable types, the
response headers, error bodies in each provider's shape, and one server-sent event.

A leaf module (it imports nothing of the simulator), so endpoint modules and the app can all
use it without importing each other.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

import orjson

from spendgate.errors import anthropic_error_body, openai_error_body

__all__ = [
    "JSON_HEADERS",
    "SSE_HEADERS",
    "Cut",
    "Exchange",
    "Fault",
    "Message",
    "Receive",
    "Scope",
    "Send",
    "error_body",
    "named_event",
    "send_error",
    "send_json",
    "text_of",
]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Fault = dict[str, Any]
"""One queued or header-given fault (`{"kind": "status", "status": 429, …}`)."""


@dataclass
class Exchange:
    """One model request as an endpoint gets it: its JSON body, the model it names, its
    headers, where the answer goes, and the fault queued for it (if any)."""

    body: dict[str, Any]
    model: str
    headers: dict[bytes, bytes]
    send: Send
    fault: Fault | None = None


JSON_HEADERS = [(b"content-type", b"application/json")]
SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
]

_OPENAI_ERRORS = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("invalid_request_error", "unsupported_country_region_territory"),
    404: ("invalid_request_error", "model_not_found"),
    429: ("requests", "rate_limit_exceeded"),
}


class Cut(Exception):
    """Raised inside a responder to drop the connection mid-response."""


def error_body(api: str, status: int, message: str) -> bytes:
    """An error as the provider whose wire format `api` names would send it. Anthropic's
    types are the gateway's own table (`errors.anthropic_error_body`): one list to keep
    right, and a 5xx the table does not name is an `api_error` either way."""
    if api == "anthropic":
        if status < 500 and status not in (400, 401, 403, 404, 413, 429):
            return orjson.dumps(
                {"type": "error", "error": {"type": "api_error", "message": message}}
            )
        return orjson.dumps(anthropic_error_body(status, message))
    kind, code = _OPENAI_ERRORS.get(status, ("server_error", None))
    return orjson.dumps(openai_error_body(message, kind, None, code))


async def send_json(
    send: Send, payload: Any, status: int = 200, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    """A complete JSON response (`payload` already encoded when it is bytes)."""
    body = payload if isinstance(payload, bytes) else orjson.dumps(payload)
    await send(
        {"type": "http.response.start", "status": status, "headers": headers or JSON_HEADERS}
    )
    await send({"type": "http.response.body", "body": body})


async def send_error(
    send: Send,
    api: str,
    status: int,
    message: str,
    extra: list[tuple[bytes, bytes]] | None = None,
) -> None:
    await send_json(send, error_body(api, status, message), status, JSON_HEADERS + (extra or []))


def named_event(name: str, data: dict[str, Any]) -> bytes:
    """One `event: …` / `data: …` server-sent event, as Anthropic and the Responses API send."""
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


def text_of(content: Any) -> str:
    """The text of a message's content: a string, or the `text` of its parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            str(p.get("text") or "") for p in content if isinstance(p, dict) and "text" in p
        )
    return ""
