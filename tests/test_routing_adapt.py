"""The closed loop and the weak-first cascade through a real gateway: the real openai SDK as
client, the simulated upstream behind, the SQLite ledger checked row by row.

The simulated upstream answers deterministically per (model, prompt): two models give
different prose, so an `exact` judge sees the weak answer disagree with the strong one (a
quality drop the guard must catch), while a JSON-schema answer with a one-value enum is the
same from every model (quality holds)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx2
import openai
import pytest

from conftest import Harness, expected_cost_nanos, unique
from spendgate.ledger import UsageEvent
from spendgate.ledger.prompts import EVAL_FEATURE

STRONG, WEAK = "gpt-4o", "gpt-4o-mini"
ONE_VALUE = {
    "type": "json_schema",
    "json_schema": {
        "name": "verdict",
        "strict": True,
        "schema": {
            "type": "object",
            "properties": {"label": {"type": "string", "enum": ["positive"]}},
            "required": ["label"],
            "additionalProperties": False,
        },
    },
}


def settings(**adapt: Any) -> dict[str, Any]:
    return {
        "routing": {
            "enabled": True,
            "strong": STRONG,
            "weak": WEAK,
            # base threshold 1.0: an unlabelled learner would send every call weak
            "threshold": 1.0,
            "adapt": {
                "enabled": True,
                "sample": 1.0,
                "judge": {"kind": "exact"},
                "min_labels": 3,
                "target": 0.9,
                "explore": 0.0,
                **adapt,
            },
        }
    }


@pytest.fixture
def client_for() -> Iterator[Callable[[Harness], openai.OpenAI]]:
    made: list[openai.OpenAI] = []

    def make(gw: Harness) -> openai.OpenAI:
        c = openai.OpenAI(base_url=gw.v1, api_key="sk-unused", max_retries=0)
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()


def ask(client: openai.OpenAI, feature: str, text: str, **body: Any) -> tuple[str, dict[str, str]]:
    raw = client.chat.completions.with_raw_response.create(
        model=STRONG,
        messages=[{"role": "user", "content": text}],
        max_tokens=60,
        extra_headers={"x-spendgate-feature": feature},
        **body,
    )
    return raw.parse().choices[0].message.content or "", dict(raw.headers)


def user_rows(gw: Harness, feature: str) -> list[UsageEvent]:
    return [
        e
        for e in gw.events(feature=feature)
        if e.route is not None and e.route.get("rule") not in ("adapt_label",)
        and not e.request_id.endswith(("-al", "-cw", "-c2"))
    ]  # fmt: skip


def test_guard_rolls_a_feature_back_when_weak_answers_disagree(
    make_gateway: Callable[..., Harness],
    client_for: Callable[[Harness], openai.OpenAI],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    env = "SG_TEST_ADMIN_" + uuid.uuid4().hex[:8].upper()
    monkeypatch.setenv(env, "adm-key")
    gw = make_gateway(**settings(mode="active"), server={"admin_key_env": env})
    client = client_for(gw)
    f = unique("adapt-rollback")
    served: list[str] = []
    # Each answer's label (a strong twin, then the judge) runs after the response; the
    # next call sees it. Bounded: the guard must fire within a few calls of min_labels.
    for i in range(15):
        _, headers = ask(client, f, f"Question {i}: name a colour of the sky at dusk.")
        served.append(headers["x-spendgate-model"])
        if served[-1] == STRONG:
            break
    assert served[0] == WEAK and served[-1] == STRONG, served
    rows = user_rows(gw, f)
    first, last = rows[0], rows[-1]
    assert first.route["rule"] == "adaptive" and first.served_model == WEAK
    assert first.savings["routing"] > 0
    assert last.route["rule"] == "rollback"
    assert last.route["adapt"]["state"] == "rolled_back"
    assert last.route["adapt"]["rollbacks"] == 1
    assert last.served_model == STRONG and last.route["tier"] == "strong"
    assert last.route["would_serve"] in (STRONG, WEAK)  # still decided and recorded
    assert last.savings == {}
    # every label cost a real strong twin call, costed and linked to its user call
    twins = [e for e in gw.events(feature=f) if e.request_id.endswith("-al")]
    assert len(twins) >= 3
    by_id = {e.request_id: e for e in rows}
    for t in twins:
        user = by_id[t.route["label_of"]]
        assert t.route["rule"] == "adapt_label"
        assert t.served_model == (WEAK if user.served_model == STRONG else STRONG)
        assert t.cost_nanos == expected_cost_nanos(t) > 0
        assert t.baseline_nanos == t.cost_nanos
    # the admin API shows the feature's state
    r = httpx2.get(gw.url + "/admin/routing/adapt", headers={"authorization": "Bearer adm-key"})
    assert r.status_code == 200, r.text
    status = r.json()
    assert status["enabled"] is True
    assert status["features"][f]["state"] == "rolled_back"
    assert status["features"][f]["rollbacks"] == 1


def test_shadow_first_then_promoted_when_quality_holds(
    make_gateway: Callable[..., Harness], client_for: Callable[[Harness], openai.OpenAI]
) -> None:
    gw = make_gateway(**settings(mode="auto"))
    client = client_for(gw)
    f = unique("adapt-promote")
    served = []
    for i in range(15):
        _, headers = ask(client, f, f"Review {i}: great product, would buy again.",
                         response_format=ONE_VALUE)  # fmt: skip
        served.append(headers["x-spendgate-model"])
        if served[-1] == WEAK:
            break
    assert served[0] == STRONG and served[-1] == WEAK, served
    rows = user_rows(gw, f)
    shadow, active = rows[0], rows[-1]
    assert shadow.route["rule"] == "adaptive:shadow"
    assert shadow.route["would_serve"] == WEAK and shadow.served_model == STRONG
    assert shadow.savings == {}
    assert active.route["rule"] == "adaptive" and active.route["adapt"]["state"] == "active"
    assert active.route["adapt"]["quality"] == 1.0
    assert active.route["adapt"]["labels"] >= 3
    assert active.savings["routing"] > 0
    # in shadow the labels came from weak twins of the strong-served calls
    twins = {e.route["label_of"]: e for e in gw.events(feature=f) if e.request_id.endswith("-al")}
    assert twins[shadow.request_id].served_model == WEAK


def test_llm_judge_calls_are_billed_to_the_eval_feature(
    make_gateway: Callable[..., Harness], client_for: Callable[[Harness], openai.OpenAI]
) -> None:
    gw = make_gateway(**settings(mode="shadow", judge={"kind": "rubric", "model": WEAK}))
    client = client_for(gw)
    f = unique("adapt-judge")
    for i in range(2):
        ask(client, f, f"Explain briefly why the sea is salty ({i}).")
    # the rubric judge grades both answers of each label: two judge calls per label
    judged = gw.wait_for(lambda rows: len(rows) >= 4, feature=EVAL_FEATURE)
    for e in judged:
        assert e.use_case == "judge" and e.requested_model == WEAK
        assert e.cost_nanos == expected_cost_nanos(e) > 0
        assert e.route is None  # a judge call is never routed
    later = user_rows(gw, f)
    assert all(e.served_model == STRONG for e in later)  # shadow: requested model serves


def test_cascade_escalates_invalid_json_and_counts_the_weak_calls(
    make_gateway: Callable[..., Harness], client_for: Callable[[Harness], openai.OpenAI]
) -> None:
    f = unique("cascade-json")
    gw = make_gateway(
        routing={
            "enabled": True,
            "strong": STRONG,
            "weak": WEAK,
            "threshold": 1.0,
            "cascade": {"enabled": True},
            "overrides": [{"feature": f, "expect_json": True}],
        }
    )
    client = client_for(gw)
    _, headers = ask(client, f, 'Reply with JSON {"city": ...}: the capital of France?')
    assert headers["x-spendgate-model"] == STRONG
    rows = {e.request_id[-3:]: e for e in gw.events(feature=f)}
    user = next(e for k, e in rows.items() if k not in ("-cw", "-c2"))
    weak, sample = rows["-cw"], rows["-c2"]
    assert user.served_model == STRONG and user.route["rule"] == "router:cascade"
    cascade = user.route["cascade"]
    assert cascade["escalated"] is True and "json" in cascade["reasons"]
    assert cascade["weak_request_id"] == weak.request_id
    assert cascade["agreement"] == 1.0  # the simulator answers a prompt the same way twice
    for side in (weak, sample):
        assert side.served_model == WEAK and side.route["of"] == user.request_id
        assert side.cost_nanos == expected_cost_nanos(side) > 0
        # the cascade's own cost: nothing un-optimized would have spent it
        assert side.baseline_nanos == 0 and side.savings["routing"] == -side.cost_nanos
    assert round(float(cascade["weak_cost_usd"]) * 1e9) == weak.cost_nanos
    assert user.cost_nanos == expected_cost_nanos(user) and user.savings == {}


def test_cascade_keeps_a_consistent_valid_weak_answer(
    make_gateway: Callable[..., Harness], client_for: Callable[[Harness], openai.OpenAI]
) -> None:
    gw = make_gateway(
        routing={
            "enabled": True,
            "strong": STRONG,
            "weak": WEAK,
            "threshold": 1.0,
            "cascade": {"enabled": True, "signals": ["json", "consistency", "refusal"]},
        }
    )
    client = client_for(gw)
    f = unique("cascade-ok")
    content, headers = ask(client, f, "Classify: I love it.", response_format=ONE_VALUE)
    assert headers["x-spendgate-model"] == WEAK and content == '{"label":"positive"}'
    rows = gw.events(feature=f)
    assert len(rows) == 2  # the answer and the self-consistency sample
    user = next(e for e in rows if not e.request_id.endswith("-c2"))
    sample = next(e for e in rows if e.request_id.endswith("-c2"))
    assert user.route["cascade"] == {
        "signals": ["json", "consistency", "refusal"],
        "sample_request_id": sample.request_id,
        "sample_cost_usd": user.route["cascade"]["sample_cost_usd"],
        "json": "ok",
        "agreement": 1.0,
        "escalated": False,
    }
    assert user.served_model == WEAK and user.savings["routing"] > 0
    assert sample.cost_nanos == expected_cost_nanos(sample) > 0
    assert sample.savings["routing"] == -sample.cost_nanos


def test_streams_are_not_cascaded(
    make_gateway: Callable[..., Harness], client_for: Callable[[Harness], openai.OpenAI]
) -> None:
    gw = make_gateway(
        routing={
            "enabled": True,
            "strong": STRONG,
            "weak": WEAK,
            "threshold": 1.0,
            "cascade": {"enabled": True},
        }
    )
    client = client_for(gw)
    f = unique("cascade-stream")
    stream = client.chat.completions.create(
        model=STRONG,
        messages=[{"role": "user", "content": "Say hi."}],
        stream=True,
        extra_headers={"x-spendgate-feature": f},
    )
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    (row,) = gw.wait_for(lambda rows: len(rows) == 1, feature=f)
    assert row.served_model == WEAK and "cascade" not in row.route


def test_adapt_config_errors_name_the_key(sim: Any, tmp_path: Any) -> None:
    from conftest import gateway_settings, start_harness
    from spendgate.config import ConfigError

    bad = settings(judge={"kind": "pairwise", "model": "no-such-model"})
    with pytest.raises(ConfigError, match=r"routing\.adapt\.judge\.model"):
        start_harness(gateway_settings(sim, tmp_path, **bad))
    with pytest.raises(ConfigError, match=r"routing\.adapt\.mode"):
        gateway_settings(sim, tmp_path, **settings(mode="sometimes"))


@pytest.mark.parametrize(("value_usd", "served"), [(1e-9, WEAK), (1e6, STRONG)])
def test_cost_in_the_reward_sets_the_threshold(
    make_gateway: Callable[..., Harness],
    client_for: Callable[[Harness], openai.OpenAI],
    value_usd: float,
    served: str,
) -> None:
    # strong when P(weak falls short) × value_usd > the strong model's extra cost on the call
    gw = make_gateway(**settings(mode="active", sample=0.0, value_usd=value_usd))
    f = unique("adapt-value")
    _, headers = ask(client_for(gw), f, "Explain how a bicycle gear works.")
    assert headers["x-spendgate-model"] == served
    (row,) = gw.events(feature=f)
    # the extra cost, by hand: 33 characters ≈ 8 input tokens, 256 output tokens assumed,
    # at the list prices in conftest (gpt-4o 2.50/10.00, gpt-4o-mini 0.15/0.60 $/MTok)
    extra_usd = (8 * (2.50 - 0.15) + 256 * (10.00 - 0.60)) / 1e6
    assert row.route["threshold"] == pytest.approx(extra_usd / value_usd, rel=1e-4, abs=1e-6)
    assert row.route["rule"] == "adaptive"
