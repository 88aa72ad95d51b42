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
    "usage_from_gemini",
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
        in_det = _details(u, "input_tokens_details") or _details(u, "input_token_details")
        out_det = _details(u, "output_tokens_details") or _details(u, "output_token_details")
        cached = _count(in_det, "cached_tokens", "input_tokens_details.")
        reasoning = _count(out_det, "reasoning_tokens", "output_tokens_details.")
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
    # Audio is counted inside the totals: `audio_tokens` is all the prompt's audio, cached or
    # not (the Realtime API splits the cached part out in `cached_tokens_details`).
    audio_in = _count(in_det, "audio_tokens", "prompt_tokens_details.")
    audio_cached = _count(_details(in_det, "cached_tokens_details"), "audio_tokens")
    audio_out = _count(out_det, "audio_tokens", "completion_tokens_details.")
    if audio_in > total_in or audio_cached > min(cached, audio_in) or audio_out > output:
        raise ValueError("usage audio_tokens exceed the tokens they are part of")
    return Usage(
        input_tokens=total_in,
        output_tokens=output,
        cache_read_tokens=cached,
        reasoning_tokens=reasoning,
        input_audio_tokens=audio_in - audio_cached,
        cache_audio_read_tokens=audio_cached,
        output_audio_tokens=audio_out,
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


_GEMINI_KEYS = {
    "prompt": ("promptTokenCount", "prompt_token_count"),
    "candidates": ("candidatesTokenCount", "candidates_token_count"),
    "cached": ("cachedContentTokenCount", "cached_content_token_count"),
    "thoughts": ("thoughtsTokenCount", "thoughts_token_count"),
    "tool_prompt": ("toolUsePromptTokenCount", "tool_use_prompt_token_count"),
    "prompt_details": ("promptTokensDetails", "prompt_tokens_details"),
    "cache_details": ("cacheTokensDetails", "cache_tokens_details"),
    "candidates_details": ("candidatesTokensDetails", "candidates_tokens_details"),
}


def _gemini(u: Mapping[str, Any], key: str) -> Any:
    camel, snake = _GEMINI_KEYS[key]
    return u.get(camel, u.get(snake))


def _gemini_count(u: Mapping[str, Any], key: str) -> int:
    camel, snake = _GEMINI_KEYS[key]
    return _count(u, camel if camel in u else snake)


def _modality(details: Any, name: str) -> int:
    """Gemini's per-modality counts: `[{"modality": "AUDIO", "tokenCount": n}, …]`."""
    if details is None:
        return 0
    if not isinstance(details, list):
        raise ValueError(f"usage modality details must be a list, got {details!r}")
    total = 0
    for item in details:
        if isinstance(item, Mapping) and str(item.get("modality", "")).upper() == name:
            total += _count(item, "tokenCount" if "tokenCount" in item else "token_count")
    return total


def usage_from_gemini(u: dict[str, Any]) -> Usage:
    """Gemini's `usageMetadata` (camelCase, or the Python SDK's snake_case). Thinking tokens
    bill as output; audio is priced apart (gemini-2.0-flash audio input is 7× its text),
    images and video at the text rate, as Google publishes."""
    u = dict(_require_mapping(u))
    prompt = _count({"n": _gemini(u, "prompt")}, "n") + _count(
        {"n": _gemini(u, "tool_prompt")}, "n"
    )
    cached = _count({"n": _gemini(u, "cached")}, "n")
    thoughts = _count({"n": _gemini(u, "thoughts")}, "n")
    candidates = _count({"n": _gemini(u, "candidates")}, "n")
    audio_prompt = _modality(_gemini(u, "prompt_details"), "AUDIO")
    audio_cached = _modality(_gemini(u, "cache_details"), "AUDIO")
    if cached > prompt or audio_prompt > prompt or audio_cached > min(cached, audio_prompt):
        raise ValueError("usage cached or audio counts exceed promptTokenCount")
    return Usage(
        input_tokens=prompt,
        output_tokens=candidates + thoughts,
        cache_read_tokens=cached,
        reasoning_tokens=thoughts,
        input_audio_tokens=audio_prompt - audio_cached,
        cache_audio_read_tokens=audio_cached,
        output_audio_tokens=_modality(_gemini(u, "candidates_details"), "AUDIO"),
    )


def usage_from_native(
    u: dict[str, Any],
) -> tuple[Literal["openai", "anthropic", "gemini"], Usage]:
    """Detect the shape by its key names and convert. A bare `{input_tokens, output_tokens}`
    means the same under both conventions (no cache tokens to include or exclude), so it is
    read as Anthropic's, which is where such bare blocks come from (message_delta)."""
    u = dict(_require_mapping(u))
    keys = u.keys()
    if keys & {"promptTokenCount", "prompt_token_count", "candidatesTokenCount"}:
        return "gemini", usage_from_gemini(u)
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
