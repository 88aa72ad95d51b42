"""The `trim:` settings section: compression, history windows, output limits.

Every part is opt-in and scoped: it acts on a call only when the call's feature or use case
is listed (`"*"` = every call), and `shadow: true` makes it decide and record without
changing the request, so savings and quality can be measured first.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from spendgate.call import Tags

__all__ = [
    "CompressConfig",
    "HistoryConfig",
    "LearnedCapsConfig",
    "OutputConfig",
    "Scope",
    "TrimConfig",
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Scope(_Strict):
    """Which calls a part applies to: a call matches when its feature or its use case is
    listed; `"*"` in either list matches every call."""

    features: list[str] = Field(default_factory=list)
    use_cases: list[str] = Field(default_factory=list)
    shadow: bool = False
    """Decide and record (with the would-be saving), but send the request unchanged."""

    def matches(self, tags: Tags) -> bool:
        if "*" in self.features or "*" in self.use_cases:
            return True
        return (tags.feature is not None and tags.feature in self.features) or (
            tags.use_case is not None and tags.use_case in self.use_cases
        )


class CompressConfig(Scope):
    ratio: float = Field(default=1 / 3, gt=0, le=1)
    """Target share of a span's tokens to keep (measured with the served model's tokenizer)."""
    min_tokens: int = Field(default=300, ge=0)
    """Spans shorter than this are left alone: the saving would not pay for the risk."""
    roles: list[Literal["tool", "user", "assistant"]] = Field(
        default_factory=lambda: ["tool"]  # type: ignore[arg-type]
    )
    """Whole messages compressed by role when at least `min_tokens` long (`tool`: OpenAI tool
    messages and Anthropic `tool_result` blocks; `user`: user messages other than the last
    one). Spans marked `<compress>…</compress>` are compressed wherever they are."""
    system: bool = False
    """Also compress marked spans in the system prompt (off: never touch it)."""
    cached_prefix: bool = False
    """Also compress content at or before an Anthropic `cache_control` breakpoint."""
    exact_counts: bool = False
    """Size Claude spans with the (slow) exact tokenizer instead of the calibrated estimate."""


class LearnedCapsConfig(_Strict):
    enabled: bool = False
    percentile: float = Field(default=0.99, gt=0, le=1)
    margin: float = Field(default=1.2, ge=1)
    min_samples: int = Field(default=50, ge=1)
    window_days: float = Field(default=7, gt=0)
    max_events: int = Field(default=5000, ge=1)
    refresh_s: float = Field(default=300, ge=0)
    """How often a feature's cap is recomputed from the ledger (0: on every call)."""
    floor: int = Field(default=16, ge=1)


class OutputConfig(Scope):
    use_case_caps: dict[str, int] = Field(
        default_factory=lambda: {"classification": 16, "summarization": 400}
    )
    """max_tokens per use case (seed defaults: classification 10–20, short summary 200–400)."""
    feature_caps: dict[str, int] = Field(default_factory=dict)
    """max_tokens per feature; wins over the use-case cap."""
    learned: LearnedCapsConfig = Field(default_factory=LearnedCapsConfig)
    max_truncation_rate: float = Field(default=0.05, ge=0, le=1)
    """When more than this share of capped calls of a feature end with finish_reason
    `length`, the feature's cap is multiplied by `backoff_factor`."""
    backoff_min_calls: int = Field(default=20, ge=1)
    backoff_factor: float = Field(default=2.0, gt=1)
    hints: dict[str, Literal["json", "brief"]] = Field(default_factory=dict)
    """Output-format hint per use case: `json` (JSON mode + instruction), `brief` (a brevity
    instruction). Opt-in; recorded in the ledger event."""
    brief_instruction: str = "Answer as briefly as the question allows."
    json_instruction: str = "Respond with a single JSON object and nothing else."

    @model_validator(mode="after")
    def _positive_caps(self) -> OutputConfig:
        for where, caps in (
            ("use_case_caps", self.use_case_caps),
            ("feature_caps", self.feature_caps),
        ):
            for name, cap in caps.items():
                if cap < 1:
                    raise ValueError(f"{where}.{name}: a cap must be at least 1 token")
        return self


class HistoryConfig(Scope):
    keep_last_turns: int = Field(default=6, ge=1)
    """Turns kept verbatim (a turn = a user message and everything up to the next one, so a
    tool call and its result always stay together)."""
    max_tokens: int | None = Field(default=None, ge=1)
    """Optional token budget for the verbatim turns: fewer are kept when they exceed it."""
    summarize_every: int = Field(default=4, ge=1)
    """Older turns are summarized in blocks of this many, so a summary is paid once per
    segment and reused (cached) by every later call of the conversation."""
    summary_model: str = "gpt-4o-mini"
    summary_max_tokens: int = Field(default=300, ge=16)
    cache_size: int = Field(default=10_000, ge=1)
    prompt: str = (
        "Summarize the conversation so far for the assistant who continues it. Keep names, "
        "numbers, decisions, open questions and the user's preferences. Be concise."
    )


class TrimConfig(_Strict):
    enabled: bool = True
    record_system_prompt: bool = True
    """Record a hash and token count of each call's system prompt (never its text), for
    `spendgate analyze-prompts`."""
    compress: CompressConfig = Field(default_factory=CompressConfig)
    output: OutputConfig = Field(default_factory=OutputConfig)
    history: HistoryConfig = Field(default_factory=HistoryConfig)

    @property
    def active(self) -> bool:
        parts: list[Scope] = [self.compress, self.output, self.history]
        return self.enabled and any(p.features or p.use_cases for p in parts)
