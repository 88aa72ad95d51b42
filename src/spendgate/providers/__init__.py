"""Provider adapters: each speaks one wire format to an upstream and hands back a `Reply` in
the client's format, translating when the two differ."""

from spendgate.providers.base import Deployment, Provider, UpstreamError
from spendgate.providers.registry import adapter_for

__all__ = ["Deployment", "Provider", "UpstreamError", "adapter_for"]
