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

__all__ = [
    "AdaptConfig",
    "CascadeConfig",
    "JudgeConfig",
    "MultiConfig",
    "Override",
    "RoutingConfig",
    "Rule",
    "RuleWhen",
]


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
    adapt: bool | None = None
    """Let the adaptive router learn and decide for this feature (see `AdaptConfig`)."""
    cascade: bool | None = None
    """Weak-first cascade for this feature's weak-routed calls (see `CascadeConfig`)."""
    expect_json: bool | None = None
    """This feature's answers must be JSON even when the request does not say so."""
    target: float | None = Field(default=None, gt=0, le=1)
    """The adaptive loop's quality target for this feature."""


class MultiConfig(_Strict):
    """Multi-model routing: a folder written by `MultiModelRouter.save` (one quality
    predictor per model); the cheapest model whose predicted quality ≥ target × the best
    prediction serves. Prices come from the deployments' price (else the catalog) on a
    reference call of 1,000 input and 250 output tokens."""

    router: str = Field(min_length=1)
    target: float = Field(default=0.95, gt=0, le=1)
    models: list[str] | None = None
    """Gateway model names to choose among (default: every model in the folder)."""


class JudgeConfig(_Strict):
    """How a weak answer is graded against the strong one (`spendgate.routing.judge`)."""

    kind: Literal["exact", "json", "rubric", "pairwise"] = "pairwise"
    model: str | None = None
    """The LLM judge's model (rubric, pairwise); default: the strong tier."""
    fields: list[str] = Field(default_factory=list)
    """For `json`: the fields compared (dotted paths); default: the reference's keys."""


class AdaptConfig(_Strict):
    """The closed loop (`spendgate.routing.loop`): per-feature learning from sampled labels,
    shadow first, with a guard that rolls a feature back to the requested model."""

    enabled: bool = False
    mode: Literal["shadow", "auto", "active"] = "shadow"
    """shadow: decide and record, serve the requested model; auto: shadow until
    `min_labels` labels meet `target`, then serve; active: serve from the start."""
    sample: float = Field(default=0.1, ge=0, le=1)
    """Share of the feature's routed calls labelled (a twin call on the other tier, judged)."""
    judge: JudgeConfig = Field(default_factory=JudgeConfig)
    target: float = Field(default=0.95, gt=0, le=1)
    """Delivered quality / the strong model's, over the label window, that must hold."""
    margin: float = Field(default=0.02, ge=0, le=0.5)
    """The threshold aims at target + margin, so noise does not trip the guard at once."""
    min_labels: int = Field(default=30, ge=1)
    window: int = Field(default=200, ge=1)
    explore: float = Field(default=1.0, ge=0)
    """Upper-confidence bonus: uncertain prompts go to the strong model."""
    value_usd: float | None = Field(default=None, gt=0)
    """Cost in the reward: a call goes strong when P(weak falls short) × value_usd exceeds
    the strong model's extra cost on it (instead of the calibrated threshold)."""
    features: list[str] | None = None
    """Features the loop runs for (default: every feature; overrides can switch it)."""
    max_features: int = Field(default=1000, ge=1)
    max_pending: int = Field(default=64, ge=1)
    """Labelling tasks in flight at most; beyond that a sampled call is not labelled (a
    burst must not turn into a burst of twin and judge calls)."""
    state: str | None = None
    """JSON file keeping what was learnt across restarts (written at shutdown)."""


Signal = Literal["refusal", "json", "consistency", "logprobs", "truncated"]
DEFAULT_SIGNALS: tuple[Signal, ...] = ("refusal", "json", "consistency", "logprobs")


class CascadeConfig(_Strict):
    """Weak-first cascade (`spendgate.routing.cascade`) for calls routed to the weak tier."""

    enabled: bool = False
    signals: list[Signal] = Field(default_factory=lambda: list(DEFAULT_SIGNALS))
    min_agreement: float = Field(default=0.5, ge=0, le=1)
    sample_temperature: float = Field(default=0.7, ge=0, le=2)
    min_logprob: float = Field(default=-1.0, le=0)
    request_logprobs: bool = False
    """Ask OpenAI-format upstreams for token log-probabilities (for the `logprobs` signal)."""


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
    adapt: AdaptConfig = Field(default_factory=AdaptConfig)
    cascade: CascadeConfig = Field(default_factory=CascadeConfig)

    @model_validator(mode="after")
    def _tiers(self) -> RoutingConfig:
        if self.enabled and (not self.strong or not self.weak):
            raise ValueError("routing needs both `strong` and `weak` models when enabled")
        if isinstance(self.threshold, float) and not 0 <= self.threshold <= 1:
            raise ValueError("threshold must be within [0, 1] or a stored threshold name")
        return self
