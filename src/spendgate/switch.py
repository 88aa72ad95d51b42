"""`FeatureSwitch`: how every optimization is turned on, per feature, and put in shadow mode.

DESIGN.md's rule "every optimization can be switched per feature and run in shadow mode"
written once: a stage's config model subclasses `FeatureSwitch[Override]`, where
`Override` (a `FeatureOverride` subclass) adds the stage's own per-feature settings. The
YAML shape is the same for each:

    cache:                      # or prefix:
      enabled: false            # off by default …
      shadow: false             # decide and record, change nothing
      features:
        support-bot: {enabled: true}          # … on for one feature
        summaries: {enabled: true, shadow: true}

A leaf (pydantic only), so each capability's config module can import it.
"""

from __future__ import annotations

from typing import Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["FeatureOverride", "FeatureSwitch"]


class FeatureOverride(BaseModel):
    """One feature's switch; a field left unset inherits the top-level value."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool | None = None
    shadow: bool | None = None


OverrideT = TypeVar("OverrideT", bound=FeatureOverride)


class FeatureSwitch(BaseModel, Generic[OverrideT]):
    """`enabled` and `shadow` at the top level, overridden per feature in `features`."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = False
    shadow: bool = False
    """Decide and record (with what acting would have saved), but change nothing."""
    features: dict[str, OverrideT] = Field(default_factory=dict)

    def override(self, feature: str | None) -> OverrideT | None:
        return self.features.get(feature) if feature else None

    def enabled_for(self, feature: str | None) -> bool:
        found = self.override(feature)
        return self.enabled if found is None or found.enabled is None else found.enabled

    def shadow_for(self, feature: str | None) -> bool:
        found = self.override(feature)
        return self.shadow if found is None or found.shadow is None else found.shadow

    def on_anywhere(self) -> bool:
        """On for some call: at the top level or for at least one feature (a stage that is
        off everywhere is not built at all)."""
        return self.enabled or any(f.enabled for f in self.features.values())
