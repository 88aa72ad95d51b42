"""The pipeline's wiring on its own: the stage contract is a leaf, the stage list is plain
imports in one order, decisions are typed and keep the ledger's JSON shape, the prefix
stage's per-format hook, the shared feature switch and the typed settings sections."""

from __future__ import annotations

import ast
import inspect
from decimal import Decimal
from typing import Any

from spendgate import pipeline, stages
from spendgate.batches.stage import DeferDecision
from spendgate.budgets.config import BudgetsConfig
from spendgate.cache.config import CacheConfig, PrefixConfig
from spendgate.cache.prefix import PrefixDecision, _unmarked_for_openai
from spendgate.cache.stage import CacheDecision, CacheStage
from spendgate.call import Call, Decisions, Internal
from spendgate.config import parse_settings
from spendgate.dispatch.dispatcher import Fallback, FallbackChain
from spendgate.reply import Reply
from spendgate.routing.stage import LabelOf, RouteDecision
from spendgate.trim.stage import TrimDecision


def _imports(module: Any) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(inspect.getsource(module))):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return found


def test_the_stage_contract_imports_no_stage_and_no_pipeline() -> None:
    imported = _imports(stages)
    assert "spendgate.pipeline" not in imported
    assert not {m for m in imported if m.endswith((".stage", ".prefix"))}


def test_the_stage_list_is_plain_imports_in_pipeline_order() -> None:
    modules = [b.__module__ for b in pipeline.STAGE_BUILDERS]
    assert modules == [
        "spendgate.budgets.stage",
        "spendgate.cache.stage",
        "spendgate.trim.stage",
        "spendgate.routing.stage",
        "spendgate.cache.prefix",
        "spendgate.batches.stage",
    ]


class _Stage:
    name = "probe"

    async def handle(self, call: Call, call_next: stages.Next) -> Reply:
        return await call_next(call)


def test_pipeline_finds_a_stage_by_its_class() -> None:
    probe = _Stage()
    pipe = pipeline.Pipeline([probe], dispatcher=None, accountant=None)  # type: ignore[arg-type]
    assert pipe.find(_Stage) is probe
    assert pipe.find(CacheStage) is None


def _call(**kw: Any) -> Call:
    return Call(endpoint="chat", api="openai", body={"messages": []}, requested_model="m", **kw)


def test_decisions_keep_the_ledger_json_shape() -> None:
    decisions = Decisions(
        [
            CacheDecision(outcome="skip", reason="stream"),
            TrimDecision(output={"cap": 256, "applied": True}),
            PrefixDecision(provider="openai", prefix_fp="ab", prefix_tokens=12, source="automatic"),
            DeferDecision(reason="header", deployment="d"),
            Fallback("gpt-4o", "claude-sonnet-4", "sim-anthropic"),
            FallbackChain(["gpt-4o"]),
            Internal("judge"),
            LabelOf("sg-1"),
            RouteDecision(requested="a", mode="active", rule="header", served="b", tier="weak"),
        ]
    )
    assert decisions.as_json() == {
        "cache": {"outcome": "skip", "reason": "stream"},
        "trim": {"output": {"cap": 256, "applied": True}},
        "prefix": {
            "provider": "openai",
            "prefix_fp": "ab",
            "prefix_tokens": 12,
            "source": "automatic",
        },
        "defer": {"reason": "header", "deployment": "d"},
        "fallback": {"from": "gpt-4o", "to": "claude-sonnet-4", "deployment": "sim-anthropic"},
        "fallbacks": ["gpt-4o"],
        "internal": "judge",
        "route_label_of": "sg-1",
        "route": {
            "requested": "a",
            "mode": "active",
            "rule": "header",
            "served": "b",
            "tier": "weak",
        },
    }
    assert "internal" in decisions and "budget" not in decisions
    assert decisions.get(CacheDecision) is not None and decisions.get(Fallback) is not None


def test_a_shadow_cache_hit_of_unknown_price_records_a_null_saving() -> None:
    record = CacheDecision(outcome="shadow-hit", shadow=True)
    assert record.as_json() == {"outcome": "shadow-hit", "would_save_usd": None}


def test_decisions_restored_from_json_are_written_back_unchanged() -> None:
    stored = {"route": {"rule": "router", "served": "m"}, "cache": {"outcome": "miss"}}
    restored = Decisions.from_json(stored)
    assert restored.as_json() == stored
    assert "route" in restored and restored.get(RouteDecision) is None


def test_ensure_adds_one_decision_and_copies_are_independent() -> None:
    call = _call()
    first = call.decisions.ensure(CacheDecision)
    assert call.decisions.ensure(CacheDecision) is first
    copy = call.decisions.copy()
    copy.add(Internal("judge"))
    assert "internal" not in call.decisions


def test_injected_breakpoints_are_dropped_only_for_an_openai_upstream() -> None:
    part = {"type": "text", "text": "hi", "cache_control": {"type": "ephemeral"}}
    marked = {"messages": [{"role": "user", "content": [part]}]}
    call = _call()
    call.body = marked
    call.upstream_hooks = [*call.upstream_hooks, _unmarked_for_openai]
    assert call.for_upstream("anthropic") is call
    plain = call.for_upstream("openai")
    assert plain.body == {
        "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]
    }
    assert call.body is marked  # the call itself keeps its marks
    assert _call().for_upstream("openai").upstream_hooks == []


def test_feature_switch_is_shared_by_the_cache_and_prefix_configs() -> None:
    cache = CacheConfig.model_validate(
        {"features": {"bot": {"enabled": True, "shadow": True}, "other": {"enabled": False}}}
    )
    assert cache.on_anywhere() and not cache.enabled
    assert cache.enabled_for("bot") and cache.shadow_for("bot")
    assert not cache.enabled_for("other") and not cache.enabled_for(None)
    prefix = PrefixConfig.model_validate({"enabled": True, "features": {"x": {"shadow": True}}})
    assert prefix.enabled_for("x") and prefix.shadow_for("x") and not prefix.shadow_for("y")
    assert not PrefixConfig().on_anywhere()


def test_settings_sections_are_typed_with_defaults_when_absent() -> None:
    settings = parse_settings({"cache": None, "routing": {"enabled": False}})
    assert isinstance(settings.cache, CacheConfig) and not settings.cache.enabled
    assert settings.budgets is None  # no section: budgets off
    assert isinstance(parse_settings({"budgets": {}}).budgets, BudgetsConfig)
    assert settings.trim.enabled and settings.batches.defer.enabled


def test_routing_saving_is_credited_once() -> None:
    from spendgate.routing.saving import credit_routing

    class _Accountant:
        class pricer:
            @staticmethod
            def total(model: str, usage: Any, service_tier: str | None = None) -> Decimal:
                return Decimal("0.010")

        @staticmethod
        def price(call: Call, reply: Reply) -> Any:
            from spendgate.call import Cost

            return Cost(input=Decimal("0.002"))

    from spendgate.call import Usage

    call = _call()
    call.model = "weak"
    reply = Reply(usage=Usage(input_tokens=10))
    credit_routing(_Accountant(), call, reply)  # type: ignore[arg-type]
    assert call.savings["routing"] == Decimal("0.008")
    call.savings["routing"] = Decimal(1)
    credit_routing(_Accountant(), call, reply)  # type: ignore[arg-type]
    assert call.savings["routing"] == Decimal(1)
