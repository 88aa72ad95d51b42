"""Settings: a YAML file validated by pydantic, with secrets read from the environment.

Unknown keys are errors (`extra="forbid"`): a misspelt `deployments[0].modles` silently
ignored would route traffic nowhere. `load_settings` turns pydantic's errors into one
message per problem, each naming the dotted key.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from spendgate.alerts.config import AlertsConfig
from spendgate.analytics.config import FeaturesConfig
from spendgate.batches.config import BatchesConfig
from spendgate.budgets.config import BudgetsConfig
from spendgate.cache.config import CacheConfig, PrefixConfig
from spendgate.errors import SpendgateError
from spendgate.pricing import PriceCatalog, PriceFileError, PriceOverride, load_price_file
from spendgate.providers.base import Deployment
from spendgate.routing.config import RoutingConfig
from spendgate.state.config import ResponsesConfig
from spendgate.trim.config import TrimConfig
from spendgate.yamlfile import load_yaml

__all__ = [
    "ConfigError",
    "DeploymentConfig",
    "KeyConfig",
    "ModelEntry",
    "Settings",
    "load_settings",
    "simulated_settings",
]

DEFAULT_BASE_URLS = {
    "openai": "https://api.openai.com/v1",
    "anthropic": "https://api.anthropic.com/v1",
}


class ConfigError(SpendgateError, ValueError):
    """A configuration problem, worded for the person editing the YAML."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelEntry(_Strict):
    name: str = Field(min_length=1)
    """What clients ask for."""
    upstream: str | None = None
    """What the upstream calls it, when different (e.g. a dated snapshot)."""


class BackoffConfig(_Strict):
    """Jittered exponential backoff between retries on one deployment."""

    base_s: float = Field(default=0.5, ge=0)
    max_s: float = Field(default=8.0, ge=0)
    retry_after_max_s: float = Field(default=30.0, ge=0)
    """A `Retry-After` up to this is waited out; a longer one moves on to the next deployment."""


class CircuitBreakerConfig(_Strict):
    """Skip a failing deployment for `cooldown_s`, then let one probe call through."""

    failures: int = Field(default=5, ge=0)
    """Consecutive failures that open the circuit (0: only the error rate counts)."""
    error_rate: float = Field(default=0.0, ge=0, le=1)
    """Failure share over `window_s` (with at least `min_calls` calls) that opens it; 0 = off."""
    min_calls: int = Field(default=20, ge=1)
    window_s: float = Field(default=60.0, gt=0)
    cooldown_s: float = Field(default=30.0, ge=0)


class DeploymentConfig(_Strict):
    name: str = Field(min_length=1)
    provider: Literal["openai", "anthropic", "simulated"]
    base_url: str | None = None
    api_key_env: str | None = None
    """Name of the environment variable that holds the upstream key (keys stay out of YAML)."""
    models: list[str | ModelEntry] = Field(min_length=1)
    price: PriceOverride | None = None
    timeout_s: float = Field(default=120.0, gt=0)
    connect_timeout_s: float = Field(default=10.0, gt=0)
    headers: dict[str, str] = Field(default_factory=dict)
    retries: int = Field(default=0, ge=0, le=10)
    """Extra tries on this deployment after a retryable failure (5xx, 429, timeout…)."""
    backoff: BackoffConfig = Field(default_factory=lambda: BackoffConfig())
    fallbacks: dict[str, list[str]] = Field(default_factory=dict)
    """Model this deployment serves → other models to try, in order, once every deployment
    of the model failed (cross-provider is fine: the request is translated)."""
    circuit_breaker: CircuitBreakerConfig | None = None
    responses_api: bool | None = None
    """Serves OpenAI's Responses API natively (default: OpenAI itself and the simulated
    upstream do; other OpenAI-compatible servers get Responses calls translated to Chat)."""

    @field_validator("fallbacks")
    @classmethod
    def _fallback_keys(cls, v: dict[str, list[str]], info: Any) -> dict[str, list[str]]:
        served = {m if isinstance(m, str) else m.name for m in (info.data.get("models") or [])}
        unknown = sorted(set(v) - served)
        if unknown:
            raise ValueError(f"fallbacks for models this deployment does not serve: {unknown}")
        return v

    def build(self) -> Deployment:
        base_url = self.base_url or DEFAULT_BASE_URLS.get(self.provider)
        if not base_url:
            raise ConfigError(f"deployments.{self.name}.base_url: required for {self.provider}")
        api_key = None
        if self.api_key_env:
            api_key = os.environ.get(self.api_key_env)
            if not api_key:
                raise ConfigError(
                    f"deployments.{self.name}.api_key_env: environment variable "
                    f"{self.api_key_env} is not set"
                )
        models = {
            m if isinstance(m, str) else m.name: m if isinstance(m, str) else (m.upstream or m.name)
            for m in self.models
        }
        return Deployment(
            name=self.name,
            provider=self.provider,
            base_url=base_url,
            api_key=api_key,
            models=models,
            price=self.price,
            timeout_s=self.timeout_s,
            connect_timeout_s=self.connect_timeout_s,
            extra_headers=dict(self.headers),
            retries=self.retries,
            backoff_s=self.backoff.base_s,
            backoff_max_s=self.backoff.max_s,
            retry_after_max_s=self.backoff.retry_after_max_s,
            fallbacks={m: tuple(chain) for m, chain in self.fallbacks.items()},
            responses_api=self.responses_api,
            **_circuit_fields(self.circuit_breaker),
        )


def _circuit_fields(cfg: CircuitBreakerConfig | None) -> dict[str, Any]:
    if cfg is None:
        return {}
    return {
        "circuit_failures": cfg.failures,
        "circuit_error_rate": cfg.error_rate,
        "circuit_min_calls": cfg.min_calls,
        "circuit_window_s": cfg.window_s,
        "circuit_cooldown_s": cfg.cooldown_s,
    }


class KeyConfig(_Strict):
    """A virtual key declared in YAML by its hash (`spendgate keys hash KEY` prints one)."""

    name: str
    hash: str = Field(pattern=r"^sha256:[0-9a-f]{64}$")
    team: str | None = None
    feature: str | None = None
    use_case: str | None = None
    tenant: str | None = None
    """Fixes the tenant of every call made with this key."""
    user: str | None = None
    may_set_tenant: bool = False
    """Lets calls name their tenant (for a trusted backend serving many tenants)."""

    @model_validator(mode="after")
    def _tenant_policy(self) -> KeyConfig:
        if self.tenant and self.may_set_tenant:
            raise ValueError("a key with a fixed `tenant` cannot also have `may_set_tenant`")
        return self


class ServerConfig(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(default=8787, ge=0, le=65535)
    max_body_bytes: int = Field(default=8 * 1024 * 1024, gt=0)
    max_header_bytes: int = Field(default=64 * 1024, ge=4096)
    """Request line plus headers; past it the request is a 431 and the connection closes."""
    auth: Literal["auto", "required", "off"] = "auto"
    """`auto`: keys are required as soon as one exists (YAML or key store)."""
    admin_key_env: str | None = "SPENDGATE_ADMIN_KEY"


class StorageConfig(_Strict):
    ledger: str = "sqlite:///spendgate.db"
    keys: str = "sqlite:///spendgate-keys.db"
    state: str | None = None
    """Stored Responses, passed-through batches and files, deferred calls (`spendgate.state`).
    Default: beside the ledger (its PostgreSQL database, or a `-state` SQLite file)."""


class LedgerConfig(_Strict):
    max_batch: int = Field(default=2000, gt=0)
    """Most events per INSERT transaction. The writer drains what is queued (waiting at
    most `flush_interval_s`), so under light load batches stay small; under heavy load
    fewer, larger transactions amortise the per-commit and index costs (SQLite: 17.8k
    events/s in batches of 500, 21.6k in batches of 2,000, docs/reports.md)."""
    flush_interval_s: float = Field(default=0.05, gt=0)
    max_buffer: int = Field(default=200_000, gt=0)
    spool: str = "auto"
    """Local append-only file of events not yet stored, replayed at the next start (so a
    killed process loses no queued event): `auto` (beside a SQLite ledger, under
    `~/.local/state/spendgate/` for PostgreSQL), `off`, or a directory."""
    shutdown_grace_s: float = Field(default=10.0, ge=0)
    """At shutdown, how long to keep trying a store that is down before leaving what is
    unwritten in the spool for the next start (without a spool: wait without limit)."""
    log_prompts: bool | list[str] = False
    """Keep each call's prompt (messages, system, tools, output settings), redacted, in the
    event's `extra.prompt` so `spendgate bakeoff` can replay a feature's traffic: true for
    every feature, or a list of features. Off by default."""
    redact: list[str] = Field(default_factory=lambda: ["email", "phone", "card", "secret"])
    """Applied to logged prompts: built-in names (email, phone, card, ip, secret) or
    regular expressions; each match is stored as `[REDACTED:<name>]`."""
    prompt_max_chars: int = Field(default=32_000, gt=0)
    """A longer prompt is recorded as skipped, never cut."""

    @field_validator("redact")
    @classmethod
    def _patterns(cls, v: list[str]) -> list[str]:
        from spendgate.ledger.prompts import compile_patterns

        compile_patterns(v)
        return v


class TagsConfig(_Strict):
    max_values: dict[str, int] = Field(
        default_factory=lambda: {
            "feature": 500,
            "use_case": 500,
            "team": 500,
            "tenant": 100_000,
            "user": 1_000_000,
        }
    )
    """Distinct values kept per tag per process; beyond that a value is recorded as
    `(other)` so one buggy client cannot explode reports and metrics."""

    @field_validator("max_values")
    @classmethod
    def _known_tags(cls, v: dict[str, int]) -> dict[str, int]:
        allowed = {"feature", "use_case", "team", "tenant", "user"}
        unknown = set(v) - allowed
        if unknown:
            raise ValueError(f"unknown tag(s) {sorted(unknown)}; allowed: {sorted(allowed)}")
        return v


class PricingConfig(_Strict):
    overrides: str | None = None
    """A price file (path or https URL, YAML or JSON; the shipped supplement's format) read
    at start-up: it corrects a price without a release and wins over the supplement and
    genai-prices. Each ledger event names the price source it used in `price_version`."""


class Settings(_Strict):
    server: ServerConfig = Field(default_factory=ServerConfig)
    pricing: PricingConfig = Field(default_factory=PricingConfig)
    storage: StorageConfig = Field(default_factory=StorageConfig)
    ledger: LedgerConfig = Field(default_factory=LedgerConfig)
    tags: TagsConfig = Field(default_factory=TagsConfig)
    deployments: list[DeploymentConfig] = Field(default_factory=list)
    keys: list[KeyConfig] = Field(default_factory=list)
    # Capability sections: each package defines its own pydantic model (so a setting is
    # added in that package); here they are typed fields, defaults when absent.
    budgets: BudgetsConfig | None = None
    """None when the config has no `budgets:` section: budgets are off (an empty section
    turns them on, with rules managed by the CLI or the admin API)."""
    cache: CacheConfig = Field(default_factory=CacheConfig)
    prefix: PrefixConfig = Field(default_factory=PrefixConfig)
    routing: RoutingConfig = Field(default_factory=RoutingConfig)
    trim: TrimConfig = Field(default_factory=TrimConfig)
    alerts: AlertsConfig = Field(default_factory=AlertsConfig)
    features: FeaturesConfig = Field(default_factory=FeaturesConfig)
    responses: ResponsesConfig = Field(default_factory=ResponsesConfig)
    batches: BatchesConfig = Field(default_factory=BatchesConfig)
    _catalog: PriceCatalog | None = PrivateAttr(default=None)

    @field_validator(
        "cache",
        "prefix",
        "routing",
        "trim",
        "alerts",
        "features",
        "responses",
        "batches",
        mode="before",
    )
    @classmethod
    def _absent_is_default(cls, v: Any) -> Any:
        return {} if v is None else v  # `cache:` with nothing under it (YAML null)

    @field_validator("deployments")
    @classmethod
    def _unique_names(cls, v: list[DeploymentConfig]) -> list[DeploymentConfig]:
        seen: set[str] = set()
        for d in v:
            if d.name in seen:
                raise ValueError(f"deployment name {d.name!r} is used twice")
            seen.add(d.name)
        return v

    @field_validator("deployments")
    @classmethod
    def _fallbacks_served(cls, v: list[DeploymentConfig]) -> list[DeploymentConfig]:
        served = {m if isinstance(m, str) else m.name for d in v for m in d.models}
        for d in v:
            for model, chain in d.fallbacks.items():
                missing = [m for m in chain if m not in served]
                if missing:
                    raise ValueError(
                        f"deployment {d.name!r}: fallbacks.{model} names models no deployment "
                        f"serves: {missing}"
                    )
        return v

    def build_deployments(self) -> list[Deployment]:
        return [d.build() for d in self.deployments]

    def price_catalog(self) -> PriceCatalog:
        """The catalog these settings price with: the default one, or one with the
        operator's `pricing.overrides` file on top (read once per Settings object)."""
        if self.pricing.overrides is None:
            return PriceCatalog.default()
        if self._catalog is None:
            try:
                overrides = load_price_file(self.pricing.overrides)
            except PriceFileError as exc:
                raise ConfigError(f"pricing.overrides: {exc}") from None
            self._catalog = PriceCatalog(overrides=overrides)
        return self._catalog


def _error_lines(exc: ValidationError, prefix: tuple[str, ...] = ()) -> list[str]:
    lines = []
    for err in exc.errors():
        key = ".".join(str(p) for p in (*prefix, *err["loc"])) or "(top level)"
        lines.append(f"  {key}: {err['msg']}")
    return lines


def _format_errors(exc: ValidationError) -> str:
    return "invalid configuration:\n" + "\n".join(_error_lines(exc))


def parse_settings(data: Any) -> Settings:
    """Validated settings, or one ConfigError listing every problem at once (pydantic
    checks every section, so a typo in `cache:` is reported together with one in
    `deployments:`, not after it is fixed)."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError("invalid configuration: the top level must be a mapping of keys")
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc)) from None


def load_settings(path: str | Path) -> Settings:
    p = Path(path)
    data = load_yaml(
        p,
        unreadable=lambda exc: ConfigError(f"cannot read config file {p}: {exc.strerror}"),
        invalid=lambda exc: ConfigError(f"{p} is not valid YAML: {exc}"),
    )
    return parse_settings(data)


SIMULATED_OPENAI_MODELS: dict[str, str] = {
    "gpt-4o": "gpt-4o",
    "gpt-4o-mini": "gpt-4o-mini",
    "gpt-4.1-mini": "gpt-4.1-mini",
    "o3-mini": "o3-mini",
    "o3": "o3",
    "gpt-5": "gpt-5",
    "gpt-4o-audio-preview": "gpt-4o-audio-preview",
    "text-embedding-3-small": "text-embedding-3-small",
}
SIMULATED_ANTHROPIC_MODELS: dict[str, str] = {
    "claude-sonnet-4": "claude-sonnet-4-20250514",
    "claude-3-5-haiku": "claude-3-5-haiku-20241022",
}


def simulated_settings(sim_url: str, **overrides: Any) -> Settings:
    """A realistic catalog wired to the simulated upstream: real model names, real prices."""
    base = sim_url.rstrip("/") + "/v1"
    data: dict[str, Any] = {
        "deployments": [
            {
                "name": "sim-openai",
                "provider": "simulated",
                "base_url": base,
                "models": [{"name": k, "upstream": v} for k, v in SIMULATED_OPENAI_MODELS.items()],
            },
            {
                "name": "sim-anthropic",
                "provider": "simulated",
                "base_url": base,
                "models": [
                    {"name": k, "upstream": v} for k, v in SIMULATED_ANTHROPIC_MODELS.items()
                ],
            },
        ]
    }
    data.update(overrides)
    return parse_settings(data)
