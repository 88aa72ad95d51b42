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
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any, ClassVar

import orjson

from spendgate.call import Call, Decision, Decisions, Internal, Tags, Usage
from spendgate.config import ConfigError
from spendgate.errors import GatewayError
from spendgate.ledger.prompts import EVAL_FEATURE
from spendgate.pricing import billed_tier
from spendgate.providers.dialects import dialect_for
from spendgate.reply import Reply
from spendgate.routing.cascade import escalation_reasons
from spendgate.routing.config import Override, RoutingConfig
from spendgate.routing.features import call_text
from spendgate.routing.judge import Judge, answer_text, make_judge
from spendgate.routing.loop import FeatureLearner, Learners, Observation
from spendgate.routing.multimodel import MultiModelRouter
from spendgate.routing.routers import LinearRouter, Router, get_router
from spendgate.routing.rules import CallFacts, facts_of, match_rule
from spendgate.routing.saving import credit_routing
from spendgate.stages import Next, StageContext

__all__ = [
    "LabelOf",
    "RouteDecision",
    "RouteStage",
    "SampleOf",
    "StickyTiers",
    "TwinOf",
    "build",
    "conversation_key",
]

log = logging.getLogger("spendgate.routing")

HEADER = "x-spendgate-route"


@dataclass
class RouteDecision(Decision):
    """What the route stage decided (the ledger event's `route` column)."""

    key: ClassVar[str] = "route"
    requested: str
    mode: str
    """`active` or `shadow` (decide and record, serve the requested model)."""
    rule: str = ""
    """What decided: header, sticky, a rule's name, router, multi, adaptive, rollback,
    adapt_label, quality_sample, cascade_* (prefixed `rules[i]:` when a rule sent it to a
    router; suffixed `:cascade` when the cascade escalated)."""
    served: str = ""
    tier: str = ""
    """`strong`, `weak`, or the model when it is neither."""
    would_serve: str | None = None
    router: str | None = None
    score: float | None = None
    threshold: float | None = None
    base_score: float | None = None
    adapt: dict[str, Any] | None = None
    predicted: dict[str, float] | None = None
    target_quality: float | None = None
    label_of: str | None = None
    sample_of: str | None = None
    of: str | None = None
    """A cascade's side call: the request it was made for."""
    reasons: list[str] | None = None
    cascade: dict[str, Any] | None = None
    sample: dict[str, Any] | None = None
    would_save_usd: str | None = None
    """Shadow mode: what serving `would_serve` would have saved."""


@dataclass
class TwinOf(Decision):
    """Marks a twin the router sends of a call for its own learning; the ledger records
    the request id of the call it copies."""

    request_id: str

    def as_json(self) -> Any:
        return self.request_id


@dataclass
class LabelOf(TwinOf):
    """Marks the adaptive router's labelling twin of a call (`route_label_of`)."""

    key: ClassVar[str] = "route_label_of"


@dataclass
class SampleOf(TwinOf):
    """Marks the quality-sampling twin of a call (`route_sample_of`)."""

    key: ClassVar[str] = "route_sample_of"


def _twin(call: Call, model: str, suffix: str, *decisions: Decision) -> Call:
    """A non-streamed copy of `call` sent to `model` as an internal call with its own ledger
    event (request id + `suffix`). It must reach that model: no cached (possibly routed)
    answer, no route header."""
    body = dict(call.body)
    body["stream"] = False
    body.pop("stream_options", None)
    return replace(
        call,
        body=body,
        stream=False,
        model=model,
        requested_model=model,
        request_id=call.request_id + suffix,
        decisions=Decisions(decisions),
        savings={},
        headers={
            **{k: v for k, v in call.headers.items() if k != HEADER},
            "x-spendgate-cache": "bypass",
        },
        cache_outcome=None,
        started=time.perf_counter(),
    )


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


@dataclass(frozen=True)
class _Pending:
    """What labelling needs from an adaptive decision."""

    learner: FeatureLearner
    phi: Any
    chose_strong: bool


def _usd(reply: Reply) -> str | None:
    return format(reply.cost.total, "f") if reply.cost is not None else None


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
        self.learners: Learners | None = None
        self.judge: Judge | None = None
        if config.adapt.enabled:
            self._start_adapt()

    def _start_adapt(self) -> None:
        cfg = self.config.adapt
        self.judge = make_judge(
            cfg.judge.kind, cfg.judge.model or self.strong, self._judge_send, cfg.judge.fields
        )
        self.learners = Learners(lambda: self._new_learner(cfg.target), cfg.max_features, cfg.state)

    def _new_learner(self, target: float) -> FeatureLearner:
        cfg = self.config.adapt
        return FeatureLearner(
            self.router,
            self.threshold(self.config.threshold),
            mode=cfg.mode,
            target=target,
            margin=cfg.margin,
            min_labels=cfg.min_labels,
            window=cfg.window,
            explore=cfg.explore,
        )

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
    def decide(self, call: Call) -> RouteDecision | None:
        """What should serve this call, and why (None: not ours to route)."""
        return self._decide(call)[0]

    def _decide(self, call: Call) -> tuple[RouteDecision | None, _Pending | None]:
        """The decision, and what labelling needs when the adaptive router made it."""
        if (
            call.endpoint == "embeddings"
            or "internal" in call.decisions
            or (call.decisions.get(SampleOf) is not None)
        ):
            return self._twin_decision(call), None
        override = self._override(call)
        if override is not None and override.enabled is False:
            return None, None
        header = call.headers.get(HEADER, "").strip() if self.config.header else ""
        if not header and call.requested_model not in self.apply_to:
            return None, None
        pending: _Pending | None = None
        mode = (override.mode if override and override.mode else None) or self.config.mode
        decision = RouteDecision(requested=call.requested_model, mode=mode)
        key = conversation_key(call) if self.sticky is not None else None
        facts = facts_of(call)
        if header:
            target = self._model_for(header, HEADER)
            decision.rule = "header"
        elif key is not None and facts.turns > 1 and (tier := self._sticky_get(key)):
            target = self._model_for(tier, "sticky tier")
            decision.rule = "sticky"
        else:
            target, pending = self._pick(call, facts, override, decision)
        decision.tier = self._tier(target)
        decision.served = target
        if key is not None and decision.rule != "header" and self.sticky is not None:
            self.sticky.put(key, decision.tier if decision.tier in ("strong", "weak") else target)
        return decision, pending

    def _twin_decision(self, call: Call) -> RouteDecision | None:
        """A call the gateway made itself is never routed, but a labelling or quality
        twin must reach the tier it was sent to, and says so."""
        if call.endpoint == "embeddings" or "internal" in call.decisions:
            label = call.decisions.get(LabelOf)
            if label is None:
                return None
            return RouteDecision(
                requested=call.requested_model, mode="active", rule="adapt_label",
                served=call.model, tier=self._tier(call.model), label_of=label.request_id,
            )  # fmt: skip
        sample = call.decisions.get(SampleOf)
        assert sample is not None
        return RouteDecision(
            requested=call.requested_model, mode="active", rule="quality_sample",
            served=call.model, tier="strong", sample_of=sample.request_id,
        )  # fmt: skip

    def _pick(
        self, call: Call, facts: CallFacts, override: Override | None, decision: RouteDecision
    ) -> tuple[str, _Pending | None]:
        """The target by the rules, else the multi-model, adaptive or fixed router."""
        matched = match_rule(self.config.rules, call, facts)
        if matched is not None and matched[1].route != "router":
            i, rule = matched
            decision.rule = rule.name or f"rules[{i}]"
            return self._model_for(rule.route, f"routing.rules[{i}].route"), None
        prefix = "" if matched is None else f"rules[{matched[0]}]:"
        if self.multi is not None:
            goal = self.multi_target
            preds = self.multi.predict(call_text(call.body)[0])
            decision.rule = prefix + "multi"
            decision.predicted = {
                m: round(q, 4) for m, q in preds.items() if m in self.multi_prices
            }
            decision.target_quality = goal
            return MultiModelRouter.pick(preds, self.multi_prices, goal), None
        if (learner := self._learner(call, override)) is not None:
            target, pending = self._adaptive(call, facts, learner, decision)
            decision.rule = prefix + decision.rule
            return target, pending
        t = self.threshold(
            override.threshold
            if override and override.threshold is not None
            else self.config.threshold
        )
        score = self.router.score(call)
        decision.rule = prefix + "router"
        decision.router = self.router.name
        decision.score = round(score, 6)
        decision.threshold = round(t, 6)
        return (self.strong if score >= t else self.weak), None

    # ------------------------------------------------------------------ adaptive routing
    def _learner(self, call: Call, override: Override | None) -> FeatureLearner | None:
        if self.learners is None:
            return None
        feature = call.tags.feature or "(none)"
        wanted = self.config.adapt.features
        on = override.adapt if override is not None and override.adapt is not None else None
        if on is False or (on is None and wanted is not None and feature not in wanted):
            return None
        if override is not None and override.target is not None:
            learner = self.learners.peek(feature)
            if learner is None:
                learner = self.learners.get(feature)
                learner.target = override.target
            return learner
        return self.learners.get(feature)

    def _adaptive(
        self, call: Call, facts: CallFacts, learner: FeatureLearner, decision: RouteDecision
    ) -> tuple[str, _Pending]:
        text, turns, tools = call_text(call.body)
        phi, base_score = learner.router.features(text, max(turns, 1), tools)
        score = learner.router.score_phi(phi)
        threshold = learner.threshold
        value = self.config.adapt.value_usd
        if value is not None:
            usage = Usage(input_tokens=max(facts.tokens, 1), output_tokens=256)
            strong_c, weak_c = self._price(self.strong, usage), self._price(self.weak, usage)
            if strong_c is not None and weak_c is not None:
                threshold = float(strong_c - weak_c) / value
        choice = self.strong if score >= threshold else self.weak
        decision.router = learner.router.name
        decision.score = round(score, 6)
        decision.threshold = round(threshold, 6)
        decision.base_score = round(base_score, 6)
        decision.adapt = learner.summary()
        if learner.serving:
            decision.rule = "adaptive"
            served = choice
        else:
            decision.rule = "rollback" if learner.state == "rolled_back" else "adaptive:shadow"
            decision.would_serve = choice
            served = call.requested_model
        return served, _Pending(learner, phi, choice == self.strong)

    def _sticky_get(self, key: str) -> str | None:
        assert self.sticky is not None
        return self.sticky.get(key)

    # ------------------------------------------------------------------ the stage
    async def handle(self, call: Call, call_next: Next) -> Reply:
        decision, pending = self._decide(call)
        if decision is None:
            return await call_next(call)
        call.decisions.add(decision)
        target = decision.served
        label = (
            pending is not None
            and not call.stream
            and self.ctx.run_internal is not None
            and len(self._tasks) < self.config.adapt.max_pending
            and self._rng.random() < self.config.adapt.sample
        )
        if decision.mode == "shadow":
            decision.served = call.model
            decision.would_serve = target
            reply = await call_next(call)
            if target != call.model:
                reply.on_done(lambda r: self._would_save(decision, call, target, r))
            if label and pending is not None:
                self._label_after(call, pending, reply)
            return reply
        call.model = target
        reply = await self._serve_routed(call, call_next, decision, label, pending)
        if self.ctx.accountant is not None:
            accountant = self.ctx.accountant
            reply.on_done(lambda r: credit_routing(accountant, call, r))
        return reply

    async def _serve_routed(
        self,
        call: Call,
        call_next: Next,
        decision: RouteDecision,
        label: bool,
        pending: _Pending | None,
    ) -> Reply:
        """Serve a call routed to `call.model`: labelled, sampled or plain."""
        override = self._override(call)
        target = call.model
        if label and pending is not None:
            reply = await self._serve(call, call_next, decision, override)
            self._label_after(call, pending, reply)
            return reply
        share = (
            override.quality_sample
            if override and override.quality_sample is not None
            else self.config.quality_sample
        )
        sample = (
            share > 0
            and target != self.strong
            and decision.rule != "header"
            and self.ctx.run_internal is not None
            and self._rng.random() < share
        )
        if not sample:
            return await self._serve(call, call_next, decision, override)
        return await self._with_sample(call, call_next, decision)

    async def _serve(
        self, call: Call, call_next: Next, decision: RouteDecision, override: Override | None
    ) -> Reply:
        """Send the call on; a weak-routed call goes through the cascade when it is on."""
        on = override.cascade if override is not None and override.cascade is not None else None
        cascade = self.config.cascade.enabled if on is None else on
        if (
            cascade
            and call.model == self.weak
            and call.model != call.requested_model
            and not call.stream
            and decision.rule != "header"
            and self.ctx.record is not None
        ):
            expect_json = bool(override is not None and override.expect_json)
            return await self._cascade(call, call_next, decision, expect_json)
        return await call_next(call)

    # ------------------------------------------------------------------ cascade
    async def _cascade(
        self, call: Call, call_next: Next, decision: RouteDecision, expect_json: bool
    ) -> Reply:
        """Weak first; escalate to the strong model when the weak answer's signals say so.
        Every weak call made is costed in the ledger (see `spendgate.routing.cascade`)."""
        cfg = self.config.cascade
        body = dict(call.body)
        flag = dialect_for(call.api).logprobs_field
        if cfg.request_logprobs and "logprobs" in cfg.signals and flag is not None:
            body[flag] = True
        attempt = replace(
            call, body=body, decisions=call.decisions.copy(), savings=dict(call.savings)
        )
        second: Call | None = None
        if "consistency" in cfg.signals:
            second = replace(
                call,
                body={**body, "temperature": cfg.sample_temperature},
                request_id=call.request_id + "-c2",
                decisions=Decisions([Internal("cascade_sample"), self._side_decision(
                    call, "cascade_sample")]),
                savings={},
                headers={**call.headers, "x-spendgate-cache": "bypass"},
                cache_outcome=None,
            )  # fmt: skip
        if second is None:
            reply = await call_next(attempt)
            second_reply = None
        else:
            reply, second_reply = await asyncio.gather(call_next(attempt), call_next(second))
        checked: dict[str, Any] = {"signals": list(cfg.signals)}
        if second is not None and second_reply is not None:
            second_reply.finish()
            self._record_side(second, second_reply)
            checked["sample_request_id"] = second.request_id
            checked["sample_cost_usd"] = _usd(second_reply)
        if reply.status != 200 or reply.served_model is None or not isinstance(reply.body, dict):
            call.decisions.update(attempt.decisions)
            call.savings.update(attempt.savings)
            decision.cascade = {**checked, "escalated": False, "note": "weak call failed"}
            return reply
        reasons, measured = escalation_reasons(
            cfg.signals,
            body,
            reply.body,
            second_reply.body if second_reply is not None and second_reply.status == 200 else None,
            expect_json=expect_json,
            min_agreement=cfg.min_agreement,
            min_logprob=cfg.min_logprob,
        )
        checked.update(measured)
        if not reasons:
            call.decisions.update(attempt.decisions)
            call.savings.update(attempt.savings)
            decision.cascade = {**checked, "escalated": False}
            return reply
        # Escalate: the weak answer is paid for and recorded, then the strong model answers.
        reply.finish()
        weak_call = replace(
            attempt,
            request_id=call.request_id + "-cw",
            decisions=Decisions(
                [Internal("cascade_weak"), self._side_decision(call, "cascade_weak", reasons)]
            ),
            savings={},
        )
        self._record_side(weak_call, reply)
        decision.tier, decision.served = "strong", self.strong
        decision.rule = f"{decision.rule}:cascade"
        decision.cascade = {
            **checked,
            "escalated": True,
            "reasons": reasons,
            "weak_request_id": weak_call.request_id,
            "weak_cost_usd": _usd(reply),
        }
        call.model = self.strong
        return await call_next(call)

    def _side_decision(
        self, call: Call, rule: str, reasons: list[str] | None = None
    ) -> RouteDecision:
        return RouteDecision(
            requested=call.requested_model, served=self.weak, tier="weak", rule=rule,
            mode="active", of=call.request_id, reasons=reasons,
        )  # fmt: skip

    def _record_side(self, side: Call, reply: Reply) -> None:
        """Ledger row for a weak call the cascade made and did not serve: its whole cost is
        the cascade's (baseline 0), so `savings.routing` is minus that cost."""
        assert self.ctx.record is not None
        if reply.cost is not None:
            side.savings["routing"] = -reply.cost.total
        self.ctx.record(side, reply)

    # ------------------------------------------------------------------ labelling
    def _label_after(self, call: Call, pending: _Pending, reply: Reply) -> None:
        def start(r: Reply) -> None:
            if r.status != 200 or not isinstance(r.body, dict):
                return
            if call.model not in (self.strong, self.weak):
                return  # a label pairs the two tiers
            task = asyncio.ensure_future(self._label(call, pending, call.model, r.body))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

        reply.on_done(start)

    async def _label(
        self, call: Call, pending: _Pending, served: str, answer: dict[str, Any]
    ) -> None:
        """Twin call on the other tier, judge, learn (never raises: it runs detached)."""
        assert self.ctx.run_internal is not None and self.judge is not None
        try:
            other = self.weak if served == self.strong else self.strong
            twin = _twin(call, other, "-al", LabelOf(call.request_id), Internal("adapt_label"))
            twin_reply = await self.ctx.run_internal(twin)
            if twin_reply.status != 200 or not isinstance(twin_reply.body, dict):
                return
            strong_body, weak_body = (
                (answer, twin_reply.body) if other == self.weak else (twin_reply.body, answer)
            )
            prompt = call_text(call.body)[0]
            strong_text, weak_text = answer_text(strong_body), answer_text(weak_body)
            if self.judge.absolute:
                q_strong = await self.judge.grade(prompt, strong_text, None)
                q_weak = await self.judge.grade(prompt, weak_text, None)
            else:
                q_strong = 1.0
                q_weak = await self.judge.grade(prompt, weak_text, strong_text)
            if q_strong is None or q_weak is None:
                return
            pending.learner.observe(
                Observation(pending.phi, q_strong, q_weak, pending.chose_strong)
            )
        except Exception:
            log.exception("routing: labelling %s failed", call.request_id)

    async def _judge_send(self, body: dict[str, Any]) -> dict[str, Any] | None:
        if self.ctx.run_internal is None:
            return None
        judge_call = Call(
            endpoint="chat",
            api="openai",
            body=body,
            requested_model=str(body.get("model")),
            tags=Tags(feature=EVAL_FEATURE, use_case="judge"),
            decisions=Decisions([Internal("judge")]),
        )
        reply = await self.ctx.run_internal(judge_call)
        return reply.body if reply.status == 200 and isinstance(reply.body, dict) else None

    def adapt_status(self) -> dict[str, Any]:
        """Per-feature state of the closed loop (state, labels, measured quality)."""
        return self.learners.summary() if self.learners is not None else {}

    async def aclose(self) -> None:
        """Stop labelling still in flight and keep what was learnt (routing.adapt.state)."""
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.learners is not None:
            try:
                self.learners.save()
            except OSError as exc:
                log.warning("routing: cannot save routing.adapt.state: %s", exc)

    def _would_save(self, decision: RouteDecision, call: Call, target: str, r: Reply) -> None:
        if r.usage is None or r.cost is None:
            return
        alt = self._price(target, r.usage, billed_tier(call, r))
        if alt is not None:
            decision.would_save_usd = format(r.cost.total - alt, "f")

    def _price(self, model: str, usage: Usage, tier: str | None = None) -> Decimal | None:
        return self.ctx.pricer.total(model, usage, service_tier=tier)

    async def _with_sample(self, call: Call, call_next: Next, decision: RouteDecision) -> Reply:
        """Quality sampling: the same request also goes to the strong model, as an internal
        call with its own ledger event; both answers' size, hash and cost are recorded."""
        assert self.ctx.run_internal is not None
        twin = _twin(call, self.strong, "-qs", SampleOf(call.request_id))
        sample_task = asyncio.ensure_future(self.ctx.run_internal(twin))
        sample: dict[str, Any] = {"request_id": twin.request_id, "model": self.strong}
        decision.sample = sample
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
        sample["strong"] = _answer_summary(strong_reply)

        def record_weak(r: Reply) -> None:
            sample["weak"] = _answer_summary(r)

        reply.on_done(record_weak)
        return reply


def build(ctx: StageContext) -> RouteStage | None:
    config: RoutingConfig = ctx.settings.routing
    if not config.enabled:
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
    judge = config.adapt.judge
    if config.adapt.enabled and judge.kind in ("rubric", "pairwise"):
        model = judge.model or config.strong
        if model not in served:
            raise ConfigError(
                f"routing.adapt.judge.model: {model!r} is not served by any deployment"
            )
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
