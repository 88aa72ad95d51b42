"""The `spendgate` CLI: price, keys, report (CliRunner), and demo (a real subprocess)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import httpx2
import yaml
from click.testing import CliRunner

from conftest import Harness, expected_cost_nanos, gateway_settings, sqlite_url, start_harness
from spendgate.cli import main
from spendgate.providers.simulated import SimulatedUpstream

SPENDGATE = Path(sys.executable).parent / "spendgate"


def _run(*args: str) -> str:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.stdout


def test_price_openai_usage() -> None:
    usage = {
        "prompt_tokens": 1500,
        "completion_tokens": 300,
        "prompt_tokens_details": {"cached_tokens": 1024},
    }
    out = json.loads(_run("price", "gpt-4o", "--usage", json.dumps(usage), "--json"))
    # gpt-4o: $2.50/MTok input, $1.25/MTok cached input, $10/MTok output.
    expected = (
        Decimal(1500 - 1024) * Decimal("2.50")
        + Decimal(1024) * Decimal("1.25")
        + Decimal(300) * Decimal("10")
    ) / 1_000_000
    assert Decimal(out["cost_usd"]) == expected
    assert out["cost_nanos"] == int(expected * 1_000_000_000)
    assert out["usage"]["cache_read_tokens"] == 1024
    assert out["price_version"]


def test_price_anthropic_usage() -> None:
    usage = {
        "input_tokens": 40,
        "cache_creation_input_tokens": 2000,
        "cache_read_input_tokens": 3000,
        "output_tokens": 100,
    }
    out = json.loads(_run("price", "claude-sonnet-4", "--usage", json.dumps(usage), "--json"))
    # claude-sonnet-4: $3 input, $3.75 5m cache write, $0.30 cache read, $15 output per MTok.
    expected = (
        Decimal(40) * 3 + Decimal(2000) * Decimal("3.75") + Decimal(3000) * Decimal("0.30")
        + Decimal(100) * 15
    ) / 1_000_000  # fmt: skip
    assert Decimal(out["cost_usd"]) == expected


def test_price_unknown_model_fails_cleanly() -> None:
    result = CliRunner().invoke(
        main, ["price", "no-such-model-xyz", "--usage", '{"prompt_tokens": 1}']
    )
    assert result.exit_code == 2
    assert "unknown model" in result.output


def test_keys_create_prints_a_working_key(
    sim: SimulatedUpstream, tmp_path: Path, http: httpx2.Client
) -> None:
    config = tmp_path / "spendgate.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "storage": {
                    "ledger": sqlite_url(tmp_path / "ledger.db"),
                    "keys": sqlite_url(tmp_path / "keys.db"),
                }
            }
        )
    )
    key = _run("keys", "create", "--config", str(config), "--team", "t").strip()
    assert key.startswith("sk-sg-") and "\n" not in key
    listed = json.loads(_run("keys", "list", "--config", str(config), "--json"))
    assert [k["team"] for k in listed] == ["t"]

    harness = start_harness(gateway_settings(sim, tmp_path))
    try:
        body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
        r = http.post(harness.v1 + "/chat/completions", json=body)
        assert r.status_code == 401, "a key exists, so auth is on"
        r = http.post(
            harness.v1 + "/chat/completions",
            json=body,
            headers={"authorization": f"Bearer {key}"},
        )
        assert r.status_code == 200, r.text
        event = harness.one(r.headers["x-spendgate-request-id"])
        assert event.team == "t" and event.key_id == listed[0]["id"]
    finally:
        harness.close()


def test_report_by_feature_and_model(
    make_gateway: Callable[..., Harness], http: httpx2.Client
) -> None:
    harness = make_gateway()
    plan = [("search", "gpt-4o"), ("search", "gpt-4o"), ("search", "claude-sonnet-4"),
            ("support", "gpt-4o-mini")]  # fmt: skip
    for i, (feature, model) in enumerate(plan):
        r = http.post(
            harness.v1 + "/chat/completions",
            json={"model": model, "messages": [{"role": "user", "content": f"question {i}"}]},
            headers={"x-spendgate-feature": feature},
        )
        assert r.status_code == 200
    harness.stop()
    events = harness.events()
    assert len(events) == len(plan)

    out = json.loads(
        _run("report", "--ledger", harness.ledger_url, "--by", "feature,model", "--json")
    )
    rows = {(row["feature"], row["model"]): row for row in out["rows"]}
    assert set(rows) == {
        ("search", "gpt-4o"),
        ("search", "claude-sonnet-4-20250514"),
        ("support", "gpt-4o-mini"),
    }
    for (feature, model), row in rows.items():
        mine = [e for e in events if e.feature == feature and e.model == model]
        assert row["calls"] == len(mine)
        assert row["input_tokens"] == sum(e.input_tokens for e in mine)
        assert row["output_tokens"] == sum(e.output_tokens for e in mine)
        hand = sum(expected_cost_nanos(e) for e in mine)
        assert Decimal(row["cost_usd"]) == Decimal(hand) / 1_000_000_000


def test_demo_json() -> None:
    proc = subprocess.run(
        [str(SPENDGATE), "demo", "--limit", "40", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["prompts"] == 40
    assert summary["ledger_events"] == 40
    assert summary["statuses"] == {"200": 40}
    assert Decimal(summary["total_cost_usd"]) > 0
