"""The prompt-cache hit ratio and advisor, on a ledger filled through a real gateway."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from decimal import Decimal

import httpx2
from click.testing import CliRunner

from conftest import PRICES_PER_MTOK, Harness, unique
from spendgate.cache.prefix_advisor import prompt_cache_hit_ratio, prompt_cache_report
from spendgate.cli import main
from test_prefix import long_text


def _send(h: Harness, feature: str, model: str, system: str, question: str) -> None:
    r = httpx2.post(
        h.v1 + "/chat/completions",
        json={"model": model, "max_tokens": 16,
              "messages": [{"role": "system", "content": system},
                           {"role": "user", "content": question}]},
        headers={"x-spendgate-feature": feature}, timeout=30,
    )  # fmt: skip
    assert r.status_code == 200, r.text


def test_advisor_from_a_shadow_run(make_gateway: Callable[..., Harness]) -> None:
    # Shadow mode: nothing is cached for real, but every call's stable prefix is recorded.
    h = make_gateway(prefix={"enabled": True, "shadow": True})
    stable, varying = unique("adv-stable"), unique("adv-varying")
    system = long_text(uuid.uuid4().hex)
    for i in range(3):
        _send(h, stable, "claude-sonnet-4", system, f"question {i}")
        _send(h, varying, "claude-sonnet-4", system + f" Now: {uuid.uuid4()}", f"question {i}")
    h.flush()
    rows = {r.feature: r for r in prompt_cache_report(h.reader())}
    events = sorted(h.events(feature=stable), key=lambda e: e.ts)
    prefix = [e.extra["decisions"]["prefix"]["prefix_tokens"] for e in events]  # type: ignore[index]
    assert len(set(prefix)) == 1 and prefix[0] > 1000

    row = rows[stable]
    assert row.calls == row.observed_calls == 3 and row.prefix_variants == 1
    # The 2nd and 3rd calls repeat it; a prefix estimate (from the text's size) never
    # counts for more than the call's billed input.
    counted = [min(prefix[0], e.input_tokens) for e in events]
    assert row.stable_prefix_tokens == counted[1] + counted[2]
    assert row.stable_share == row.stable_prefix_tokens / sum(e.input_tokens for e in events)
    price = PRICES_PER_MTOK["claude-sonnet-4"]
    per_mtok = {k: Decimal(str(v)) for k, v in price.items()}
    expected = (
        (counted[1] + counted[2]) * (per_mtok["input"] - per_mtok["cache_read"])
        - counted[0] * (per_mtok["cache_write"] - per_mtok["input"])
    ) / 1_000_000
    assert row.projected_usd == expected > 0
    assert row.hit_ratio == 0 and row.saved_usd == 0  # shadow: nothing cached yet

    other = rows[varying]
    assert other.prefix_variants == 3 and other.stable_prefix_tokens == 0
    assert other.projected_usd < 0  # caching a prefix that never repeats only costs

    runner = CliRunner()
    result = runner.invoke(main, ["prompt-cache", "--ledger", h.ledger_url, "--json"])
    assert result.exit_code == 0, result.output
    features = {f["feature"]: f for f in json.loads(result.output)["features"]}
    assert Decimal(features[stable]["projected_usd"]) == expected
    table = runner.invoke(main, ["prompt-cache", "--ledger", h.ledger_url])
    assert stable[:24] in table.output


def test_hit_ratio_per_feature(make_gateway: Callable[..., Harness]) -> None:
    h = make_gateway(prefix={"enabled": True})
    feature = unique("ratio")
    system = long_text(uuid.uuid4().hex)
    for i in range(3):
        _send(h, feature, "gpt-4o", system, f"q{i}")
    events = h.events(feature=feature)
    ratios = prompt_cache_hit_ratio(h.reader())
    read = sum(e.cache_read_tokens for e in events)
    assert read > 0
    assert ratios[feature] == read / sum(e.input_tokens for e in events)
    row = next(r for r in prompt_cache_report(h.reader()) if r.feature == feature)
    assert row.hit_ratio == ratios[feature]
    assert row.saved_usd == Decimal(sum(e.savings["prompt_cache"] for e in events if e.savings)) / (
        10**9
    )
