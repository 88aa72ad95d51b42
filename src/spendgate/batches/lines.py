"""One request inside a batch: how a call is written as a batch line for a deployment, and
how a result line is read back (its usage, and the body in the client's wire format).

A deferred call may be served by a deployment of the other wire format (routing picked a
Claude model for an OpenAI client); the same translators as the live path write the line
and read the answer, so the client gets what a live call would have returned.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from spendgate.call import API, Endpoint, Usage
from spendgate.pricing import usage_from_anthropic, usage_from_openai
from spendgate.providers import responses as responses_dialect
from spendgate.providers.base import Deployment
from spendgate.providers.translate import (
    anthropic_response_to_openai,
    anthropic_to_openai_request,
    openai_response_to_anthropic,
    openai_to_anthropic_request,
)

__all__ = [
    "OPENAI_BATCH_URLS",
    "LinePlan",
    "batch_capable",
    "plan_line",
    "to_client",
    "usage_of",
]

OPENAI_BATCH_URLS: dict[str, tuple[Endpoint, API]] = {
    "/v1/chat/completions": ("chat", "openai"),
    "/v1/responses": ("responses", "responses"),
    "/v1/embeddings": ("embeddings", "openai"),
}
"""The OpenAI batch endpoints passed through, and how their lines are recorded."""

_LIVE_ONLY = ("stream", "stream_options", "previous_response_id", "background")


@dataclass(frozen=True, slots=True)
class LinePlan:
    batch_api: str
    """`openai` (files + /v1/batches) or `anthropic` (/v1/messages/batches)."""
    url: str
    """The OpenAI batch endpoint (`/v1/chat/completions`…); `/v1/messages` for Anthropic."""
    body: dict[str, Any]
    """The line's request body, the deployment's model name in it."""


def batch_capable(dep: Deployment) -> bool:
    """Deployments whose provider has a Batch API: OpenAI's own, Anthropic, the simulator.
    An OpenAI-compatible server elsewhere (vLLM, Groq…) is not assumed to have one."""
    if dep.provider in ("anthropic", "simulated"):
        return True
    return dep.provider == "openai" and "api.openai.com" in dep.base_url


def plan_line(
    api: API, endpoint: str, body: dict[str, Any], dep: Deployment, model: str
) -> LinePlan:
    """How a call (`api`/`endpoint`, public `model`) is sent inside a batch to `dep`."""
    upstream = dep.upstream_model(model)
    body = {k: v for k, v in body.items() if k not in _LIVE_ONLY}
    wire = dep.api_for(model)
    if endpoint == "embeddings":
        return LinePlan("openai", "/v1/embeddings", {**body, "model": upstream})
    if api == "responses":
        if wire == "openai" and dep.serves_responses(model):
            return LinePlan("openai", "/v1/responses", {**body, "model": upstream})
        chat = responses_dialect.to_chat_request(body)
        chat = {k: v for k, v in chat.items() if k not in _LIVE_ONLY}
        if wire == "openai":
            return LinePlan("openai", "/v1/chat/completions", {**chat, "model": upstream})
        params = openai_to_anthropic_request(chat)
        return LinePlan("anthropic", "/v1/messages", {**params, "model": upstream})
    if api == "openai":
        if wire == "openai":
            return LinePlan("openai", "/v1/chat/completions", {**body, "model": upstream})
        params = openai_to_anthropic_request(body)
        return LinePlan("anthropic", "/v1/messages", {**params, "model": upstream})
    if wire == "anthropic":
        return LinePlan("anthropic", "/v1/messages", {**body, "model": upstream})
    chat = anthropic_to_openai_request(body)
    return LinePlan("openai", "/v1/chat/completions", {**chat, "model": upstream})


def usage_of(batch_api: str, result: dict[str, Any]) -> Usage | None:
    """The provider's usage of one result body (None when it reported none)."""
    usage = result.get("usage")
    if not isinstance(usage, dict):
        return None
    if batch_api == "anthropic":
        return usage_from_anthropic(usage)
    return usage_from_openai(usage)


def to_client(
    api: str, url: str, batch_api: str, result: dict[str, Any], request: dict[str, Any],
    *, response_id: str, model: str,
) -> dict[str, Any]:  # fmt: skip
    """A result body in the wire format the client called with."""
    if api == "responses":
        if url == "/v1/responses":
            return {**result, "id": response_id}
        chat = result
        if batch_api == "anthropic":
            chat = anthropic_response_to_openai(result, model=model)
        return responses_dialect.from_chat_response(chat, request, response_id=response_id)
    if api == "openai":
        if batch_api == "anthropic":
            return anthropic_response_to_openai(result, model=model)
        return result
    if batch_api == "openai":
        return openai_response_to_anthropic(result, model=model)
    return result
