"""Price catalog (genai-prices, resolved once per model) and exact cost arithmetic.

`PriceCatalog.default().cost(model, usage)` is what the account stage calls per request;
`pricing.usage` turns provider-native usage blocks into the shared `Usage`.
"""

from spendgate.pricing.catalog import PriceCatalog, ResolvedModel
from spendgate.pricing.command import price_command
from spendgate.pricing.override import PriceOverride
from spendgate.pricing.sheet import PriceSheet, cost_of
from spendgate.pricing.usage import (
    merge_anthropic_stream_usage,
    usage_from_anthropic,
    usage_from_native,
    usage_from_openai,
)

__all__ = [
    "PriceCatalog",
    "PriceOverride",
    "PriceSheet",
    "ResolvedModel",
    "cost_of",
    "merge_anthropic_stream_usage",
    "price_command",
    "usage_from_anthropic",
    "usage_from_native",
    "usage_from_openai",
]
