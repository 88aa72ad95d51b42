"""Routing through a real gateway: rules, header, learned router, shadow mode, sticky
conversations and quality sampling, each checked in the SQLite ledger. Savings are checked
against the published prices in conftest applied to the recorded usage."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx2
import openai
import pytest

from conftest import PRICES_PER_MTOK, Harness, expected_cost_nanos, nanos_per_token, unique
from spendgate.config import ConfigError
from spendgate.ledger import UsageEvent
from spendgate.simulated import SimulatedUpstream

STRONG, WEAK = "gpt-4o", "gpt-4o-mini"
BASE: dict[str, Any] = {"enabled": True, "strong": STRONG, "weak": WEAK}


def routing(**more: Any) -> dict[str, Any]:
    return {"routing": {**BASE, **more}}


def chat(
    gw: Harness,
    feature: str,
    messages: list[dict[str, Any]] | str,
    model: str = STRONG,
    **headers: str,
) -> httpx2.Response:
    if isinstance(messages, str):
        messages = [{"role": "user", "content": messages}]
    return httpx2.post(
        gw.v1 + "/chat/completions",
        json={"model": model, "messages": messages, "max_tokens": 40},
        headers={"x-spendgate-feature": feature, **headers},
        timeout=30,
    )


def as_strong_nanos(e: UsageEvent) -> int:
    """What the recorded usage would have cost on the strong model, by hand."""
    p = PRICES_PER_MTOK[STRONG]
    return (
        (e.input_tokens - e.cache_read_tokens) * nanos_per_token(p["input"])
        + e.cache_read_tokens * nanos_per_token(p["cache_read"])
        + e.output_tokens * nanos_per_token(p["output"])
    )


def test_rule_routes_short_prompt_to_weak_and_credits_saving(
    make_gateway: Callable[..., Harness],
) -> None:
    gw = make_gateway(
        **routing(rules=[{"when": {"max_tokens": 50}, "route": "weak", "name": "short"}])
    )
    f = unique("route-rule")
    r = chat(gw, f, "What is the capital of France?")
    assert r.status_code == 200, r.text
    assert r.headers["x-spendgate-model"] == WEAK
    e = gw.one_for(f)
    assert e.requested_model == STRONG
    assert e.served_model == WEAK
    assert e.route is not None
    assert e.route["rule"] == "short" and e.route["tier"] == "weak"
    assert e.route["requested"] == STRONG and e.route["served"] == WEAK
    assert e.cost_nanos == expected_cost_nanos(e)
    assert e.savings["routing"] == as_strong_nanos(e) - e.cost_nanos > 0
    assert e.baseline_nanos == as_strong_nanos(e)


def test_long_prompt_skips_rule_and_router_decides(make_gateway: Callable[..., Harness]) -> None:
    gw = make_gateway(
        **routing(threshold=0.0, rules=[{"when": {"max_tokens": 50}, "route": "weak"}])
    )
    f = unique("route-router")
    r = chat(gw, f, "Prove that there are infinitely many primes. " * 20)
    assert r.status_code == 200, r.text
    e = gw.one_for(f)
    assert e.served_model == STRONG
    assert e.route["rule"] == "router" and e.route["router"] == "default"
    assert 0.0 <= e.route["score"] <= 1.0 and e.route["threshold"] == 0.0
    assert e.savings == {} and e.baseline_nanos == e.cost_nanos


def test_threshold_one_sends_everything_weak(make_gateway: Callable[..., Harness]) -> None:
    gw = make_gateway(**routing(threshold=1.0))
    f = unique("route-t1")
    for q in ("hello there", "Compute the integral of x^2 from 0 to 3."):
        assert chat(gw, f, q).status_code == 200
    rows = gw.events(feature=f)
    assert [e.served_model for e in rows] == [WEAK, WEAK]
    assert all(e.savings["routing"] > 0 for e in rows)


def test_stored_threshold_names_resolve(make_gateway: Callable[..., Harness]) -> None:
    from spendgate.routing.routers import default_router

    stored = default_router().thresholds
    gw = make_gateway(**routing(threshold="strong_30"))
    f = unique("route-named")
    assert chat(gw, f, "Name three primary colours.").status_code == 200
    assert gw.one_for(f).route["threshold"] == pytest.approx(stored["strong_30"])


def test_header_overrides_rules_and_bad_header_is_400(
    make_gateway: Callable[..., Harness],
) -> None:
    gw = make_gateway(**routing(rules=[{"when": {}, "route": "weak"}]))
    f = unique("route-header")
    r = chat(gw, f, "hi", **{"x-spendgate-route": "strong"})
    assert r.status_code == 200 and r.headers["x-spendgate-model"] == STRONG
    r = chat(gw, f, "hi", model=WEAK, **{"x-spendgate-route": "claude-sonnet-4"})
    assert r.status_code == 200 and r.headers["x-spendgate-model"].startswith("claude-sonnet-4")
    bad = chat(gw, f, "hi", **{"x-spendgate-route": "no-such-model"})
    assert bad.status_code == 400
    assert bad.json()["error"]["code"] == "invalid_route"
    assert bad.json()["error"]["param"] == "x-spendgate-route"
    rows = {e.served_model: e for e in gw.events(feature=f)}
    assert rows[STRONG].route["rule"] == "header"
    # routed up from mini to sonnet: a negative saving, honestly recorded
    assert rows["claude-sonnet-4-20250514"].savings["routing"] < 0
    assert len(gw.events(feature=f)) == 3  # the refused call has its ledger row too


def test_other_requested_models_are_left_alone(make_gateway: Callable[..., Harness]) -> None:
    gw = make_gateway(**routing(rules=[{"when": {}, "route": "weak"}]))
    f = unique("route-skip")
    assert chat(gw, f, "hi", model="claude-sonnet-4").status_code == 200
    e = gw.one_for(f)
    assert e.route is None and e.requested_model == "claude-sonnet-4"


def test_shadow_mode_records_would_save_not_savings(make_gateway: Callable[..., Harness]) -> None:
    gw = make_gateway(**routing(mode="shadow", threshold=1.0))
    f = unique("route-shadow")
    assert chat(gw, f, "Summarise the plot of Hamlet in two sentences.").status_code == 200
    e = gw.one_for(f)
    assert e.served_model == STRONG and e.savings == {}
    assert e.route["mode"] == "shadow" and e.route["would_serve"] == WEAK
    p = PRICES_PER_MTOK[WEAK]
    as_weak = e.input_tokens * nanos_per_token(p["input"]) + e.output_tokens * nanos_per_token(
        p["output"]
    )
    assert round(float(e.route["would_save_usd"]) * 1e9) == e.cost_nanos - as_weak > 0


def test_per_feature_override_disables_routing(make_gateway: Callable[..., Harness]) -> None:
    legal = unique("legal")
    gw = make_gateway(**routing(threshold=1.0, overrides=[{"feature": legal, "enabled": False}]))
    assert chat(gw, legal, "hi").status_code == 200
    assert gw.one_for(legal).served_model == STRONG


@pytest.mark.parametrize("sticky", [True, False])
def test_follow_up_turn_keeps_its_tier(make_gateway: Callable[..., Harness], sticky: bool) -> None:
    # first turns go weak by rule; the router (threshold 0) would send later turns strong
    gw = make_gateway(
        **routing(sticky=sticky, threshold=0.0, rules=[{"when": {"max_turns": 1}, "route": "weak"}])
    )
    f = unique("route-sticky")
    first = [{"role": "user", "content": "Let's plan a trip to Lisbon."}]
    r1 = chat(gw, f, first)
    answer = r1.json()["choices"][0]["message"]["content"]
    follow = [
        *first,
        {"role": "assistant", "content": answer},
        {"role": "user", "content": "And what should we eat there?"},
    ]
    chat(gw, f, follow)
    other = [
        {"role": "user", "content": "A different conversation."},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": "more"},
    ]
    chat(gw, f, other)
    rows = gw.events(feature=f)
    assert rows[0].served_model == WEAK
    if sticky:
        assert rows[1].served_model == WEAK and rows[1].route["rule"] == "sticky"
    else:
        assert rows[1].served_model == STRONG and rows[1].route["rule"] == "router"
    assert rows[2].served_model == STRONG  # an unseen conversation is not sticky


def test_quality_sampling_records_both_answers(make_gateway: Callable[..., Harness]) -> None:
    gw = make_gateway(
        **routing(quality_sample=1.0, header=False, rules=[{"when": {}, "route": "weak"}])
    )
    f = unique("route-sample")
    r = chat(gw, f, "Write a haiku about autumn.")
    assert r.status_code == 200 and r.headers["x-spendgate-model"] == WEAK
    rows = gw.events(feature=f)
    main = next(e for e in rows if e.served_model == WEAK)
    twin = next(e for e in rows if e.served_model == STRONG)
    sample = main.route["sample"]
    assert twin.request_id == sample["request_id"]
    assert sample["strong"]["cost_usd"] is not None
    assert round(float(sample["strong"]["cost_usd"]) * 1e9) == twin.cost_nanos
    assert round(float(sample["weak"]["cost_usd"]) * 1e9) == main.cost_nanos
    assert sample["weak"]["chars"] == len(r.json()["choices"][0]["message"]["content"])
    assert twin.route["rule"] == "quality_sample"
    assert twin.route["sample_of"] == main.request_id


def test_streaming_call_is_routed(make_gateway: Callable[..., Harness]) -> None:
    gw = make_gateway(**routing(threshold=1.0))
    f = unique("route-stream")
    with openai.OpenAI(base_url=gw.v1, api_key="x", max_retries=0) as client:
        stream = client.chat.completions.create(
            model=STRONG,
            messages=[{"role": "user", "content": "Count to five."}],
            stream=True,
            stream_options={"include_usage": True},
            extra_headers={"x-spendgate-feature": f},
        )
        chunks = list(stream)
    assert chunks[-1].usage is not None
    e = gw.wait_for(lambda rows: len(rows) == 1, feature=f)[0]
    assert e.served_model == WEAK and e.savings["routing"] == as_strong_nanos(e) - e.cost_nanos


def test_anthropic_messages_route(make_gateway: Callable[..., Harness]) -> None:
    gw = make_gateway(
        routing={
            "enabled": True,
            "strong": "claude-sonnet-4",
            "weak": "claude-3-5-haiku",
            "threshold": 1.0,
        }
    )
    f = unique("route-claude")
    r = httpx2.post(
        gw.url + "/v1/messages",
        json={
            "model": "claude-sonnet-4",
            "max_tokens": 30,
            "messages": [{"role": "user", "content": "Hello"}],
        },
        headers={"x-spendgate-feature": f, "anthropic-version": "2023-06-01"},
        timeout=30,
    )
    assert r.status_code == 200, r.text
    e = gw.one_for(f)
    assert e.served_model.startswith("claude-3-5-haiku") and e.savings["routing"] > 0


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"strong": "gpt-9"}, "routing.strong"),
        ({"threshold": "quality_42"}, "routing.threshold"),
        ({"router": "/nonexistent/router.bin"}, "routing.router"),
    ],
)
def test_bad_config_fails_at_startup(
    sim: SimulatedUpstream, tmp_path: Any, section: dict[str, Any], message: str
) -> None:
    from conftest import gateway_settings
    from spendgate.server.app import Gateway

    settings = gateway_settings(sim, tmp_path, **routing(**section))
    with pytest.raises(ConfigError, match=message):
        Gateway(settings)


def test_config_validation_names_key() -> None:
    from spendgate.config import parse_settings

    with pytest.raises(ConfigError, match="routing"):
        parse_settings({"routing": {"enabled": True, "strong": "gpt-4o"}})
    with pytest.raises(ConfigError, match=r"routing\.rules\.0\.when\.colour"):
        parse_settings({"routing": {"rules": [{"when": {"colour": "red"}, "route": "weak"}]}})


def test_quality_sampling_of_a_stream_links_the_twin(make_gateway: Callable[..., Harness]) -> None:
    gw = make_gateway(**routing(quality_sample=1.0, threshold=1.0))
    f = unique("route-sample-stream")
    with openai.OpenAI(base_url=gw.v1, api_key="x", max_retries=0) as client:
        chunks = list(
            client.chat.completions.create(
                model=STRONG,
                messages=[{"role": "user", "content": "Name a river."}],
                stream=True,
                extra_headers={"x-spendgate-feature": f},
            )
        )
    assert chunks
    rows = gw.wait_for(lambda rows: len(rows) == 2, feature=f)
    main = next(e for e in rows if e.served_model == WEAK)
    twin = next(e for e in rows if e.served_model == STRONG)
    assert main.route["sample"]["request_id"] == twin.request_id
    assert twin.route["sample_of"] == main.request_id and twin.cost_nanos > 0


def test_multi_model_serves_cheapest_adequate(
    make_gateway: Callable[..., Harness], tmp_path: Any
) -> None:
    from spendgate.routing.multimodel import train_multimodel
    from spendgate.routing.train import TrainOptions

    # three served models; only the dearest two answer the "hard" prompts
    rows = []
    for i in range(150):
        kind = i % 3
        prompt = ["greet my friend", "prove the lemma", "translate the poem"][kind] + f" {i}"
        rows.append(
            {
                "id": str(i),
                "prompt": prompt,
                "scores": {
                    "gpt-4o-mini": 1.0 if kind == 0 else 0.0,
                    "gpt-4.1-mini": 1.0 if kind != 1 else 0.0,
                    "gpt-4o": 1.0,
                },
            }
        )
    mm = train_multimodel(
        rows, ["gpt-4o-mini", "gpt-4.1-mini", "gpt-4o"], TrainOptions(buckets=1 << 10, steps=80)
    )
    folder = tmp_path / "multi"
    mm.save(folder)
    gw = make_gateway(**routing(multi={"router": str(folder), "target": 0.9}))
    f = unique("route-multi")
    for q in ("greet my friend 1000", "prove the lemma 1000", "translate the poem 1000"):
        assert chat(gw, f, q).status_code == 200
    rows_out = gw.events(feature=f)
    assert [e.served_model for e in rows_out] == ["gpt-4o-mini", "gpt-4o", "gpt-4.1-mini"]
    assert all(e.route["rule"] == "multi" for e in rows_out)
    assert set(rows_out[0].route["predicted"]) == {"gpt-4o-mini", "gpt-4.1-mini", "gpt-4o"}
    assert rows_out[0].savings["routing"] > 0 and rows_out[1].savings == {}


def test_multi_model_config_errors(sim: SimulatedUpstream, tmp_path: Any) -> None:
    from conftest import gateway_settings
    from spendgate.server.app import Gateway

    settings = gateway_settings(sim, tmp_path, **routing(multi={"router": str(tmp_path / "x")}))
    with pytest.raises(ConfigError, match=r"routing\.multi\.router"):
        Gateway(settings)
