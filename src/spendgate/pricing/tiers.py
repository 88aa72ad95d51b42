"""Service tiers and batch: which price variant a call is billed at.

Providers bill the same tokens at different rates by how a call was processed: OpenAI's
`service_tier` (`flex` is half price on some models, `priority` about 2×), and both
providers' batch APIs (50 % off). The tier comes from the response when the provider says
which tier served the call (OpenAI's `service_tier`, Anthropic's `usage.service_tier`), else
from the request. `None` means the standard price.

genai-prices keys its variants by request context: `{"service_tier": "flex"}`,
`{"processing": "batch"}`; `tier_context` maps our one tier name onto that.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from spendgate.call import Call
    from spendgate.reply import Reply

__all__ = ["STANDARD_NAMES", "billed_tier", "normalize_tier", "tier_context"]

STANDARD_NAMES = frozenset({"", "auto", "default", "standard", "standard_only", "on_demand"})
"""Every provider's word for "the standard price" (OpenAI `auto`/`default`; Anthropic
`standard`, `standard_only`)."""


def normalize_tier(value: object) -> str | None:
    """A provider's tier word → ours: None for standard, else the lower-cased name
    (`flex`, `priority`, `batch`, `scale`, …)."""
    if not isinstance(value, str):
        return None
    tier = value.strip().lower()
    return None if tier in STANDARD_NAMES else tier


def tier_context(tier: str | None) -> tuple[tuple[str, str], ...] | None:
    """The genai-prices request context of a tier (sorted key/value pairs), None for
    standard."""
    tier = normalize_tier(tier)
    if tier is None:
        return None
    if tier == "batch":
        return (("processing", "batch"),)
    return (("service_tier", tier),)


def billed_tier(call: Call, reply: Reply) -> str | None:
    """The tier a call is billed at: what the provider says served it, else what the client
    asked for (None = standard)."""
    if reply.service_tier is not None:
        return normalize_tier(reply.service_tier)
    return normalize_tier(call.body.get("service_tier"))
