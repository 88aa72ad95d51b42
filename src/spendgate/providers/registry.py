"""Which adapter speaks to a deployment for a given model and client wire format."""

from __future__ import annotations

from spendgate.call import API
from spendgate.providers.anthropic import AnthropicAdapter
from spendgate.providers.base import Deployment, Provider
from spendgate.providers.dialects import dialect_for
from spendgate.providers.openai import OpenAIAdapter
from spendgate.providers.responses_adapter import ResponsesAdapter

__all__ = ["PROVIDER_KINDS", "adapter_for"]

PROVIDER_KINDS = ("openai", "anthropic", "simulated")

_UPSTREAM: dict[API, Provider] = {a.api: a for a in (OpenAIAdapter(), AnthropicAdapter())}
"""The adapter of each wire format a deployment can speak (`Deployment.api_for`)."""


def _chat_adapter(dep: Deployment, model: str) -> Provider:
    return _UPSTREAM[dep.api_for(model)]


_RESPONSES = ResponsesAdapter(_chat_adapter)


def adapter_for(dep: Deployment, model: str, api: API = "openai") -> Provider:
    """A Responses call gets the Responses adapter (native or translated per deployment);
    Chat, Messages and Embeddings calls get the adapter of the deployment's wire format."""
    if not dialect_for(api).chat_family:
        return _RESPONSES
    return _chat_adapter(dep, model)
