"""Plain ASGI I/O: a request's headers as a dict, its body up to a size limit, and a whole
response sent at once.

The gateway routes and the batch routes read and answer requests the same way; a body over
the limit fails as soon as the limit is passed, so an oversized upload is never held in
memory whole.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from spendgate.errors import GatewayError

__all__ = ["Receive", "Scope", "Send", "read_body", "request_headers", "send_whole", "too_large"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


def request_headers(scope: Scope) -> dict[str, str]:
    """Header names lower-cased; a repeated header keeps its last value."""
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}


def too_large(limit: int, setting: str | None = None) -> GatewayError:
    """The 413 for a body over `limit`; `setting` names the config key that sets it."""
    where = f" ({setting})" if setting else ""
    return GatewayError(
        413,
        f"Request body too large: the limit is {limit} bytes{where}.",
        code="request_too_large",
    )


async def read_body(receive: Receive, limit: int, setting: str | None = None) -> bytes:
    """The whole body, or a 413 once it passes `limit`, or a 499 if the client goes away."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise GatewayError(499, "client closed the request", code="client_closed")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise too_large(limit, setting)
        chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks)


async def send_whole(
    send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]
) -> None:
    """A response whose body is all in hand: start (with its content-length), then body."""
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [*headers, (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})
