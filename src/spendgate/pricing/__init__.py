"""Price catalog (genai-prices, resolved once per model) and exact cost arithmetic.

`PriceCatalog.default().cost(model, usage)` is what the account stage calls per request;
`pricing.usage` turns provider-native usage blocks into the shared `Usage`.
"""

from spendgate.pricing.catalog import PriceCatalog, ResolvedModel
from spendgate.pricing.command import price_command
from spendgate.pricing.override import PriceOverride
from spendgate.pricing.pricefile import PriceFile, PriceFileError, load_price_file
from spendgate.pricing.pricer import Pricer
from spendgate.pricing.sheet import PriceSheet, cost_of
from spendgate.pricing.tiers import billed_tier, normalize_tier
from spendgate.pricing.usage import (
    merge_anthropic_stream_usage,
    usage_from_anthropic,
    usage_from_gemini,
    usage_from_native,
    usage_from_openai,
)

__all__ = [
    "PriceCatalog",
    "PriceFile",
    "PriceFileError",
    "PriceOverride",
    "PriceSheet",
    "Pricer",
    "ResolvedModel",
    "billed_tier",
    "cost_of",
    "load_price_file",
    "merge_anthropic_stream_usage",
    "normalize_tier",
    "price_command",
    "usage_from_anthropic",
    "usage_from_gemini",
    "usage_from_native",
    "usage_from_openai",
]
