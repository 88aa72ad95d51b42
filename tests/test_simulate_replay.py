"""The simulator's real-code path: records that carry their request go through
spendgate.cache, spendgate.trim and spendgate.routing in-process."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from spendgate.analytics.simulate import Policy, TrafficRecord, simulate_traffic
from spendgate.cache.config import CacheConfig
from spendgate.call import Call, Tags, Usage
from spendgate.pricing import PriceCatalog
from spendgate.routing.config import RoutingConfig
from spendgate.routing.routers import get_router
from spendgate.trim.config import TrimConfig

HOUR = 3600.0
CATALOG = PriceCatalog.default()


def rec(
    prompt: str | None,
    *,
    tenant: str = "t1",
    ts: float = 0.0,
    model: str = "gpt-4o",
    feature: str = "faq",
    body: dict[str, Any] | None = None,
    tokens: int = 100,
    fingerprint: str | None = None,
) -> TrafficRecord:
    return TrafficRecord(
        feature=feature,
        tenant=tenant,
        model=model,
        input_tokens=tokens,
        output_tokens=200,
        ts=ts,
        prompt=prompt,
        body=body,
        fingerprint=fingerprint,
    )


CACHE_ONLY = Policy(route=False, trim=False, semantic=False)


def test_exact_cache_uses_the_gateway_key_scope_and_ttl() -> None:
    q = "What is our refund policy for annual plans?"
    records = [
        rec(q, ts=0),
        rec(q, ts=10),  # same tenant, within the 1 h TTL: hit
        rec(q, tenant="t2", ts=20),  # another tenant: the key's scope differs
        rec(q, ts=2 * HOUR),  # after the TTL: a miss (and stored again)
        rec(q, ts=2 * HOUR + 5),  # hit again
        rec(q, ts=30, model="gpt-4o-mini"),  # another model: another key
    ]
    p = simulate_traffic(records, CACHE_ONLY, CATALOG)
    assert p.cache_outcomes == {"hit": 2}
    assert p.paths["cache"] == {"real": 6, "heuristic": 0}
    assert "through spendgate.cache" in p.steps[2]
    # A per-feature TTL from the gateway's own config changes the answer.
    long_ttl = Policy(
        route=False,
        trim=False,
        cache_config=CacheConfig.model_validate(
            {"enabled": True, "features": {"faq": {"ttl_s": 86_400}}}
        ),
    )
    assert simulate_traffic(records, long_ttl, CATALOG).cache_outcomes == {"hit": 3}


def test_semantic_tier_matches_a_retyped_question_in_its_partition() -> None:
    records = [
        rec("What is the capital of France?", ts=0),
        rec("what is the capital of france", ts=5),  # other exact key, same question
        rec("what is the capital of france", tenant="t2", ts=6),  # other partition
    ]
    on = Policy(route=False, trim=False, semantic=True)
    off = Policy(route=False, trim=False, semantic=False)
    assert simulate_traffic(records, on, CATALOG).cache_outcomes == {"semantic-hit": 1}
    assert simulate_traffic(records, off, CATALOG).cache_outcomes == {}


def test_sampled_requests_skip_the_cache_as_in_the_gateway() -> None:
    body = {"model": "gpt-4o", "temperature": 0.7, "messages": [{"role": "user", "content": "hi"}]}
    records = [rec(None, body=body, ts=0), rec(None, body=body, ts=1)]
    assert simulate_traffic(records, CACHE_ONLY, CATALOG).cache_outcomes == {}


def test_routing_follows_route_stage_decide() -> None:
    prompts = [
        "What is the capital of France?",
        "Prove that every bounded monotone sequence of reals converges. " * 3,
        "Translate 'good morning' into Spanish.",
    ]
    records = [rec(q, ts=i) for i, q in enumerate(prompts)]
    records.append(rec(prompts[0], ts=9, model="claude-sonnet-4"))  # not in apply_to
    policy = Policy(cache=False, trim=False)
    p = simulate_traffic(records, policy, CATALOG)
    router = get_router("default")
    threshold = router.thresholds["quality_95"]  # type: ignore[attr-defined]
    expected = sum(
        router.score(
            Call(
                endpoint="chat",
                api="openai",
                body={"model": "gpt-4o", "messages": [{"role": "user", "content": q}]},
                requested_model="gpt-4o",
                tags=Tags(feature="faq", tenant="t1"),
            )
        )
        < threshold
        for q in prompts
    )
    assert p.touched["route"] == Decimal(expected) / 4
    everything = Policy(
        cache=False,
        trim=False,
        routing_config=RoutingConfig(
            enabled=True, strong="gpt-4o", weak="gpt-4o-mini", threshold=1.0
        ),
    )
    nothing = Policy(
        cache=False,
        trim=False,
        routing_config=RoutingConfig(
            enabled=True, strong="gpt-4o", weak="gpt-4o-mini", threshold=0.0
        ),
    )
    assert simulate_traffic(records, everything, CATALOG).touched["route"] == Decimal(3) / 4
    assert simulate_traffic(records, nothing, CATALOG).touched["route"] == 0
    # A rule from the gateway config wins over the router.
    rule = Policy(
        cache=False,
        trim=False,
        routing_config=RoutingConfig.model_validate(
            {
                "enabled": True,
                "strong": "gpt-4o",
                "weak": "gpt-4o-mini",
                "threshold": 0.0,
                "rules": [{"when": {"feature": "faq"}, "route": "weak"}],
            }
        ),
    )
    routed = simulate_traffic(records, rule, CATALOG)
    assert routed.touched["route"] == Decimal(3) / 4
    one = CATALOG.cost("gpt-4o", Usage(input_tokens=100, output_tokens=200))
    cheap = CATALOG.cost("gpt-4o-mini", Usage(input_tokens=100, output_tokens=200))
    claude = CATALOG.cost("claude-sonnet-4", Usage(input_tokens=100, output_tokens=200))
    assert one is not None and cheap is not None and claude is not None
    assert routed.combined == (3 * cheap.total + claude.total) * 30


def test_marked_spans_are_compressed_by_the_real_compressor() -> None:
    doc = " ".join(
        f"Paragraph {i} talks about the weather in town number {i} and nothing else of note."
        for i in range(120)
    )
    content = f"<compress>{doc}</compress>\n\nWhich town has paragraph 7?"
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": content}]}
    from spendgate.tokens import count_openai_request

    tokens = count_openai_request("gpt-4o", body)
    records = [rec(None, body=body, tokens=tokens)]
    p = simulate_traffic(records, Policy(cache=False, route=False), CATALOG)
    assert p.touched["trim"] == 1
    assert p.alone["trim"] < p.baseline * Decimal("0.75")
    # Without the feature in the trim config's scope nothing is cut.
    scoped = Policy(
        cache=False,
        route=False,
        trim_config=TrimConfig.model_validate({"compress": {"features": ["other"]}}),
    )
    assert simulate_traffic(records, scoped, CATALOG).touched["trim"] == 0


def test_history_window_plan_and_one_summary_per_segment() -> None:
    def conversation(turns: int) -> dict[str, Any]:
        msgs: list[dict[str, str]] = []
        for i in range(turns):
            msgs.append({"role": "user", "content": f"Question {i}: " + "tell me more " * 40})
            msgs.append({"role": "assistant", "content": f"Answer {i}: " + "here is more " * 60})
        msgs.append({"role": "user", "content": "And finally?"})
        return {"model": "gpt-4o", "messages": msgs}

    from spendgate.tokens import count_openai_request

    bodies = [conversation(11), conversation(11), conversation(3)]
    records = [
        rec(None, body=b, ts=i, tokens=count_openai_request("gpt-4o", b))
        for i, b in enumerate(bodies)
    ]
    policy = Policy(cache=False, route=False)
    p = simulate_traffic(records, policy, CATALOG)
    # 12 turns, 6 kept, 4 summarized (multiples of summarize_every) on the two long ones.
    assert p.touched["trim"] == Decimal(2) / 3
    assert p.alone["trim"] < p.baseline
    assert any("history window" in s for s in p.steps)


def test_records_without_prompt_fall_back_to_heuristics_and_say_so() -> None:
    records = [
        rec("hello there, how are you today?", ts=0),
        rec(None, fingerprint="abc", ts=1, tokens=50),
        rec(None, fingerprint="abc", ts=2, tokens=50),
    ]
    p = simulate_traffic(records, Policy(), CATALOG)
    assert p.paths["cache"] == {"real": 1, "heuristic": 2}
    assert p.paths["route"] == {"real": 1, "heuristic": 2}
    assert p.cache_outcomes == {"fingerprint-repeat": 1}
    assert "1 calls through spendgate.cache" in p.steps[2]
    assert "2 by prompt-fingerprint repeats" in p.steps[2]
    assert "heuristic_fallback" in p.assumptions


def test_cli_takes_the_gateway_config_sections_as_policy(tmp_path: Any) -> None:
    import json

    from click.testing import CliRunner

    from spendgate.cli import main

    rows = [
        {"ts": 1000.0 + i, "tags": {"feature": "faq", "tenant": "t"},
         "body": {"model": "gpt-4o", "messages": [{"role": "user", "content": q}]},
         "output_tokens": 120}
        for i, q in enumerate(["Where is my order?", "Where is my order?", "Reset my password"])
    ]  # fmt: skip
    traffic = tmp_path / "t.jsonl"
    traffic.write_text("\n".join(json.dumps(r) for r in rows))
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        "cache:\n  enabled: true\n  ttl_s: 60\n"
        "routing:\n  enabled: true\n  strong: gpt-4o\n  weak: gpt-4o-mini\n  threshold: 1.0\n"
        "trim:\n  enabled: false\n"
    )
    r = CliRunner().invoke(main, ["simulate", str(traffic), "--policy", str(policy), "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert out["cache_outcomes"] == {"hit": 1}
    assert out["combined_touched_share"]["route"] == "0.6667"
    assert "trim" not in out["paths"]
    bad = tmp_path / "bad.yaml"
    bad.write_text("cache:\n  ttl_sec: 60\n")
    r = CliRunner().invoke(main, ["simulate", str(traffic), "--policy", str(bad)])
    assert r.exit_code != 0 and "ttl_sec" in r.output


def test_ledger_with_stored_prompts_replays_through_the_real_code(tmp_path: Any) -> None:
    from spendgate.analytics.traffic import load_traffic
    from spendgate.ledger import UsageEvent, open_ledger

    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    store = open_ledger(url)
    q = {"messages": [{"role": "user", "content": "Where is my parcel?"}]}

    def event(i: int, extra: dict[str, Any] | None) -> UsageEvent:
        return UsageEvent(
            request_id=f"r{i}", ts=1_800_000_000.0 + i, endpoint="chat", api="openai",
            requested_model="gpt-4o", status=200, latency_ms=5.0, feature="faq",
            tenant="t", input_tokens=12, output_tokens=40, prompt_fingerprint=f"fp{i}",
            extra=extra,
        )  # fmt: skip

    store.write_batch(
        [
            event(0, {"request": q, "system_tokens": 0}),
            event(1, {"request": q}),  # stored prompt: an exact hit in the real cache
            event(2, None),  # fingerprint only: the heuristic path
        ]
    )
    store.close()
    records = load_traffic(url)
    assert [r.body is not None for r in records] == [True, True, False]
    p = simulate_traffic(records, Policy(route=False, trim=False, semantic=False), CATALOG)
    assert p.paths["cache"] == {"real": 2, "heuristic": 1}
    assert p.cache_outcomes == {"hit": 1}
