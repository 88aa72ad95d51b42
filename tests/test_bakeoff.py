"""Prompt logging and the per-feature bake-off, end to end: traffic from the real openai SDK
through a gateway with `ledger.log_prompts` on, then `spendgate bakeoff` replaying it
through a gateway (a URL, or one built in-process from a config file) and grading it.
The ledger is read back to check the bake-off's own calls: forced models, billed to
`spendgate-eval`, costed, and summing to what the command reported."""

from __future__ import annotations

import json
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import openai
import pytest
import yaml
from click.testing import CliRunner

from conftest import Harness, expected_cost_nanos, gateway_settings, unique
from spendgate.call import to_nanos
from spendgate.cli import main
from spendgate.config import ConfigError, parse_settings
from spendgate.ledger.prompts import EVAL_FEATURE
from spendgate.simulated import SimulatedUpstream

ONE_VALUE = {
    "type": "json_schema",
    "json_schema": {
        "name": "sentiment",
        "strict": True,
        "schema": {
            "type": "object",
            "properties": {"label": {"type": "string", "enum": ["positive"]}},
            "required": ["label"],
            "additionalProperties": False,
        },
    },
}


def send(gw: Harness, feature: str, texts: list[str], **body: Any) -> None:
    with openai.OpenAI(base_url=gw.v1, api_key="sk-unused", max_retries=0) as client:
        for text in texts:
            client.chat.completions.create(
                model="gpt-4o",
                messages=[
                    {"role": "system", "content": "You label reviews."},
                    {"role": "user", "content": text},
                ],
                max_tokens=50,
                extra_headers={"x-spendgate-feature": feature},
                **body,
            )


def test_prompts_are_logged_redacted_and_only_when_asked(
    make_gateway: Callable[..., Harness],
) -> None:
    logged, other = unique("plog"), unique("plog-off")
    gw = make_gateway(ledger={"log_prompts": [logged], "redact": ["email", "secret", r"\bAC-\d+"]})
    text = "Mail jo@example.com, key sk-abcdefghijklmnopqrstuv, account AC-12345: refund?"
    send(gw, logged, [text], temperature=0.2)
    send(gw, other, [text])
    (row,) = gw.events(feature=logged)
    prompt = row.extra["prompt"]
    assert prompt["api"] == "openai"
    body = prompt["body"]
    assert body["temperature"] == 0.2 and body["max_tokens"] == 50
    user = body["messages"][1]["content"]
    assert user == (
        "Mail [REDACTED:email], key [REDACTED:secret], account [REDACTED:pattern2]: refund?"
    )
    assert "jo@example.com" not in json.dumps(row.extra)
    (plain,) = gw.events(feature=other)
    assert "prompt" not in (plain.extra or {})


def test_bad_redaction_pattern_names_the_key() -> None:
    with pytest.raises(ConfigError, match=r"ledger\.redact.*redact\[1\]"):
        parse_settings({"ledger": {"log_prompts": True, "redact": ["email", "(unclosed"]}})


def eval_rows(gw: Harness) -> list[Any]:
    return gw.events(feature=EVAL_FEATURE)


def test_bakeoff_picks_the_cheapest_model_that_agrees(
    make_gateway: Callable[..., Harness], tmp_path: Path
) -> None:
    gw = make_gateway(ledger={"log_prompts": True})
    f = unique("bake-json")
    send(gw, f, [f"Review {i}: works as described." for i in range(24)], response_format=ONE_VALUE)
    send(gw, f, ["Review 0: works as described."], response_format=ONE_VALUE)  # a repeat
    gw.flush()  # the CLI reads the ledger file: every logged row must be written first
    out = tmp_path / "snippet.yaml"
    result = CliRunner().invoke(
        main,
        [
            "bakeoff", "--feature", f, "--candidates", "gpt-4.1-mini,gpt-4o-mini",
            "--sample", "20", "--gateway", gw.url, "--ledger", gw.ledger_url,
            "--judge", "json", "--fields", "label", "-o", str(out), "--json",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    res = json.loads(result.output)
    assert res["logged"] == 24 and res["sampled"] == 20  # the repeat is one prompt
    assert res["requested"] == "gpt-4o"
    models = {m["model"]: m for m in res["models"]}
    assert set(models) == {"gpt-4o", "gpt-4o-mini", "gpt-4.1-mini"}
    assert all(m["n"] == 20 and m["quality"] == 1.0 for m in models.values())
    assert res["picked"] == "gpt-4o-mini"  # every model agrees: the cheapest wins
    assert res["models"][0]["model"] == "gpt-4o-mini"  # cheapest first
    # the snippet is valid routing config that serves the pick for this feature
    snippet = yaml.safe_load(out.read_text())
    rule = snippet["routing"]["rules"][0]
    assert rule["when"] == {"feature": f, "model": "gpt-4o"} and rule["route"] == "gpt-4o-mini"
    cfg = parse_settings({**snippet, "deployments": [
        {"name": "d", "provider": "simulated", "base_url": "http://x/v1",
         "models": ["gpt-4o", "gpt-4o-mini"]}]})  # fmt: skip
    assert cfg.routing.rules[0].route == "gpt-4o-mini"
    # the replays: 20 per model, forced to that model, billed to spendgate-eval
    rows = eval_rows(gw)
    assert len(rows) == 60
    for e in rows:
        assert e.use_case == "bakeoff" and e.requested_model == e.served_model
        assert e.cost_nanos is not None and e.cost_nanos > 0
        if e.served_model != "gpt-4.1-mini":  # not in the hand-written price list
            assert e.cost_nanos == expected_cost_nanos(e)
    assert sum(e.cost_nanos for e in rows) == to_nanos(Decimal(res["spent_usd"]["answers"]))
    assert Decimal(res["spent_usd"]["judge"]) == 0  # reference checks cost nothing


def test_bakeoff_keeps_the_requested_model_when_candidates_disagree(
    make_gateway: Callable[..., Harness], tmp_path: Path
) -> None:
    gw = make_gateway(ledger={"log_prompts": True})
    f = unique("bake-prose")
    send(gw, f, [f"Summarise review {i}: decent value." for i in range(20)])
    out = tmp_path / "keep.yaml"
    result = CliRunner().invoke(
        main,
        [
            "bakeoff", "--feature", f, "--candidates", "gpt-4o-mini", "--sample", "20",
            "--gateway", gw.url, "--ledger", gw.ledger_url, "--judge", "exact", "-o", str(out),
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "← pick" in result.output
    picked_line = next(line for line in result.output.splitlines() if "← pick" in line)
    assert picked_line.startswith("gpt-4o ")
    assert "no routing change" in out.read_text()


def test_bakeoff_in_process_with_an_llm_judge(
    sim: SimulatedUpstream, tmp_path: Path, make_gateway: Callable[..., Harness]
) -> None:
    gw = make_gateway(ledger={"log_prompts": True})
    f = unique("bake-pairwise")
    send(gw, f, [f"Is review {i} positive? It broke in a day." for i in range(6)])
    gw.stop()  # the bake-off below builds its own gateway on the same ledger
    config = tmp_path / "spendgate.yaml"
    config.write_text(
        yaml.safe_dump(gateway_settings(sim, tmp_path).model_dump(mode="json", exclude_none=True))
    )
    settings = yaml.safe_load(config.read_text())
    settings["storage"]["ledger"] = gw.ledger_url
    config.write_text(yaml.safe_dump(settings))
    result = CliRunner().invoke(
        main,
        [
            "bakeoff", "--config", str(config), "--feature", f, "--candidates", "gpt-4o-mini",
            "--sample", "6", "--judge", "pairwise", "--judge-model", "gpt-4o-mini",
            "-o", str(tmp_path / "s.yaml"), "--json",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    res = json.loads(result.output)
    assert res["judge"] == "pairwise by gpt-4o-mini"
    assert res["picked"] == "gpt-4o"  # 6 prompts < the 20 a candidate needs to qualify
    rows = list(gw.reader().events(filters={"feature": EVAL_FEATURE}))
    judged = [e for e in rows if e.use_case == "judge"]
    assert len([e for e in rows if e.use_case == "bakeoff"]) == 12
    assert len(judged) == 6 and all(e.requested_model == "gpt-4o-mini" for e in judged)
    assert sum(e.cost_nanos for e in judged) == to_nanos(Decimal(res["spent_usd"]["judge"]))


def test_bakeoff_without_logged_prompts_says_how_to_get_them(
    make_gateway: Callable[..., Harness],
) -> None:
    gw = make_gateway()
    f = unique("bake-none")
    send(gw, f, ["hello"])
    result = CliRunner().invoke(
        main,
        ["bakeoff", "--feature", f, "--candidates", "gpt-4o-mini", "--gateway", gw.url,
         "--ledger", gw.ledger_url],
    )  # fmt: skip
    assert result.exit_code == 2
    assert "ledger.log_prompts" in result.output
