"""Which adapter speaks to a deployment for a given model."""

from __future__ import annotations

from spendgate.providers.anthropic import AnthropicAdapter
from spendgate.providers.base import Deployment, Provider
from spendgate.providers.openai import OpenAIAdapter

__all__ = ["PROVIDER_KINDS", "adapter_for"]

PROVIDER_KINDS = ("openai", "anthropic", "simulated")

_OPENAI = OpenAIAdapter()
_ANTHROPIC = AnthropicAdapter()


def adapter_for(dep: Deployment, model: str) -> Provider:
    return _ANTHROPIC if dep.api_for(model) == "anthropic" else _OPENAI
