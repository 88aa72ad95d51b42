"""The `route` stage: header → sticky → rules → learned router → the model that serves.

Only calls asking for a model in `apply_to` (default: the strong tier) are routed, unless the
client sends `x-spendgate-route`. The decision goes to `call.decisions["route"]` (the ledger's
`route` column): requested vs served model, tier, score, threshold, the rule or source that
decided, and the mode. In active mode the stage changes `call.model` and accounting credits
the routing saving (baseline = the requested model on the same usage). In shadow mode it
serves the requested model and records `would_save_usd` in the decision — never in savings.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
import time
from collections import OrderedDict
from dataclasses import replace
from decimal import Decimal
from typing import Any

import orjson

from spendgate.call import Call, Usage
from spendgate.config import ConfigError
from spendgate.errors import GatewayError
from spendgate.pipeline import Next
from spendgate.pricing import billed_tier
from spendgate.reply import Reply
from spendgate.routing.config import Override, RoutingConfig
from spendgate.routing.features import call_text
from spendgate.routing.multimodel import MultiModelRouter
from spendgate.routing.routers import LinearRouter, Router, get_router
from spendgate.routing.rules import facts_of, match_rule
from spendgate.stages import StageContext

__all__ = ["RouteStage", "StickyTiers", "build", "conversation_key"]

log = logging.getLogger("spendgate.routing")

HEADER = "x-spendgate-route"


def conversation_key(call: Call) -> str | None:
    """A fingerprint shared by every turn of one conversation: who (tenant, user), the
    requested model, the system prompt and the first user turn. None for a first turn with
    nothing to key on."""
    body = call.body
    msgs = body.get("messages") if "messages" in body else body.get("input")  # Responses: items
    if not isinstance(msgs, list):
        return None
    first_user = next((m for m in msgs if isinstance(m, dict) and m.get("role") == "user"), None)
    if first_user is None:
        return None
    system = (
        body.get("system")
        or body.get("instructions")
        or [m.get("content") for m in msgs if isinstance(m, dict) and m.get("role") == "system"]
    )
    material = [
        call.tags.tenant,
        call.tags.user,
        call.requested_model,
        system,
        first_user.get("content"),
    ]
    return hashlib.blake2b(orjson.dumps(material), digest_size=12).hexdigest()


class StickyTiers:
    """Conversation key → tier, LRU-bounded with a TTL (per process)."""

    def __init__(self, ttl_s: float, max_entries: int) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._data: OrderedDict[str, tuple[float, str]] = OrderedDict()

    def get(self, key: str) -> str | None:
        item = self._data.get(key)
        if item is None:
            return None
        if time.monotonic() - item[0] > self.ttl_s:
            del self._data[key]
            return None
        self._data.move_to_end(key)
        return item[1]

    def put(self, key: str, tier: str) -> None:
        self._data[key] = (time.monotonic(), tier)
        self._data.move_to_end(key)
        while len(self._data) > self.max_entries:
            self._data.popitem(last=False)


def _answer_text(reply: Reply) -> str:
    body = reply.body or {}
    choices = body.get("choices")
    if isinstance(choices, list) and choices:
        msg = choices[0].get("message") or {}
        return str(msg.get("content") or orjson.dumps(msg.get("tool_calls") or "").decode())
    content = body.get("content")
    if isinstance(content, list):
        return "".join(str(b.get("text", "")) for b in content if isinstance(b, dict))
    return ""


def _answer_summary(reply: Reply) -> dict[str, Any]:
    text = _answer_text(reply)
    return {
        "status": reply.status,
        "chars": len(text),
        "hash": hashlib.blake2b(text.encode(), digest_size=8).hexdigest(),
        "cost_usd": format(reply.cost.total, "f") if reply.cost is not None else None,
    }


class RouteStage:
    name = "route"

    def __init__(self, config: RoutingConfig, ctx: StageContext, router: Router) -> None:
        self.config = config
        self.ctx = ctx
        self.router = router
        self.strong = config.strong or ""
        self.weak = config.weak or ""
        self.apply_to = set(config.apply_to or [self.strong])
        self.sticky = StickyTiers(config.sticky_ttl_s, config.sticky_max) if config.sticky else None
        self._rng = random.Random(config.sample_seed)
        self._tasks: set[asyncio.Task[Any]] = set()
        self.multi: MultiModelRouter | None = None
        self.multi_prices: dict[str, float] = {}
        self.multi_target = config.multi.target if config.multi is not None else 1.0

    # ------------------------------------------------------------------ settings per call
    def _override(self, call: Call) -> Override | None:
        for o in self.config.overrides:
            if (o.feature is None or o.feature == call.tags.feature) and (
                o.use_case is None or o.use_case == call.tags.use_case
            ):
                return o
        return None

    def threshold(self, value: float | str) -> float:
        if isinstance(value, (int, float)):
            return float(value)
        stored = self.router.thresholds if isinstance(self.router, LinearRouter) else {}
        if value not in stored:
            raise ConfigError(
                f"routing.threshold: {value!r} is not a number nor a threshold stored in "
                f"router {self.config.router!r} (stored: {sorted(stored) or 'none'})"
            )
        return float(stored[value])

    def _model_for(self, route: str, where: str) -> str:
        model = {"strong": self.strong, "weak": self.weak}.get(route, route)
        if not self.ctx.table.serving(model):
            raise GatewayError(
                400,
                f"{where} names `{route}`, which is neither `strong`, `weak` nor a model this "
                "gateway serves",
                param=HEADER if where == HEADER else "model",
                code="invalid_route",
            )
        return model

    def _tier(self, model: str) -> str:
        return "strong" if model == self.strong else "weak" if model == self.weak else model

    # ------------------------------------------------------------------ the decision
    def decide(self, call: Call) -> dict[str, Any] | None:
        """What should serve this call, and why (None: not ours to route)."""
        if call.endpoint == "embeddings":
            return None
        if "route_sample_of" in call.decisions:
            # a quality-sampling twin: it must reach the strong model as asked
            return {
                "requested": call.requested_model,
                "served": call.model,
                "tier": "strong",
                "rule": "quality_sample",
                "mode": "active",
                "sample_of": call.decisions["route_sample_of"],
            }
        override = self._override(call)
        if override is not None and override.enabled is False:
            return None
        header = call.headers.get(HEADER, "").strip() if self.config.header else ""
        if not header and call.requested_model not in self.apply_to:
            return None
        mode = (override.mode if override and override.mode else None) or self.config.mode
        decision: dict[str, Any] = {"requested": call.requested_model, "mode": mode}
        key = conversation_key(call) if self.sticky is not None else None
        facts = facts_of(call)
        if header:
            target = self._model_for(header, HEADER)
            decision["rule"] = "header"
        elif key is not None and facts.turns > 1 and (tier := self._sticky_get(key)):
            target = self._model_for(tier, "sticky tier")
            decision["rule"] = "sticky"
        else:
            target = ""
            matched = match_rule(self.config.rules, call, facts)
            if matched is not None and matched[1].route != "router":
                i, rule = matched
                target = self._model_for(rule.route, f"routing.rules[{i}].route")
                decision["rule"] = rule.name or f"rules[{i}]"
            elif self.multi is not None:
                goal = self.multi_target
                preds = self.multi.predict(call_text(call.body)[0])
                target = MultiModelRouter.pick(preds, self.multi_prices, goal)
                decision.update(
                    rule="multi" if matched is None else f"rules[{matched[0]}]:multi",
                    predicted={m: round(q, 4) for m, q in preds.items() if m in self.multi_prices},
                    target_quality=goal,
                )
            else:
                t = self.threshold(
                    override.threshold
                    if override and override.threshold is not None
                    else self.config.threshold
                )
                score = self.router.score(call)
                target = self.strong if score >= t else self.weak
                decision.update(
                    rule="router" if matched is None else f"rules[{matched[0]}]:router",
                    router=self.router.name,
                    score=round(score, 6),
                    threshold=round(t, 6),
                )
        decision["tier"] = self._tier(target)
        decision["served"] = target
        if key is not None and decision["rule"] != "header" and self.sticky is not None:
            self.sticky.put(
                key, decision["tier"] if decision["tier"] in ("strong", "weak") else target
            )
        return decision

    def _sticky_get(self, key: str) -> str | None:
        assert self.sticky is not None
        return self.sticky.get(key)

    # ------------------------------------------------------------------ the stage
    async def handle(self, call: Call, call_next: Next) -> Reply:
        decision = self.decide(call)
        if decision is None:
            return await call_next(call)
        call.decisions["route"] = decision
        target = decision["served"]
        if decision["mode"] == "shadow":
            decision["served"] = call.model
            decision["would_serve"] = target
            reply = await call_next(call)
            if target != call.model:
                reply.on_done(lambda r: self._would_save(decision, call, target, r))
            return reply
        call.model = target
        override = self._override(call)
        share = (
            override.quality_sample
            if override and override.quality_sample is not None
            else self.config.quality_sample
        )
        sample = (
            share > 0
            and target != self.strong
            and decision["rule"] != "header"
            and self.ctx.run_internal is not None
            and self._rng.random() < share
        )
        if not sample:
            return await call_next(call)
        return await self._with_sample(call, call_next, decision)

    def _would_save(self, decision: dict[str, Any], call: Call, target: str, r: Reply) -> None:
        if r.usage is None or r.cost is None:
            return
        alt = self._price(target, r.usage, billed_tier(call, r))
        if alt is not None:
            decision["would_save_usd"] = format(r.cost.total - alt, "f")

    def _price(self, model: str, usage: Usage, tier: str | None = None) -> Decimal | None:
        return self.ctx.pricer.total(model, usage, service_tier=tier)

    async def _with_sample(self, call: Call, call_next: Next, decision: dict[str, Any]) -> Reply:
        """Quality sampling: the same request also goes to the strong model, as an internal
        call with its own ledger event; both answers' size, hash and cost are recorded."""
        assert self.ctx.run_internal is not None
        body = dict(call.body)
        body["stream"] = False
        body.pop("stream_options", None)
        twin = replace(
            call,
            body=body,
            stream=False,
            model=self.strong,
            requested_model=self.strong,
            request_id=call.request_id + "-qs",
            decisions={"route_sample_of": call.request_id},
            savings={},
            # The twin must reach the strong model: no cached (possibly routed) answer.
            headers={
                **{k: v for k, v in call.headers.items() if k != HEADER},
                "x-spendgate-cache": "bypass",
            },
            cache_outcome=None,
            started=time.perf_counter(),
        )
        sample_task = asyncio.ensure_future(self.ctx.run_internal(twin))
        decision["sample"] = {"request_id": twin.request_id, "model": self.strong}
        reply = await call_next(call)
        if reply.is_stream:
            # A stream cannot wait; the sample's own ledger row carries its answer.
            self._tasks.add(sample_task)
            sample_task.add_done_callback(self._tasks.discard)
            return reply
        try:
            strong_reply = await sample_task
        except Exception:  # the sample must never fail the user's call
            log.exception("quality sample failed for %s", call.request_id)
            return reply
        strong_reply.finish()
        decision["sample"]["strong"] = _answer_summary(strong_reply)

        def record_weak(r: Reply) -> None:
            decision["sample"]["weak"] = _answer_summary(r)

        reply.on_done(record_weak)
        return reply


def build(ctx: StageContext) -> RouteStage | None:
    config: RoutingConfig | None = ctx.settings.section("routing")
    if config is None or not config.enabled:
        return None
    served = set(ctx.table.models())
    for key in ("strong", "weak"):
        model = getattr(config, key)
        if model not in served:
            raise ConfigError(f"routing.{key}: model {model!r} is not served by any deployment")
    try:
        router = get_router(config.router)
    except ValueError as exc:
        raise ConfigError(f"routing.router: {exc}") from None
    stage = RouteStage(config, ctx, router)
    if config.multi is not None:
        _attach_multi(stage, config, served)
    stage.threshold(config.threshold)  # fail at startup on an unknown threshold name
    for o in config.overrides:
        if o.threshold is not None:
            stage.threshold(o.threshold)
    return stage


REFERENCE_USAGE = Usage(input_tokens=1000, output_tokens=250)


def _attach_multi(stage: RouteStage, config: RoutingConfig, served: set[str]) -> None:
    assert config.multi is not None
    try:
        multi = MultiModelRouter.load(config.multi.router)
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"routing.multi.router: cannot load {config.multi.router}: {exc}"
        ) from None
    wanted = config.multi.models or list(multi.models)
    prices: dict[str, float] = {}
    for model in wanted:
        if model not in multi.models:
            raise ConfigError(f"routing.multi.models: {model!r} has no predictor in the folder")
        if model not in served:
            raise ConfigError(f"routing.multi.models: {model!r} is not served by any deployment")
        price = stage._price(model, REFERENCE_USAGE)
        if price is None:
            raise ConfigError(f"routing.multi.models: no price known for {model!r}")
        prices[model] = float(price)
    stage.multi = multi
    stage.multi_prices = prices
