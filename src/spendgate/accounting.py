"""Turning a finished call into money and one ledger event.

Rules (the same everywhere, written once here):
- Actual cost = usage × the serving deployment's price at the call's service tier (the
  `Pricer` decides which name, provider, override and tier variant). Unknown price → cost
  unknown (None), never 0.
- A failed call the provider did not bill (an error status, no usage) costs a known 0.
- A call whose usage the provider did not report (client left, stream cut) is priced on
  tokenizer counts and marked estimated.
- Baseline = actual + the savings stages credited (each stage that acts records what the
  call would have cost without it, in `call.savings`); with no optimization they are equal.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import orjson

from spendgate.analytics.system_prompt import input_split
from spendgate.call import Call, Cost, Usage, to_nanos
from spendgate.ledger import BatchingWriter, UsageEvent
from spendgate.ledger.prompts import PromptLog
from spendgate.metrics import Metrics
from spendgate.pricing import Pricer, billed_tier
from spendgate.reply import Reply

__all__ = ["Accountant", "prompt_fingerprint"]


def prompt_fingerprint(call: Call) -> str:
    """A short hash of what was asked, so repeats can be measured without storing prompts."""
    body = call.body
    material = {
        k: body.get(k)
        for k in ("system", "instructions", "messages", "input", "tools")
        if body.get(k) is not None
    }
    return hashlib.blake2b(orjson.dumps(material), digest_size=8).hexdigest()


@dataclass(eq=False)
class Accountant:
    """Prices each finished call and writes its ledger event (see the module docstring)."""

    pricer: Pricer
    writer: BatchingWriter
    metrics: Metrics | None = None
    prompts: PromptLog | None = None
    """Opt-in prompt logging (`ledger.log_prompts`): None = prompts are not stored."""

    def price(self, call: Call, reply: Reply) -> Cost | None:
        """Price a completed reply once; later calls return the same answer."""
        if reply.priced:
            return reply.cost
        reply.priced = True
        usage = reply.usage
        if usage is None:
            # Nothing was produced: either the call never reached a provider or the provider
            # refused it. Neither is billed.
            reply.cost = Cost(price_version=self.pricer.version) if reply.status >= 400 else None
            return reply.cost
        reply.cost = self.pricer.cost(
            call.model,
            usage,
            deployment=reply.deployment,
            served_as=reply.served_model,
            service_tier=billed_tier(call, reply),
        )
        return reply.cost

    def record(self, call: Call, reply: Reply) -> UsageEvent:
        """Build the call's one ledger event and hand it to the writer (non-blocking)."""
        cost = self.price(call, reply)
        usage = reply.usage
        decisions = call.decisions.as_json()
        route = decisions.pop("route", None)
        savings = {k: to_nanos(v) for k, v in call.savings.items() if v}
        # Shadow decisions ("would have saved") are recorded, never counted as savings.
        cost_nanos = cost.total_nanos if cost is not None else None
        baseline = cost_nanos + sum(savings.values()) if cost_nanos is not None else None
        error = reply.error
        event = UsageEvent(
            request_id=call.request_id,
            ts=call.received_at,
            endpoint=call.endpoint,
            api=call.api,
            feature=call.tags.feature,
            use_case=call.tags.use_case,
            team=call.tags.team,
            tenant=call.tags.tenant,
            user=call.tags.user,
            key_id=call.tags.key_id,
            requested_model=call.requested_model,
            served_model=reply.served_model,
            provider=self._provider_name(reply),
            deployment=reply.deployment,
            input_tokens=usage.input_tokens if usage else 0,
            output_tokens=usage.output_tokens if usage else 0,
            cache_read_tokens=usage.cache_read_tokens if usage else 0,
            cache_write_tokens=usage.cache_write_tokens if usage else 0,
            cache_write_1h_tokens=usage.cache_write_1h_tokens if usage else 0,
            reasoning_tokens=usage.reasoning_tokens if usage else 0,
            usage_estimated=bool(usage and usage.estimated),
            cost_nanos=cost_nanos,
            baseline_nanos=baseline,
            savings=savings,
            cost_estimated=bool(cost and cost.estimated),
            price_version=cost.price_version if cost else self.pricer.version,
            cache=call.cache_outcome,
            route=route,
            attempts=[a.as_dict() for a in reply.attempts],
            stream=call.stream,
            status=reply.status,
            error_type=(error.code or error.type) if error else None,
            latency_ms=(time.perf_counter() - call.started) * 1000,
            ttfb_ms=reply.ttfb_ms,
            client_disconnected=reply.client_disconnected,
            prompt_fingerprint=prompt_fingerprint(call),
            extra=_with_input_split(_extra(call, reply, decisions), call, cost, usage),
        )
        if self.prompts is not None:
            logged = self.prompts.capture(call)
            if logged is not None:
                event.extra = {**(event.extra or {}), "prompt": logged}
        self.writer.submit(event)
        if self.metrics is not None:
            self._observe(call, reply, cost, event)
        return event

    def _provider_name(self, reply: Reply) -> str | None:
        dep = self.pricer.deployment(reply.deployment)
        return getattr(dep, "provider", None) if dep else reply.provider

    def _observe(self, call: Call, reply: Reply, cost: Cost | None, event: UsageEvent) -> None:
        m = self.metrics
        assert m is not None
        m.requests.labels(call.endpoint, str(reply.status)).inc()
        m.latency.labels(call.endpoint).observe(event.latency_ms / 1000)
        model = reply.served_model or call.model
        if cost is not None and cost.total:
            m.cost.labels(model, call.tags.feature or "(none)").inc(float(cost.total))
        if reply.usage is not None:
            m.tokens.labels(model, "input").inc(reply.usage.input_tokens)
            m.tokens.labels(model, "output").inc(reply.usage.output_tokens)
            if reply.usage.cache_read_tokens:
                m.tokens.labels(model, "cache_read").inc(reply.usage.cache_read_tokens)
        feature = call.tags.feature or "(none)"
        if call.cache_outcome:
            m.cache_outcomes.labels(feature, call.requested_model, call.cache_outcome).inc()
        if reply.status < 400:
            routed = call.model != call.requested_model
            m.route_outcomes.labels(feature, model, "routed" if routed else "kept").inc()
        for technique, nanos in event.savings.items():
            if nanos > 0:
                m.savings.labels(feature, technique).inc(nanos / 1e9)


def _extra(call: Call, reply: Reply, decisions: dict[str, Any]) -> dict[str, object] | None:
    extra: dict[str, object] = {}
    if reply.finish_reason:
        extra["finish_reason"] = reply.finish_reason
    tier = billed_tier(call, reply)
    if tier is not None:
        extra["service_tier"] = tier
    usage = reply.usage
    if usage is not None and usage.audio_tokens:
        extra["audio_tokens"] = {
            "input": usage.input_audio_tokens,
            "cache_read": usage.cache_audio_read_tokens,
            "output": usage.output_audio_tokens,
        }
    if reply.extra:
        extra.update(reply.extra)
    if call.decisions:  # (empty when the route, stored in its own column, is the only one)
        extra["decisions"] = decisions
    if reply.error is not None:
        extra["error"] = reply.error.message[:500]
    return extra or None


def _with_input_split(
    extra: dict[str, object] | None, call: Call, cost: Cost | None, usage: Usage | None
) -> dict[str, object] | None:
    """Adds system-prompt tokens and input-side cost (for the system-prompt share report)."""
    split = input_split(call, cost, usage)
    if split is None:
        return extra
    return {**(extra or {}), **split}


def cost_header(cost: Cost | None) -> str:
    """The `x-spendgate-cost-usd` value: exact decimal, or `unknown`."""
    if cost is None:
        return "unknown"
    return format(cost.total.quantize(Decimal("0.000000001")).normalize(), "f")
