"""Provider-native usage blocks → our `Usage`.

The shapes disagree on what "input" means, which is where gateways overcharge or undercharge:
OpenAI's `prompt_tokens`/`input_tokens` already *include* cached tokens, Anthropic's
`input_tokens` *excludes* cache reads and writes. `Usage` is inclusive (input is the total,
cache buckets are parts of it), so Anthropic counts are summed here and OpenAI's are not.
Providers send explicit nulls for details they don't have; those count as 0.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from spendgate.call import Usage

__all__ = [
    "merge_anthropic_stream_usage",
    "usage_from_anthropic",
    "usage_from_native",
    "usage_from_openai",
]

_ANTHROPIC_ONLY = frozenset(
    {
        "cache_creation_input_tokens",
        "cache_read_input_tokens",
        "cache_creation",
        "server_tool_use",
        "service_tier",
    }
)
_OPENAI_ONLY = frozenset(
    {
        "prompt_tokens",
        "completion_tokens",
        "total_tokens",
        "prompt_tokens_details",
        "completion_tokens_details",
        "input_tokens_details",
        "output_tokens_details",
    }
)


def _count(block: Mapping[str, Any], key: str, where: str = "") -> int:
    value = block.get(key)
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"usage {where}{key} must be a token count, got {value!r}")
    if isinstance(value, float):
        if not value.is_integer():
            raise ValueError(f"usage {where}{key} must be a whole number, got {value!r}")
        value = int(value)
    if value < 0:
        raise ValueError(f"usage {where}{key} must not be negative, got {value!r}")
    return value


def _details(block: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = block.get(key)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ValueError(f"usage {key} must be an object, got {value!r}")
    return value


def _require_mapping(u: object) -> Mapping[str, Any]:
    if not isinstance(u, Mapping):
        raise ValueError(f"usage must be a JSON object, got {type(u).__name__}")
    return u


def usage_from_openai(u: dict[str, Any]) -> Usage:
    """Chat Completions, Responses or Embeddings usage (told apart by their key names)."""
    u = dict(_require_mapping(u))
    if "prompt_tokens" in u or "completion_tokens" in u:
        total_in = _count(u, "prompt_tokens")
        output = _count(u, "completion_tokens")
        in_det = _details(u, "prompt_tokens_details")
        out_det = _details(u, "completion_tokens_details")
        cached = _count(in_det, "cached_tokens", "prompt_tokens_details.")
        if not in_det and "prompt_cache_hit_tokens" in u:
            # DeepSeek's OpenAI-compatible API reports cache hits at the top level instead.
            cached = _count(u, "prompt_cache_hit_tokens")
        reasoning = _count(out_det, "reasoning_tokens", "completion_tokens_details.")
        in_where, out_where = "prompt_tokens", "completion_tokens"
    elif "input_tokens" in u or "output_tokens" in u:
        total_in = _count(u, "input_tokens")
        output = _count(u, "output_tokens")
        cached = _count(
            _details(u, "input_tokens_details"), "cached_tokens", "input_tokens_details."
        )
        reasoning = _count(
            _details(u, "output_tokens_details"), "reasoning_tokens", "output_tokens_details."
        )
        in_where, out_where = "input_tokens", "output_tokens"
    else:
        raise ValueError(
            "not an OpenAI usage block: expected prompt_tokens/completion_tokens "
            "or input_tokens/output_tokens"
        )
    if cached > total_in:
        raise ValueError(f"usage cached_tokens ({cached}) exceeds {in_where} ({total_in})")
    if reasoning > output:
        raise ValueError(f"usage reasoning_tokens ({reasoning}) exceeds {out_where} ({output})")
    return Usage(
        input_tokens=total_in,
        output_tokens=output,
        cache_read_tokens=cached,
        reasoning_tokens=reasoning,
    )


def usage_from_anthropic(u: dict[str, Any]) -> Usage:
    """Messages API usage. `cache_creation` (5m/1h split), when present, decides the TTL split
    of `cache_creation_input_tokens`; without it every write is a 5-minute write (the API's
    default, and the only TTL before the split was reported)."""
    u = dict(_require_mapping(u))
    uncached = _count(u, "input_tokens")
    read = _count(u, "cache_read_input_tokens")
    writes = _count(u, "cache_creation_input_tokens")
    split = _details(u, "cache_creation")
    w1h = _count(split, "ephemeral_1h_input_tokens", "cache_creation.")
    if split:
        w5m = _count(split, "ephemeral_5m_input_tokens", "cache_creation.")
        # Trust the larger figure: tokens written must be billed at some TTL, never dropped.
        writes = max(writes, w5m + w1h)
    w5m = writes - w1h
    return Usage(
        input_tokens=uncached + read + writes,
        output_tokens=_count(u, "output_tokens"),
        cache_read_tokens=read,
        cache_write_tokens=w5m,
        cache_write_1h_tokens=w1h,
    )


def merge_anthropic_stream_usage(
    message_start_usage: dict[str, Any], message_delta_usage: dict[str, Any] | None
) -> Usage:
    """One streamed message's usage. message_start carries input and cache counts (and a
    placeholder output count); message_delta's counts are cumulative, so a non-null value
    there replaces the start's rather than adding to it."""
    merged = dict(_require_mapping(message_start_usage))
    if message_delta_usage is not None:
        for key, value in _require_mapping(message_delta_usage).items():
            if value is not None:
                merged[key] = value
    return usage_from_anthropic(merged)


def usage_from_native(u: dict[str, Any]) -> tuple[Literal["openai", "anthropic"], Usage]:
    """Detect the shape by its key names and convert. A bare `{input_tokens, output_tokens}`
    means the same under both conventions (no cache tokens to include or exclude), so it is
    read as Anthropic's, which is where such bare blocks come from (message_delta)."""
    u = dict(_require_mapping(u))
    keys = u.keys()
    if "prompt_tokens" in keys or "completion_tokens" in keys:
        return "openai", usage_from_openai(u)
    if keys & _ANTHROPIC_ONLY:
        return "anthropic", usage_from_anthropic(u)
    if keys & _OPENAI_ONLY:
        return "openai", usage_from_openai(u)
    if "input_tokens" in u or "output_tokens" in u:
        return "anthropic", usage_from_anthropic(u)
    raise ValueError(
        "unrecognised usage block: expected OpenAI (prompt_tokens/completion_tokens, "
        "input_tokens_details …) or Anthropic (input_tokens, cache_read_input_tokens …) keys"
    )
