"""Bookkeeping shared by both adapters' streams: what was seen, and what it cost when the
stream ended without the upstream's own usage figures (client left, stream cut)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from spendgate.call import API, Usage
from spendgate.errors import GatewayError
from spendgate.providers.dialects import dialect_for
from spendgate.tokens import count_text, estimated_counts

__all__ = ["StreamTally", "error_frame", "stream_cut"]


@dataclass(slots=True)
class StreamTally:
    """Text the upstream produced so far, so a stream that ends early is still accounted."""

    model: str
    upstream_api: API
    sent_body: dict[str, Any]
    parts: list[str] = field(default_factory=list)

    def add(self, text: str | None) -> None:
        if text:
            self.parts.append(text)

    def estimate(self) -> Usage:
        """Input counted on the body actually sent, output on the text actually received
        (an estimate, marked so: Claude's counts come from o200k, not ctok's tables)."""
        with estimated_counts():
            prompt = dialect_for(self.upstream_api).count_request(self.model, self.sent_body)
            output = self.output_tokens()
        return Usage(input_tokens=prompt, output_tokens=output, estimated=True)

    def output_tokens(self) -> int:
        return count_text(self.model, "".join(self.parts)) if self.parts else 0


def error_frame(client_api: API, message: str, code: str) -> bytes:
    """An in-band error for a stream that already sent its 200 status."""
    return dialect_for(client_api).error_frame(message, code)


def stream_cut(reply: Any, client_api: API, why: str) -> bytes:
    """Mark a reply whose upstream stream ended early, and the frame that tells the client.

    The 200 status has already gone out, so the error travels in-band; the ledger keeps the
    status and records `upstream_stream_cut` as the error type."""
    reply.extra.setdefault("stream_error", why)
    reply.error = GatewayError(
        502,
        f"upstream deployment {reply.deployment!r} cut the stream short",
        type="upstream_error",
        code="upstream_stream_cut",
    )
    return error_frame(client_api, reply.error.message, "upstream_stream_cut")
