"""The `spendgate` CLI: price, keys, report (CliRunner), and demo (a real subprocess)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import httpx2
import pytest
import yaml
from click.testing import CliRunner

from conftest import Harness, expected_cost_nanos, gateway_settings, sqlite_url, start_harness
from spendgate.cli import main
from spendgate.simulated import SimulatedUpstream

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


def test_demo_json_shows_savings_by_technique(tmp_path: Path) -> None:
    """Two passes over the same traffic: the second, under the recommended policy, costs less,
    with savings from at least four techniques; nothing is left in the temp dir."""
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    proc = subprocess.run(
        [str(SPENDGATE), "demo", "--limit", "240", "--json"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    # 240: the bundled sample's size, so a clone without ../shared runs the same test
    assert summary["prompts"] == 240 and summary["calls"] >= 240
    for statuses in summary["statuses"].values():
        assert statuses == {"200": summary["calls"]}
    assert summary["ledger_events"] >= summary["calls"]  # + the history summaries
    baseline = Decimal(summary["baseline_cost_usd"])
    optimized = Decimal(summary["total_cost_usd"])
    assert Decimal(summary["savings_usd"]) == baseline - optimized > 0
    techniques = {t for t, usd in summary["savings_by_technique"].items() if Decimal(usd) > 0}
    assert len(techniques) >= 4, summary["savings_by_technique"]
    semantic = summary["comparison"]["guard_rails"]["semantic_hits"]
    assert semantic["other_question"] == 0, semantic
    # onnxruntime's own session-id file (`.ses`, no data) is the runtime's, not the demo's.
    left = [p.name for p in tmp_path.iterdir() if p.name != ".ses"]
    assert left == [], "the demo left files behind"


def _serve(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [str(SPENDGATE), "serve", *args],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_serve_on_a_taken_port_says_so_before_listening(tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = _serve("--simulated", "--latency", "none", "--port", str(port), cwd=tmp_path,
                      env={"SPENDGATE_STATE_DIR": str(tmp_path / "state")})  # fmt: skip
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert "listening" not in out
    assert f"cannot listen on 127.0.0.1:{port}: address already in use" in err
    assert "Traceback" not in err


def test_serve_with_a_missing_provider_key_is_one_line(tmp_path: Path) -> None:
    config = tmp_path / "spendgate.yaml"
    config.write_text(
        "storage: {ledger: 'sqlite:///l.db', keys: 'sqlite:///k.db'}\n"
        "deployments:\n"
        "  - {name: openai, provider: openai, api_key_env: SG_TEST_NO_SUCH_KEY, models: [gpt-4o]}\n"
    )
    proc = _serve("--config", str(config), "--port", "0", cwd=tmp_path)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2 and "Traceback" not in err
    assert err.strip().splitlines() == [
        "spendgate: deployments.openai.api_key_env: environment variable SG_TEST_NO_SUCH_KEY "
        "is not set"
    ]


def test_serve_simulated_keeps_its_state_out_of_the_working_directory(tmp_path: Path) -> None:
    work, state = tmp_path / "work", tmp_path / "state"
    work.mkdir()
    proc = _serve("--simulated", "--latency", "none", "--port", "0", cwd=work,
                  env={"SPENDGATE_STATE_DIR": str(state)})  # fmt: skip
    try:
        assert proc.stdout is not None and proc.stderr is not None
        banner = proc.stdout.readline()  # printed once the socket is bound and serving
        assert banner.startswith("spendgate listening on http://127.0.0.1:")
        assert not banner.startswith("spendgate listening on http://127.0.0.1:0/")
        assert str(state / "simulated") in banner
    finally:
        proc.terminate()
        proc.communicate(timeout=60)
    assert list(work.iterdir()) == []
    assert (state / "simulated" / "ledger.db").exists()


def test_config_errors_are_reported_all_at_once() -> None:
    from spendgate.config import ConfigError, parse_settings

    bad = {
        "server": {"prot": 1},
        "deployments": [{"name": "x", "provider": "nope", "models": ["a"]}],
        "cache": {"enabeld": True},
        "trim": {"history": {"keep_last_turns": 0}},
    }
    with pytest.raises(ConfigError) as err:
        parse_settings(bad)
    text = str(err.value)
    for key in ("server.prot", "deployments.0.provider", "cache.enabeld",
                "trim.history.keep_last_turns"):  # fmt: skip
        assert key in text, text
