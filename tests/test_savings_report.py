"""Savings by technique read back from a real SQLite ledger."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from spendgate.analytics.savings import savings_by_technique
from spendgate.cli import main
from spendgate.ledger import UsageEvent, open_ledger


def _event(i: int, feature: str, cost: int, savings: dict[str, int], **extra: object) -> UsageEvent:
    return UsageEvent(
        request_id=f"r{i}",
        ts=1_790_000_000.0 + i,
        endpoint="chat",
        api="openai",
        feature=feature,
        requested_model="gpt-4o",
        served_model="gpt-4o-mini" if "routing" in savings else "gpt-4o",
        status=200,
        latency_ms=1.0,
        cost_nanos=cost,
        baseline_nanos=cost + sum(savings.values()),
        savings=savings,
        **extra,  # type: ignore[arg-type]
    )


def test_savings_split_and_shadow(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'l.db'}"
    store = open_ledger(url)
    events = [
        _event(1, "faq", 0, {"cache": 5_000}),
        _event(2, "faq", 300, {"routing": 2_700}),
        _event(3, "faq", 1_000, {}, route={"shadow": True, "would_save_nanos": 900}),
        _event(4, "code", 2_000, {"compression": 400, "routing": 100}),
    ]
    store.write_batch(events)
    rows = {r.keys["feature"]: r for r in savings_by_technique(store, ["feature"])}
    store.close()
    faq = rows["faq"]
    assert faq.calls == 3
    assert faq.by_technique == {"cache": 5_000, "routing": 2_700}
    # The parts add up to baseline − actual, exactly.
    assert faq.baseline_nanos - faq.cost_nanos == sum(faq.by_technique.values())
    assert faq.touched == {"cache": 1, "routing": 1}
    assert faq.would_have_saved == {"route": 900}
    code = rows["code"]
    assert code.baseline_nanos - code.cost_nanos == 500

    result = CliRunner().invoke(
        main, ["report", "--ledger", url, "--savings", "--by", "feature", "--json"]
    )
    assert result.exit_code == 0, result.output
    data = {row["feature"]: row for row in json.loads(result.output)}
    assert data["faq"]["saved_by_technique_usd"] == {"cache": "0.000005", "routing": "0.0000027"}
    assert data["faq"]["shadow_would_have_saved_usd"] == {"route": "0.0000009"}
