"""One error type for everything the gateway refuses or fails at.

Each carries the HTTP status and the OpenAI error fields, so the edge can answer in the
client's dialect (OpenAI's `{"error": {...}}` or Anthropic's `{"type": "error", ...}`) without
knowing which stage raised it.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "GatewayError",
    "SpendgateError",
    "anthropic_error_body",
    "internal_error",
    "openai_error_body",
]

_ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    502: "api_error",
    503: "overloaded_error",
    504: "api_error",
    529: "overloaded_error",
}


class SpendgateError(Exception):
    """The root of every error spendgate raises on purpose, so a library user can catch
    spendgate's failures apart from their own:

    - `GatewayError`: a request refused or failed, with its HTTP status and OpenAI fields;
    - `UpstreamError`: a provider failed (carries the `GatewayError` the client sees);
    - `ConfigError`, `PriceFileError`: settings or a price file that don't validate;
    - `TranslationError`: a request one wire format can't express in the other;
    - `InvalidEvent`: a ledger event that doesn't validate;
    - `StoreUnavailable`: the budget counter store is down;
    - `SummaryError`: a history summary could not be made;
    - `ServeError`: the gateway can't start (its port is taken).

    The ones that are bad values also derive from `ValueError`."""


class GatewayError(SpendgateError):
    """A request the gateway cannot serve, with the status and fields the client should see."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
        upstream_body: bytes | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.headers = headers or {}
        self.upstream_body = upstream_body

    def to_openai(self) -> dict[str, Any]:
        return openai_error_body(self.message, self.type, self.param, self.code)

    def to_anthropic(self) -> dict[str, Any]:
        return anthropic_error_body(self.status, self.message)


def openai_error_body(
    message: str, type: str, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def anthropic_error_body(status: int, message: str) -> dict[str, Any]:
    kind = _ANTHROPIC_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
    return {"type": "error", "error": {"type": kind, "message": message}}


def internal_error(request_id: str) -> GatewayError:
    """The 500 for a bug of ours: it names the request id so a user can report it and an
    operator can find the logged traceback."""
    return GatewayError(
        500,
        f"spendgate hit an internal error; request id {request_id}",
        type="server_error",
        code="internal_error",
    )
