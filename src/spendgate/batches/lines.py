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
from spendgate.providers.base import Deployment
from spendgate.providers.dialects import dialect_for

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
    if endpoint == "embeddings":
        return LinePlan("openai", "/v1/embeddings", {**body, "model": upstream})
    client = dialect_for(api)
    target = client.upstream_api(dep.serves_responses(model), dep.api_for(model))
    params = client.request_as(target, body)
    params = {k: v for k, v in params.items() if k not in _LIVE_ONLY}
    batch_api: API = "anthropic" if target == "anthropic" else "openai"
    return LinePlan(batch_api, dialect_for(target).path, {**params, "model": upstream})


def usage_of(batch_api: str, result: dict[str, Any]) -> Usage | None:
    """The provider's usage of one result body (None when it reported none)."""
    usage = result.get("usage")
    if not isinstance(usage, dict):
        return None
    return dialect_for(batch_api).parse_usage(usage)


def to_client(
    api: str, url: str, batch_api: str, result: dict[str, Any], request: dict[str, Any],
    *, response_id: str, model: str,
) -> dict[str, Any]:  # fmt: skip
    """A result body in the wire format the client called with."""
    wire: API = "responses" if url == "/v1/responses" else dialect_for(batch_api).api
    return dialect_for(api).response_from(
        wire, result, request=request, model=model, response_id=response_id
    )
