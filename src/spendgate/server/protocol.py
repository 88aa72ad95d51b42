"""The HTTP/1.1 protocol the gateway runs under uvicorn: httptools with a bound on the header
block.

uvicorn's httptools protocol buffers a request's headers for as long as the client keeps
sending them (its h11 protocol has a bound; httptools has none): a probe sent 8 × 50 MB
headers and RSS went from 238 to 618 MB. Here the bytes received while a request's head is
incomplete are counted before the parser sees them, and past `server.max_header_bytes` the
request is answered 431 and the connection closed, so memory per connection stays under
that bound plus one read.
The refusal is a call like any other: it gets its ledger row through `on_refused`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from spendgate.errors import GatewayError

__all__ = ["bounded_protocol"]

Refused = Callable[[GatewayError], str]
"""Records a refusal (its ledger row) and returns its request id."""


def _too_large(limit: int) -> GatewayError:
    return GatewayError(
        431,
        f"Request header fields too large: the limit is {limit} bytes for the request line "
        "and headers together (server.max_header_bytes).",
        code="request_header_fields_too_large",
    )


def bounded_protocol(max_header_bytes: int, on_refused: Refused | None = None) -> type[Any]:
    """An httptools protocol class for `uvicorn.Config(http=…)` with the header bound."""
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class BoundedHttpToolsProtocol(HttpToolsProtocol):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._head_bytes = 0
            self._in_head = True

        def data_received(self, data: bytes) -> None:
            if self._in_head:
                # Count the head only (a read may also carry the start of the body), and
                # refuse before the parser buffers more of it.
                end = data.find(b"\r\n\r\n")
                self._head_bytes += len(data) if end < 0 else end + 4
                if self._head_bytes > max_header_bytes:
                    self._refuse()
                    return
            super().data_received(data)

        def on_headers_complete(self) -> None:
            self._in_head = False
            self._head_bytes = 0
            super().on_headers_complete()

        def on_message_complete(self) -> None:
            super().on_message_complete()
            self._in_head = True

        def _refuse(self) -> None:
            error = _too_large(max_header_bytes)
            request_id = on_refused(error) if on_refused is not None else ""
            body = orjson.dumps(error.to_openai())
            lines = [
                b"HTTP/1.1 431 Request Header Fields Too Large",
                b"content-type: application/json",
                b"content-length: " + str(len(body)).encode(),
                b"connection: close",
            ]
            if request_id:
                lines.append(b"x-spendgate-request-id: " + request_id.encode())
            head = b"\r\n".join(lines) + b"\r\n\r\n"
            self._in_head = False  # no second refusal for bytes already in flight
            self.transport.write(head + body)
            self.transport.close()

    return BoundedHttpToolsProtocol
