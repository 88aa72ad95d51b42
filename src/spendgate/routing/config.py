"""The `routing:` section.

```yaml
routing:
  enabled: true
  strong: gpt-4o            # the strong tier
  weak: gpt-4o-mini         # the weak tier
  apply_to: [gpt-4o]        # requested models the router may change (default: [strong])
  router: default           # registered name or a file from `spendgate train-router`
  threshold: quality_95     # a number, or a threshold name stored in the router file
  mode: active              # or shadow: decide and record, serve the requested model
  rules:                    # first match wins, before the router
    - when: {feature: code-review}
      route: strong
    - when: {max_tokens: 40, code: false, math: false}
      route: weak
  header: true              # honour x-spendgate-route: strong | weak | <model>
  sticky: true              # a follow-up turn keeps its conversation's tier
  quality_sample: 0.02      # share of weak-routed calls also sent to the strong model
  overrides:                # per feature / use case
    - {feature: legal, enabled: false}
```
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["MultiConfig", "Override", "RoutingConfig", "Rule", "RuleWhen"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RuleWhen(_Strict):
    """All given conditions must hold (an empty `when` always matches)."""

    feature: str | list[str] | None = None
    use_case: str | list[str] | None = None
    min_tokens: int | None = Field(default=None, ge=0)
    max_tokens: int | None = Field(default=None, ge=0)
    """Prompt size, estimated as characters / 4 over all messages (cheap, no tokenizer)."""
    code: bool | None = None
    math: bool | None = None
    tools: bool | None = None
    min_turns: int | None = Field(default=None, ge=0)
    max_turns: int | None = Field(default=None, ge=0)
    """Conversation depth: the number of user turns."""
    model: str | list[str] | None = None
    """The requested model."""


class Rule(_Strict):
    when: RuleWhen = Field(default_factory=RuleWhen)
    route: str = Field(min_length=1)
    """`strong`, `weak`, `router` (let the learned router decide) or a model name."""
    name: str | None = None


class Override(_Strict):
    """Per feature / use case settings; the first matching override applies."""

    feature: str | None = None
    use_case: str | None = None
    enabled: bool | None = None
    mode: Literal["active", "shadow"] | None = None
    threshold: float | str | None = None
    quality_sample: float | None = Field(default=None, ge=0, le=1)


class MultiConfig(_Strict):
    """Multi-model routing: a folder written by `MultiModelRouter.save` (one quality
    predictor per model); the cheapest model whose predicted quality ≥ target × the best
    prediction serves. Prices come from the deployments' price (else the catalog) on a
    reference call of 1,000 input and 250 output tokens."""

    router: str = Field(min_length=1)
    target: float = Field(default=0.95, gt=0, le=1)
    models: list[str] | None = None
    """Gateway model names to choose among (default: every model in the folder)."""


class RoutingConfig(_Strict):
    enabled: bool = False
    strong: str | None = None
    weak: str | None = None
    apply_to: list[str] | None = None
    router: str = "default"
    threshold: float | str = "quality_95"
    mode: Literal["active", "shadow"] = "active"
    rules: list[Rule] = Field(default_factory=list)
    header: bool = True
    sticky: bool = True
    sticky_ttl_s: float = Field(default=3600.0, gt=0)
    sticky_max: int = Field(default=100_000, gt=0)
    quality_sample: float = Field(default=0.0, ge=0, le=1)
    sample_seed: int | None = None
    """Seed for the quality-sampling draw (tests); None = system randomness."""
    overrides: list[Override] = Field(default_factory=list)
    multi: MultiConfig | None = None
    """When set, the learned step picks among N models instead of strong/weak."""

    @model_validator(mode="after")
    def _tiers(self) -> RoutingConfig:
        if self.enabled and (not self.strong or not self.weak):
            raise ValueError("routing needs both `strong` and `weak` models when enabled")
        if isinstance(self.threshold, float) and not 0 <= self.threshold <= 1:
            raise ValueError("threshold must be within [0, 1] or a stored threshold name")
        return self
