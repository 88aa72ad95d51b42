"""The model endpoints of the simulated upstream by path (after `/v1`): what the app routes
a request to, and what the batch runner answers each batch line with."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from spendgate.simulated.chat import serve_chat
from spendgate.simulated.embeddings import serve_embeddings
from spendgate.simulated.messages import serve_count_tokens, serve_messages
from spendgate.simulated.responses import serve_responses
from spendgate.simulated.state import UpstreamState
from spendgate.simulated.wire import Exchange

__all__ = ["ENDPOINTS", "Endpoint"]

Endpoint = Callable[[UpstreamState, Exchange], Awaitable[None]]
"""Answers one request on its `send`."""

ENDPOINTS: dict[str, Endpoint] = {
    "/chat/completions": serve_chat,
    "/messages": serve_messages,
    "/embeddings": serve_embeddings,
    "/responses": serve_responses,
    "/messages/count_tokens": serve_count_tokens,
}
