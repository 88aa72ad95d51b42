"""Output limits: `max_tokens` caps per use case / feature, learned caps, truncation back-off,
and output-format hints.

Why: output tokens cost 4–5× input tokens, and an unset `max_tokens` lets a runaway answer
bill thousands of them. A cap is applied only when the client set none or a larger one; we
never raise a client's own limit.

Learned caps: per feature, the `percentile` of output tokens over the ledger's recent
successful calls (finish_reason stop / end_turn / tool calls) × `margin`, once there are
`min_samples` of them. Back-off: per feature we count the calls we capped and how many of
them ended with finish_reason `length` (`max_tokens` on Anthropic); when that share exceeds
`max_truncation_rate` over at least `backoff_min_calls` calls, the feature's cap is
multiplied by `backoff_factor` (and the counters restart), so a cap that hurts answers
loosens itself.

Savings: none credited. What the model would have written without the cap is unknown on
the call itself, so any figure would be invented; the event records the cap, the client's
own value and whether the answer was truncated, which is what a shadow comparison needs.
"""

from __future__ import annotations

import asyncio
import math
import re
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from spendgate.call import Call
from spendgate.ledger import LedgerStore
from spendgate.providers.dialects import dialect_for
from spendgate.trim.config import OutputConfig

__all__ = ["TRUNCATED", "OutputLimiter", "percentile"]

TRUNCATED = frozenset({"length", "max_tokens"})
_COMPLETE = frozenset({"stop", "end_turn", "tool_calls", "tool_use", "stop_sequence"})
_REASONING = re.compile(r"^(o\d|gpt-5)", re.IGNORECASE)


def percentile(values: list[int], q: float) -> int:
    """Nearest-rank percentile (no interpolation: a cap is a whole number of tokens)."""
    if not values:
        raise ValueError("no values")
    ordered = sorted(values)
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[rank - 1]


@dataclass
class _FeatureState:
    learned: int | None = None
    learned_at: float = -math.inf
    samples: int = 0
    multiplier: float = 1.0
    capped: int = 0
    truncated: int = 0


@dataclass
class OutputLimiter:
    cfg: OutputConfig
    store: LedgerStore | None = None
    _state: dict[str, _FeatureState] = field(default_factory=dict)

    def state(self, feature: str | None) -> _FeatureState:
        return self._state.setdefault(feature or "", _FeatureState())

    # ---- learning -------------------------------------------------------------------

    def learn(self, feature: str) -> tuple[int | None, int]:
        """(cap, samples) for a feature from the ledger's recent successful calls."""
        lc = self.cfg.learned
        if self.store is None:
            return None, 0
        since = datetime.now(UTC) - timedelta(days=lc.window_days)
        lengths: list[int] = []
        for event in self.store.events(since=since, filters={"feature": feature}):
            if event.status != 200 or event.endpoint == "embeddings":
                continue
            if (event.extra or {}).get("finish_reason") not in _COMPLETE:
                continue
            lengths.append(event.output_tokens)
            if len(lengths) >= lc.max_events:
                break
        if len(lengths) < lc.min_samples:
            return None, len(lengths)
        return max(lc.floor, math.ceil(percentile(lengths, lc.percentile) * lc.margin)), len(
            lengths
        )

    async def refresh(self, feature: str | None) -> None:
        lc = self.cfg.learned
        if not lc.enabled or not feature or self.store is None:
            return
        st = self.state(feature)
        now = time.monotonic()
        if now - st.learned_at < lc.refresh_s:
            return
        st.learned_at = now
        st.learned, st.samples = await asyncio.to_thread(self.learn, feature)

    # ---- deciding -------------------------------------------------------------------

    def cap_for(self, call: Call) -> tuple[int | None, str | None]:
        tags = call.tags
        st = self.state(tags.feature)
        base: int | None = None
        source: str | None = None
        if tags.feature and tags.feature in self.cfg.feature_caps:
            base, source = self.cfg.feature_caps[tags.feature], "feature"
        elif tags.use_case and tags.use_case in self.cfg.use_case_caps:
            base, source = self.cfg.use_case_caps[tags.use_case], "use_case"
        elif st.learned is not None:
            base, source = st.learned, "learned"
        if base is None:
            return None, None
        return max(1, math.ceil(base * st.multiplier)), source

    def apply(self, call: Call, body: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """The body with its output cap (and hint) applied, and what was decided."""
        decision: dict[str, Any] = {}
        cap, source = self.cap_for(call)
        key, client = _client_limit(call, body)
        if cap is not None:
            decision.update(cap=cap, source=source, client_max=client)
            if client is None or client > cap:
                body = {**body, key: cap}
                decision["applied"] = True
            else:
                decision["applied"] = False
        hint = self.cfg.hints.get(call.tags.use_case or "")
        if hint is not None:
            body = self._hint(call, body, hint)
            decision["hint"] = hint
        return body, decision

    def _hint(self, call: Call, body: dict[str, Any], hint: str) -> dict[str, Any]:
        text = self.cfg.json_instruction if hint == "json" else self.cfg.brief_instruction
        reasoning = bool(_REASONING.match(call.model))
        return dialect_for(call.api).with_hint(
            body, text, reasoning=reasoning, json_mode=hint == "json"
        )

    # ---- watching ---------------------------------------------------------------------

    def observe(self, call: Call, finish_reason: str | None, applied: bool) -> bool:
        """Count a capped call's outcome; True when the feature's cap was just backed off."""
        if not applied:
            return False
        st = self.state(call.tags.feature)
        st.capped += 1
        if finish_reason in TRUNCATED:
            st.truncated += 1
        if (
            st.capped >= self.cfg.backoff_min_calls
            and st.truncated / st.capped > self.cfg.max_truncation_rate
        ):
            st.multiplier *= self.cfg.backoff_factor
            st.capped = st.truncated = 0
            return True
        return False


def _client_limit(call: Call, body: dict[str, Any]) -> tuple[str, int | None]:
    """Which field carries the output limit for this call, and the client's value."""
    return dialect_for(call.api).output_limit(body, bool(_REASONING.match(call.model)))
