"""The learning pieces on their own: the adaptive router's posterior, the guard's states,
judges, cascade signals, the bake-off's statistics and pick, prompt redaction, and
`spendgate eval router --adapt` (on hand-made data, and on the shared data when present)."""

from __future__ import annotations

import asyncio
import gzip
import json
import os
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from spendgate.call import Call, Tags
from spendgate.cli import main
from spendgate.ledger.prompts import EVAL_FEATURE, PromptLog
from spendgate.routing.adaptive import DIM, AdaptiveRouter, FeatureModel, evaluate_adaptation
from spendgate.routing.bakeoff import snippet, summarize
from spendgate.routing.cascade import (
    agreement,
    escalation_reasons,
    json_problem,
    mean_logprob,
    refused,
)
from spendgate.routing.evaluate import Row
from spendgate.routing.judge import ExactJudge, JsonFieldsJudge, PairwiseJudge, RubricJudge
from spendgate.routing.loop import FeatureLearner, Learners, Observation
from spendgate.routing.routers import LengthRouter, default_router


def shared_routing() -> Path:
    """`$SPENDGATE_SHARED/data/routing`, or the `shared` folder beside the repository."""
    shared = os.environ.get("SPENDGATE_SHARED")
    base = Path(shared) if shared else Path(__file__).resolve().parents[1].parent / "shared"
    return base / "data" / "routing"


# --------------------------------------------------------------------------- posterior


def test_unlabelled_model_ranks_like_its_base_router() -> None:
    router = AdaptiveRouter(default_router())
    texts = ["hi", "Prove that sqrt(2) is irrational.", "What is 2+2?", "Write a sonnet."]
    base = [default_router().score_text(t) for t in texts]
    adaptive = [router.score_text(t) for t in texts]
    assert np.argsort(base).tolist() == np.argsort(adaptive).tolist()


def test_labels_move_the_posterior_toward_them() -> None:
    model = FeatureModel()
    rng = np.random.default_rng(0)
    hard = np.r_[1.0, 0.0, rng.normal(size=DIM - 2)]
    hard[2:] /= np.linalg.norm(hard[2:])
    easy = hard.copy()
    easy[2:] = -hard[2:]
    before = model.predict(hard) - model.predict(easy)
    width_before = model.width(hard)
    for _ in range(40):
        model.update(hard, 1.0)  # the weak answer fails here
        model.update(easy, 0.0)
    assert model.predict(hard) - model.predict(easy) > before + 0.5
    assert model.width(hard) < width_before / 3
    saved = model.state()
    again = FeatureModel()
    again.load_state(json.loads(json.dumps(saved)))
    assert again.predict(hard) == pytest.approx(model.predict(hard))


def obs(weak: float, chose_strong: bool = False, strong: float = 1.0) -> Observation:
    return Observation(np.r_[1.0, 0.0, np.zeros(DIM - 2)], strong, weak, chose_strong)


def test_guard_rolls_back_and_auto_mode_promotes_again() -> None:
    learner = FeatureLearner(LengthRouter(), 0.5, mode="auto", target=0.9, min_labels=4)
    assert learner.state == "shadow" and not learner.serving
    events = [learner.observe(obs(weak=1.0)) for _ in range(4)]
    assert events == [None, None, None, "promoted"] and learner.serving
    # weak answers start failing on prompts the policy sent weak
    assert learner.observe(obs(weak=0.0)) == "rolled_back"  # 4/5 < 0.9
    assert learner.state == "rolled_back" and not learner.serving
    assert learner.summary()["rollbacks"] == 1 and len(learner.window) == 0
    # fresh labels on which its (now strong-leaning) choices deliver full quality
    for _ in range(4):
        last = learner.observe(obs(weak=0.0, chose_strong=True))
    assert last == "promoted"


def test_shadow_mode_never_serves() -> None:
    learner = FeatureLearner(LengthRouter(), 0.5, mode="shadow", target=0.5, min_labels=2)
    for _ in range(5):
        learner.observe(obs(weak=1.0))
    assert learner.quality() == 1.0 and not learner.serving


def test_learner_state_survives_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "adapt.json"
    make = lambda: FeatureLearner(LengthRouter(), 0.5, mode="auto", target=0.9, min_labels=2)  # noqa: E731
    learners = Learners(make, state_path=str(path))
    for _ in range(3):
        learners.get("faq").observe(obs(weak=1.0))
    learners.save()
    again = Learners(make, state_path=str(path))
    faq = again.peek("faq")
    assert faq is not None and faq.state == "active" and faq.router.model.n == 3
    path.write_text("{not json")
    assert Learners(make, state_path=str(path)).summary() == {}  # damaged: start afresh


# --------------------------------------------------------------------------- judges


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_reference_judges() -> None:
    exact = ExactJudge()
    assert run(exact.grade("q", " Positive. ", "positive")) == 1.0
    assert run(exact.grade("q", "negative", "positive")) == 0.0
    assert run(exact.grade("q", "x", None)) is None
    judge = JsonFieldsJudge(("label", "entity.name"))
    ref = '{"label": "ok", "entity": {"name": "ACME", "id": 3}}'
    assert run(judge.grade("q", '```json\n{"label":"OK","entity":{"name":"acme"}}\n```', ref)) == 1
    assert run(judge.grade("q", '{"label": "ok"}', ref)) == 0.5
    assert run(judge.grade("q", "not json", ref)) == 0.0
    assert run(judge.grade("q", '{"label": "ok"}', "not json")) is None
    assert run(JsonFieldsJudge().grade("q", '{"a": 1, "b": 2}', '{"a": 1.0, "b": 3}')) == 0.5


def fake_send(content: str, seen: list[dict[str, Any]]) -> Any:
    async def send(body: dict[str, Any]) -> dict[str, Any]:
        seen.append(body)
        return {"choices": [{"message": {"role": "assistant", "content": content}}]}

    return send


def test_llm_judges_parse_verdicts_and_cancel_position() -> None:
    seen: list[dict[str, Any]] = []
    rubric = RubricJudge("judge-m", fake_send('{"score": 10}', seen))
    assert run(rubric.grade("q", "a", None)) == 1.0
    assert seen[0]["response_format"]["type"] == "json_schema" and seen[0]["model"] == "judge-m"
    assert run(RubricJudge("m", fake_send("no idea", [])).grade("q", "a", None)) is None
    # "1" = the first answer shown; the candidate is first for half the prompts
    outcomes = set()
    for i in range(8):
        calls: list[dict[str, Any]] = []
        verdict = run(PairwiseJudge("m", fake_send('{"better": "1"}', calls)).grade(
            f"prompt {i}", "CANDIDATE", "REFERENCE"))  # fmt: skip
        shown_first = calls[0]["messages"][1]["content"].split("[Answer 1]\n")[1]
        assert verdict == (1.0 if shown_first.startswith("CANDIDATE") else 0.0)
        outcomes.add(verdict)
    assert outcomes == {0.0, 1.0}
    tie = PairwiseJudge("m", fake_send('{"better": "tie"}', []))
    assert run(tie.grade("q", "a", "b")) == 1.0


# --------------------------------------------------------------------------- cascade


def body_of(content: str | None, **extra: Any) -> dict[str, Any]:
    msg = {"role": "assistant", "content": content, "refusal": extra.pop("refusal", None)}
    return {"choices": [{"message": msg, "finish_reason": "stop", **extra}]}


def test_cascade_signals() -> None:
    assert refused(body_of("I'm sorry, but I can't help with that."))
    assert refused(body_of(None, refusal="policy"))
    assert refused({"content": [{"type": "text", "text": "ok"}], "stop_reason": "refusal"})
    assert not refused(body_of("Sorry to hear that! Here is how to fix it."))
    schema = {"type": "json_schema", "json_schema": {"schema": {"required": ["a", "b"]}}}
    request = {"response_format": schema}
    assert json_problem(request, body_of('{"a": 1}')) == "missing_keys:b"
    assert json_problem(request, body_of('```json\n{"a": 1, "b": 2}\n```')) is None
    assert json_problem(request, body_of("a: 1")) == "invalid_json"
    lp = {"content": [{"token": "a", "logprob": -0.1}, {"token": "b", "logprob": -2.9}]}
    assert mean_logprob(body_of("ab", logprobs=lp)) == pytest.approx(-1.5)
    assert mean_logprob(body_of("ab")) is None
    assert agreement("Paris.", "paris") == 1.0 and agreement('{"a":1}', '{ "a": 1 }') == 1.0
    assert agreement("the cat sat", "the dog ran") == pytest.approx(1 / 5)
    reasons, measured = escalation_reasons(
        ["refusal", "json", "consistency", "logprobs"],
        {"messages": []},
        body_of("The answer is 4", logprobs=lp),
        body_of("It is 5"),
        min_agreement=0.5,
    )
    assert reasons == ["logprobs", "consistency"]
    assert measured == {"mean_logprob": -1.5, "agreement": pytest.approx(1 / 6, abs=1e-4)}
    reasons, _ = escalation_reasons(["json"], {}, body_of("prose"), expect_json=True)
    assert reasons == ["json"]


# --------------------------------------------------------------------------- bake-off stats


def test_summarize_picks_cheapest_model_meeting_the_target() -> None:
    n = 100
    requested = [1.0] * 80 + [0.0] * 20
    grades = {
        "big": requested,
        "mid": [1.0] * 78 + [0.0] * 22,  # 97.5% of big's quality
        "small": [1.0] * 60 + [0.0] * 40,  # 75%
    }
    costs = {
        "big": [Decimal("0.01")] * n,
        "mid": [Decimal("0.004")] * n,
        "small": [Decimal("0.001")] * n,
    }
    reports, picked = summarize("big", grades, costs, target=0.95)
    assert picked == "mid"
    by = {r.model: r for r in reports}
    assert [r.model for r in reports] == ["small", "mid", "big"]
    assert by["small"].ratio == 0.75 and not by["small"].qualifies
    assert by["mid"].low is not None and by["mid"].low < 0.78 < by["mid"].high
    assert by["mid"].cost_usd == Decimal("0.004")
    # a stricter test wants more evidence than 100 prompts give for a 2.5-point margin
    _, strict = summarize("big", grades, costs, target=0.95, confidence=0.95)
    assert strict == "big"
    # too few prompts never qualify
    few = {m: g[:10] for m, g in grades.items()}
    _, pick_few = summarize("big", few, {m: c[:10] for m, c in costs.items()})
    assert pick_few == "big"


def test_snippet_quotes_names() -> None:
    import yaml

    text = snippet("faq: v2", "gpt-4o", "gpt-4o-mini", "20 prompts")
    cfg = yaml.safe_load(text)["routing"]
    assert cfg["rules"][0]["when"] == {"feature": "faq: v2", "model": "gpt-4o"}


# --------------------------------------------------------------------------- prompt log


def test_prompt_log_redacts_and_skips_internal_calls() -> None:
    log = PromptLog(True, ["email", "phone", "card", "secret", "ip"], max_chars=400)
    text = (
        "Call +1 (415) 555-0100 or mail a.b@c.io; card 4111 1111 1111 1111; "
        "token ghp_0123456789abcdefghijklmnopqrstuvwxyz; host 10.0.0.12"
    )
    call = Call(endpoint="chat", api="openai", requested_model="m",
                body={"messages": [{"role": "user", "content": text}], "user": "u1"})  # fmt: skip
    got = log.capture(call)
    assert got is not None
    assert got["body"] == {
        "messages": [
            {
                "role": "user",
                "content": "Call [REDACTED:phone] or mail [REDACTED:email]; card "
                "[REDACTED:card]; token [REDACTED:secret]; host [REDACTED:ip]",
            }
        ]
    }
    judge = Call(endpoint="chat", api="openai", requested_model="m", body=call.body,
                 tags=Tags(feature=EVAL_FEATURE))  # fmt: skip
    assert log.capture(judge) is None
    twin = Call(endpoint="chat", api="openai", requested_model="m", body=call.body,
                decisions={"route_sample_of": "x"})  # fmt: skip
    assert log.capture(twin) is None
    long = Call(endpoint="chat", api="openai", requested_model="m",
                body={"messages": [{"role": "user", "content": "x" * 1000}]})  # fmt: skip
    assert log.capture(long) == {"api": "openai", "skipped": "too_long", "chars": 1043}


# --------------------------------------------------------------------------- eval --adapt


def synthetic_rows(n: int = 400) -> list[Row]:
    """Two sources; in `topical` the weak model fails exactly on prompts about chemistry,
    which a prompt-length router cannot see but labels can teach."""
    rows = []
    for i in range(n):
        chem = i % 2 == 0
        topic = (
            "Balance the chemical reaction of sodium and chlorine"
            if chem
            else "Name a famous painting from the renaissance period"
        )
        # lengths vary independently of the topic, so a length router cannot tell
        rows.append(
            Row(str(i), "topical", topic + " please" * (i % 7) + ".", 1.0, 0.0 if chem else 1.0)
        )
    return rows


def test_adaptation_learns_what_the_base_router_cannot_see() -> None:
    rows = synthetic_rows()
    res = evaluate_adaptation(rows, LengthRouter(), k=80, seed=1)
    src = res["sources"]["topical"]
    assert src["labels"] == 80 and src["scored"] == 320
    # the gain is on half the prompts: the best possible area is 0.75, reached at 50% strong
    assert src["oracle"]["apgr"] == pytest.approx(0.75, abs=0.01)
    assert src["unadapted"]["apgr"] < 0.6
    assert src["adapted"]["apgr"] > 0.7 and src["adapted"]["cpt50"] <= 0.3
    assert res["macro"]["random"]["apgr"] == 0.5


def test_cli_eval_router_adapt_with_costs(tmp_path: Path) -> None:
    path = tmp_path / "q.jsonl.gz"
    with gzip.open(path, "wt") as fh:
        for r in synthetic_rows(200):
            fh.write(json.dumps({
                "id": r.id, "source": r.source, "prompt": r.prompt,
                "scores": {"big": r.strong, "small": r.weak},
                "costs_usd": {"big": 0.01, "small": 0.001},
            }) + "\n")  # fmt: skip
    args = ["eval", "router", str(path), "--strong", "big", "--weak", "small", "--router",
            "length", "--adapt", "80"]  # fmt: skip
    result = CliRunner().invoke(main, [*args, "--json"])
    assert result.exit_code == 0, result.output
    res = json.loads(result.output)
    assert res["cost_source"] == "costs_usd" and res["k"] == 80
    topical = res["sources"]["topical"]
    # 95% of strong quality needs 90% of the chemistry half strong (45% of calls):
    # 1 − (0.45 × 0.01 + 0.55 × 0.001) / 0.01 ≈ 0.495
    assert topical["adapted"]["cost_saving_at_95"] == pytest.approx(0.495, abs=0.02)
    assert topical["oracle"]["cost_saving_at_95"] == pytest.approx(0.495, abs=0.02)
    assert topical["unadapted"]["cost_saving_at_95"] < 0.3
    text = CliRunner().invoke(main, args)
    assert text.exit_code == 0 and "macro average" in text.output


@pytest.mark.skipif(
    not (shared_routing() / "routellm_gpt4_vs_mixtral.jsonl.gz").exists(),
    reason="shared routing data absent",
)
def test_eval_router_adapt_on_mtbench() -> None:
    path = shared_routing() / "routellm_gpt4_vs_mixtral.jsonl.gz"
    result = CliRunner().invoke(main, [
        "eval", "router", str(path), "--strong", "gpt-4-1106-preview",
        "--weak", "mistralai/Mixtral-8x7B-Instruct-v0.1", "--source", "routellm-mtbench",
        "--adapt", "200", "--json"])  # fmt: skip
    assert result.exit_code == 0, result.output
    src = json.loads(result.output)["sources"]["routellm-mtbench"]
    assert src["labels"] == 80 and src["scored"] == 80  # capped at half of 160
    assert src["random"]["apgr"] == 0.5 and src["oracle"]["apgr"] > src["adapted"]["apgr"]


def test_noise_labels_leave_the_base_ranking_in_charge() -> None:
    import random

    rng = random.Random(7)
    router = AdaptiveRouter(LengthRouter())
    texts = [
        f"{rng.choice(['Tell me', 'Explain', 'List'])} item {i}" + " x" * (i % 9)
        for i in range(300)
    ]
    for t in texts[:200]:
        router.learn(t, 1.0, float(rng.random() < 0.5))  # outcomes unrelated to the prompt
    assert router.model.n == 200 and not router.trusted
    base = [LengthRouter().score_text(t) for t in texts[200:]]
    ours = [router.score_text(t) for t in texts[200:]]
    assert np.argsort(base, kind="stable").tolist() == np.argsort(ours, kind="stable").tolist()
