"""Token counting per model family: plain text, and whole OpenAI / Anthropic request bodies.

Used when a provider reports no usage (usage is then marked estimated), for budget
reservations before a call, and by the simulated upstream to report real-looking usage.
"""

from spendgate.tokens.encoders import (
    claude_version,
    count_text,
    encode,
    estimated_counts,
    family,
    has_ctok,
    warm_up,
)
from spendgate.tokens.requests import (
    anthropic_cache_breakpoints,
    count_anthropic_request,
    count_embedding_input,
    count_openai_request,
    iter_anthropic_prompt,
)

__all__ = [
    "anthropic_cache_breakpoints",
    "claude_version",
    "count_anthropic_request",
    "count_embedding_input",
    "count_openai_request",
    "count_text",
    "encode",
    "estimated_counts",
    "family",
    "has_ctok",
    "iter_anthropic_prompt",
    "warm_up",
]
