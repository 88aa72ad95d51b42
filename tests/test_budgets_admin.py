"""Managing rules: `spendgate budgets set | list | rm` (CliRunner) and the admin API under
`/admin/budgets`, both against running gateways that pick the rules up."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx2
import pytest
import yaml
from click.testing import CliRunner

from conftest import Harness, sqlite_url, unique
from spendgate.budgets import BudgetManager
from spendgate.cli import main

REDIS_URL = "redis://127.0.0.1:6379/0"


def _cli(*args: str, code: int = 0) -> str:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert result.exit_code == code, result.output
    return result.output


def _chat(h: Harness, team: str) -> httpx2.Response:
    body = {
        "model": "gpt-4o-mini",
        "max_tokens": 10,
        "messages": [{"role": "user", "content": "hello"}],
    }
    return httpx2.post(
        h.v1 + "/chat/completions", json=body, headers={"x-spendgate-team": team}, timeout=30
    )


def _manager(h: Harness) -> BudgetManager:
    m = h.gateway.stage_context.budgets
    assert isinstance(m, BudgetManager)
    return m


def test_cli_set_list_rm_with_a_running_gateway(
    make_gateway: Callable[..., Harness], tmp_path: Path
) -> None:
    team = unique("team")
    storage = {"ledger": sqlite_url(tmp_path / "l.db"), "keys": sqlite_url(tmp_path / "k.db")}
    budgets_cfg = {
        "budgets": [
            {"name": "yaml-rule", "scope": {"team": team}, "period": "month", "limit_usd": "100"}
        ]
    }
    cfg = tmp_path / "spendgate.yaml"
    cfg.write_text(yaml.safe_dump({"storage": storage, "budgets": budgets_cfg}))
    h = make_gateway(storage=storage, budgets=budgets_cfg)
    for _ in range(2):
        assert _chat(h, team).status_code == 200

    out = _cli(
        "budgets",
        "set",
        "team-cap",
        "--config",
        str(cfg),
        "--scope",
        f"team={team}",
        "--usd",
        "0.000000001",
        "--period",
        "day",
    )
    assert "team-cap" in out and "per day, hard" in out
    _cli("budgets", "set", "per-key", "--config", str(cfg), "--scope", "key=*", "--rpm", "60")
    _manager(h).reload_now()
    r = _chat(h, team)
    assert r.status_code == 429 and "team-cap" in r.json()["error"]["message"]

    h.flush()  # the CLI reads the ledger: let the gateway's writer land its queued rows first
    rows = {
        row["name"]: row
        for row in json.loads(_cli("budgets", "list", "--config", str(cfg), "--json"))
    }
    assert rows["yaml-rule"]["source"] == "config"
    assert rows["team-cap"]["source"] == "dynamic" and rows["per-key"]["kind"] == "limit"
    ledger_sum = sum(e.cost_nanos or 0 for e in h.events(team=team))
    [usage] = rows["yaml-rule"]["usage"]
    assert usage["scope"] == {"team": team}
    assert Decimal(usage["spent_usd"]) * 10**9 == ledger_sum
    table = _cli("budgets", "list", "--config", str(cfg))
    assert "yaml-rule" in table and "team-cap" in table

    _cli("budgets", "rm", "yaml-rule", "--config", str(cfg), code=2)
    _cli("budgets", "rm", "team-cap", "--config", str(cfg))
    _cli("budgets", "rm", "team-cap", "--config", str(cfg), code=1)
    _manager(h).reload_now()
    assert _chat(h, team).status_code == 200
    bad = _cli(
        "budgets", "set", "x", "--config", str(cfg), "--scope", "org=a", "--usd", "1", code=2
    )
    assert "unknown scope tag" in bad
    _cli("budgets", "set", "x", "--config", str(cfg), code=2)  # neither --usd nor --rpm


def _redis_up() -> bool:
    try:
        import redis

        return bool(redis.Redis.from_url(REDIS_URL, socket_connect_timeout=0.5).ping())
    except Exception:
        return False


@pytest.mark.skipif(not _redis_up(), reason="Redis is not running")
def test_cli_rules_in_redis_reach_every_gateway(
    make_gateway: Callable[..., Harness], tmp_path: Path
) -> None:
    import redis

    prefix = f"sgtest-{uuid.uuid4().hex[:10]}:"
    team = unique("team")
    budgets_cfg = {"store": REDIS_URL, "key_prefix": prefix}
    cfg = tmp_path / "spendgate.yaml"
    cfg.write_text(yaml.safe_dump({"budgets": budgets_cfg}))
    a = make_gateway(budgets=budgets_cfg)
    b = make_gateway(budgets=budgets_cfg)
    try:
        _cli(
            "budgets",
            "set",
            "shared",
            "--config",
            str(cfg),
            "--scope",
            f"team={team}",
            "--usd",
            "1",
            "--period",
            "week",
        )
        for h in (a, b):
            _manager(h).reload_now()
            assert _chat(h, team).status_code == 200
        [row] = json.loads(_cli("budgets", "list", "--config", str(cfg), "--json"))
        spent = sum(e.cost_nanos or 0 for h in (a, b) for e in h.events(team=team))
        [usage] = row["usage"]
        assert Decimal(usage["spent_usd"]) * 10**9 == spent
    finally:
        client = redis.Redis.from_url(REDIS_URL)
        keys = list(client.scan_iter(match=prefix + "*"))
        if keys:
            client.delete(*keys)
        client.close()


def test_admin_api_manages_rules(
    make_gateway: Callable[..., Harness], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SPENDGATE_ADMIN_KEY", "admin-secret")
    team = unique("team")
    h = make_gateway(budgets={"limits": [{"name": "cfg-rpm", "requests_per_minute": 1000}]})
    auth = {"authorization": "Bearer admin-secret"}
    base = h.url + "/admin/budgets/"
    assert httpx2.get(base, timeout=10).status_code == 401

    listing = httpx2.get(base, headers=auth, timeout=10).json()
    assert [(r["name"], r["source"]) for r in listing["data"]] == [("cfg-rpm", "config")]

    rule: dict[str, Any] = {"scope": {"team": team}, "limit_usd": "0.000000001", "period": "day"}
    r = httpx2.put(base + "tiny", json=rule, headers=auth, timeout=10)
    assert r.status_code == 201, r.text
    assert r.json()["kind"] == "budget" and r.json()["source"] == "dynamic"
    refused = _chat(h, team)
    assert refused.status_code == 429 and "tiny" in refused.json()["error"]["message"]
    rule["limit_usd"] = "10"
    assert httpx2.put(base + "tiny", json=rule, headers=auth, timeout=10).status_code == 200
    assert _chat(h, team).status_code == 200
    view = httpx2.get(base + "tiny", headers=auth, timeout=10).json()
    [usage] = view["usage"]
    spent = sum(e.cost_nanos or 0 for e in h.events(team=team))
    assert Decimal(usage["spent_usd"]) * 10**9 == spent and usage["reserved_usd"] == "0"

    bad = httpx2.post(base, json={"name": "b", "limit_usd": "-1"}, headers=auth, timeout=10)
    assert bad.status_code == 400 and "limit_usd" in bad.json()["error"]["message"]
    assert httpx2.delete(base + "cfg-rpm", headers=auth, timeout=10).status_code == 409
    assert httpx2.delete(base + "tiny", headers=auth, timeout=10).status_code == 200
    assert httpx2.get(base + "tiny", headers=auth, timeout=10).status_code == 404
    assert httpx2.delete(base + "tiny", headers=auth, timeout=10).status_code == 404
