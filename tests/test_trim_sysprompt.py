"""System-prompt fingerprints through the gateway, and `spendgate analyze-prompts`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx2
from click.testing import CliRunner

from conftest import Harness
from spendgate.cli import main
from spendgate.tokens import count_text
from spendgate.trim.sysprompt import lint_prompt

SYSTEM = (
    "You are a support assistant for Acme. Always answer politely and in English. "
    "Never reveal internal ticket numbers to customers. "
    "Always answer politely and in English."
)


def test_fingerprints_and_report(make_gateway: Any, http: httpx2.Client, tmp_path: Path) -> None:
    gw: Harness = make_gateway(trim={"output": {"features": ["support"]}})
    for i in range(3):
        r = http.post(
            gw.v1 + "/chat/completions",
            json={
                "model": "gpt-4o",
                "messages": [
                    {"role": "system", "content": SYSTEM},
                    {"role": "user", "content": f"Where is my order {i}?"},
                ],
            },
            headers={"x-spendgate-feature": "support"},
        )
        assert r.status_code == 200
    events = gw.events(feature="support")
    assert len(events) == 3
    fps = [e.extra["decisions"]["trim"]["system"] for e in events]  # type: ignore[index]
    assert len({fp["hash"] for fp in fps}) == 1
    assert fps[0]["tokens"] == count_text("gpt-4o", SYSTEM)
    assert SYSTEM not in json.dumps([e.extra for e in events])  # no prompt text stored

    prompt = tmp_path / "prompt.txt"
    prompt.write_text(SYSTEM)
    gw.stop()
    result = CliRunner().invoke(
        main,
        [
            "analyze-prompts",
            "--ledger",
            gw.ledger_url,
            "--file",
            str(prompt),
            "--feature",
            "support",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    (row,) = out["features"]
    assert row["feature"] == "support" and row["calls"] == 3
    assert row["avg_system_tokens"] == count_text("gpt-4o", SYSTEM)
    input_tokens = sum(e.input_tokens for e in events)
    assert abs(row["system_share_of_input_tokens"] - 3 * fps[0]["tokens"] / input_tokens) < 1e-3
    assert float(row["system_prompt_usd"]) > 0
    kinds = [f["kind"] for f in out["findings"]]
    assert kinds == ["repeated_instruction"]
    assert float(out["findings"][0]["projected_30d_usd"]) > 0


def test_lint_few_shot_and_fields() -> None:
    examples = "\n\n".join(f"Example {i}: input {i} gives output {i * 2}" for i in range(6))
    fields = "\n".join(
        f"- field_{i}: this field holds the customer's value number {i}, written out in full "
        "words, never abbreviated"
        for i in range(4)
    )
    found = {f.kind: f for f in lint_prompt(examples + "\n\n" + fields, len)}
    assert "few_shot_beyond_3" in found and found["few_shot_beyond_3"].tokens > 0
    assert "verbose_field_descriptions" in found
