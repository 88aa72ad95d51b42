"""Retries, fallbacks and circuit breakers, end to end through a real gateway.

Two simulated upstreams of this module's own (so call counts and queued faults are ours
alone) stand in for two providers/regions; faults are queued over HTTP and every assertion
on call counts reads the upstream's own `/_sim/stats`. Backoffs are configured tiny, and the
circuit breaker's clock is driven by the test rather than waited for.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx2
import openai
import pytest

from conftest import Harness, expected_cost_nanos, openai_chunks, sqlite_url, start_harness, unique
from spendgate.config import ConfigError, parse_settings
from spendgate.ledger import UsageEvent
from spendgate.simulated import SimulatedUpstream

CHAT = {"model": "gpt-4o", "messages": [{"role": "user", "content": "Say hello to the team."}]}

# Published list prices, USD per million tokens, for the fallback model (Anthropic's page).
HAIKU_35 = {"input": 0.80, "output": 4.00}


@pytest.fixture(scope="module")
def sim_a() -> Iterator[SimulatedUpstream]:
    with SimulatedUpstream(latency="none") as upstream:
        yield upstream


@pytest.fixture(scope="module")
def sim_b() -> Iterator[SimulatedUpstream]:
    with SimulatedUpstream(latency="none", seed=1) as upstream:
        yield upstream


def _reset(*sims: SimulatedUpstream) -> None:
    for s in sims:
        httpx2.delete(s.url + "/_sim/faults", timeout=5)
        httpx2.delete(s.url + "/_sim/stats", timeout=5)


def _fault(sim: SimulatedUpstream, *faults: dict[str, Any]) -> None:
    r = httpx2.post(sim.url + "/_sim/faults", json={"faults": list(faults)}, timeout=5)
    assert r.status_code == 200, r.text


def _calls(sim: SimulatedUpstream) -> int:
    return int(httpx2.get(sim.url + "/_sim/stats", timeout=5).json()["total"])


def _dep(name: str, sim: SimulatedUpstream, models: list[Any], **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "provider": "simulated",
        "base_url": sim.url + "/v1",
        "models": models,
        "backoff": {"base_s": 0.001, "max_s": 0.005},
        **extra,
    }


@pytest.fixture
def gateway(
    sim_a: SimulatedUpstream, sim_b: SimulatedUpstream, tmp_path: Path
) -> Iterator[Callable[..., Harness]]:
    made: list[Harness] = []
    _reset(sim_a, sim_b)

    def build(*deployments: dict[str, Any], **extra: Any) -> Harness:
        folder = tmp_path / f"gw{len(made)}"
        folder.mkdir()
        settings = parse_settings(
            {
                "storage": {
                    "ledger": sqlite_url(folder / "ledger.db"),
                    "keys": sqlite_url(folder / "keys.db"),
                },
                "deployments": list(deployments),
                **extra,
            }
        )
        harness = start_harness(settings)
        made.append(harness)
        return harness

    yield build
    for harness in made:
        harness.close()
    _reset(sim_a, sim_b)


def _post(h: Harness, body: dict[str, Any] | None = None, **headers: str) -> httpx2.Response:
    return httpx2.post(h.v1 + "/chat/completions", json=body or CHAT, headers=headers, timeout=30)


def _event(h: Harness, r: httpx2.Response) -> UsageEvent:
    return h.one(r.headers["x-spendgate-request-id"])


def _trail(event: UsageEvent) -> list[tuple[str, int | None, str | None]]:
    return [(a["deployment"], a["status"], a["error"]) for a in event.attempts]


# ------------------------------------------------------------------ retries


def test_retry_after_503s_makes_exactly_n_plus_one_calls(gateway, sim_a) -> None:
    h = gateway(_dep("a", sim_a, ["gpt-4o"], retries=2))
    _fault(sim_a, {"kind": "status", "status": 503, "times": 2, "model": "gpt-4o"})
    r = _post(h)
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"]
    assert _calls(sim_a) == 3
    event = _event(h, r)
    failed = ("a", 503, "upstream_503")
    assert _trail(event) == [failed, failed, ("a", 200, None)]
    assert event.status == 200 and event.deployment == "a"
    assert event.cost_nanos == expected_cost_nanos(event) > 0
    assert event.baseline_nanos == event.cost_nanos


def test_retries_exhausted_returns_the_last_failure(gateway, sim_a) -> None:
    h = gateway(_dep("a", sim_a, ["gpt-4o"], retries=2))
    _fault(sim_a, {"kind": "status", "status": 500, "times": 5, "model": "gpt-4o"})
    r = _post(h)
    assert r.status_code == 502
    assert r.json()["error"]["code"] == "upstream_500"
    assert _calls(sim_a) == 3
    event = _event(h, r)
    assert [a["status"] for a in event.attempts] == [500, 500, 500]
    assert event.cost_nanos == 0 and event.error_type == "upstream_500"


@pytest.mark.parametrize(
    ("fault", "error"),
    [
        ({"kind": "garbage"}, "upstream_bad_response"),
        ({"kind": "timeout", "seconds": 5}, "upstream_timeout"),
        ({"kind": "status", "status": 429}, "upstream_429"),
    ],
    ids=["garbage", "timeout", "429"],
)
def test_retryable_failures(gateway, sim_a, fault: dict[str, Any], error: str) -> None:
    h = gateway(_dep("a", sim_a, ["gpt-4o"], retries=1, timeout_s=0.3))
    _fault(sim_a, {**fault, "model": "gpt-4o"})
    r = _post(h)
    assert r.status_code == 200, r.text
    assert _calls(sim_a) == 2
    event = _event(h, r)
    assert [a["error"] for a in event.attempts] == [error, None]


def test_client_errors_are_neither_retried_nor_failed_over(gateway, sim_a, sim_b) -> None:
    h = gateway(
        _dep("a", sim_a, ["gpt-4o"], retries=3, circuit_breaker={"failures": 1}),
        _dep("b", sim_b, ["gpt-4o"]),
    )
    _fault(sim_a, {"kind": "status", "status": 400, "model": "gpt-4o", "message": "bad thing"})
    r = _post(h)
    assert r.status_code == 400
    assert "bad thing" in r.json()["error"]["message"]
    assert (_calls(sim_a), _calls(sim_b)) == (1, 0)
    assert _trail(_event(h, r)) == [("a", 400, "upstream_400")]
    # A 4xx says the deployment is up: its circuit (1 failure opens it) stays closed.
    assert h.gateway.pipeline.dispatcher.resilience.states() == {"a": "closed"}


def test_retry_after_is_honoured(gateway, sim_a) -> None:
    h = gateway(_dep("a", sim_a, ["gpt-4o"], retries=1))
    _fault(sim_a, {"kind": "status", "status": 429, "retry_after": 0.3, "model": "gpt-4o"})
    started = time.perf_counter()
    r = _post(h)
    elapsed = time.perf_counter() - started
    assert r.status_code == 200
    assert _calls(sim_a) == 2
    # The configured backoff is ≤ 5 ms: only the upstream's Retry-After explains the wait.
    assert elapsed >= 0.3


def test_retry_after_beyond_the_cap_moves_on(gateway, sim_a, sim_b) -> None:
    h = gateway(
        _dep("a", sim_a, ["gpt-4o"], retries=3, backoff={"retry_after_max_s": 1}),
        _dep("b", sim_b, ["gpt-4o"]),
    )
    _fault(sim_a, {"kind": "status", "status": 429, "retry_after": 60, "model": "gpt-4o"})
    started = time.perf_counter()
    r = _post(h)
    assert r.status_code == 200
    assert time.perf_counter() - started < 30
    assert (_calls(sim_a), _calls(sim_b)) == (1, 1)
    assert _trail(_event(h, r)) == [("a", 429, "upstream_429"), ("b", 200, None)]


def test_retry_after_beyond_the_cap_passes_through_when_nothing_else_serves(gateway, sim_a) -> None:
    h = gateway(_dep("a", sim_a, ["gpt-4o"], retries=3, backoff={"retry_after_max_s": 1}))
    _fault(sim_a, {"kind": "status", "status": 429, "retry_after": 60, "model": "gpt-4o"})
    r = _post(h)
    assert r.status_code == 429
    assert r.headers["retry-after"] == "60"
    assert _calls(sim_a) == 1


# ------------------------------------------------------------------ fallbacks


def test_second_deployment_serves_when_the_first_fails(gateway, sim_a, sim_b) -> None:
    h = gateway(_dep("a", sim_a, ["gpt-4o"]), _dep("b", sim_b, ["gpt-4o"]))
    _fault(sim_a, {"kind": "status", "status": 503, "model": "gpt-4o"})
    r = _post(h)
    assert r.status_code == 200
    assert (_calls(sim_a), _calls(sim_b)) == (1, 1)
    event = _event(h, r)
    assert _trail(event) == [("a", 503, "upstream_503"), ("b", 200, None)]
    assert event.deployment == "b" and event.served_model == "gpt-4o"
    assert event.cost_nanos == expected_cost_nanos(event)


def test_cross_provider_fallback_translates_and_prices_the_serving_model(
    gateway, sim_a, sim_b
) -> None:
    h = gateway(
        _dep("oa", sim_a, ["gpt-4o"], fallbacks={"gpt-4o": ["claude-3-5-haiku"]}),
        _dep("an", sim_b, [{"name": "claude-3-5-haiku", "upstream": "claude-3-5-haiku-20241022"}]),
    )
    _fault(sim_a, {"kind": "status", "status": 503, "model": "gpt-4o"})
    feature = unique("xfb")
    client = openai.OpenAI(base_url=h.v1, api_key="unused", max_retries=0)
    resp = client.chat.completions.create(
        model="gpt-4o",
        messages=[{"role": "user", "content": "Summarise the quarterly numbers."}],
        extra_headers={"x-spendgate-feature": feature},
    )
    assert resp.choices[0].message.content
    assert resp.object == "chat.completion"  # OpenAI's format, from an Anthropic upstream
    stats_b = httpx2.get(sim_b.url + "/_sim/stats", timeout=5).json()
    assert stats_b["by_path"] == {"/v1/messages": 1}
    event = h.one_for(feature)
    assert _trail(event) == [("oa", 503, "upstream_503"), ("an", 200, None)]
    assert event.requested_model == "gpt-4o"
    assert event.served_model == "claude-3-5-haiku-20241022"
    assert event.deployment == "an" and event.provider == "simulated"
    expected = event.input_tokens * int(HAIKU_35["input"] * 1000) + event.output_tokens * int(
        HAIKU_35["output"] * 1000
    )
    assert event.cost_nanos == expected > 0
    # A fallback is not an optimization: no savings, baseline = what was paid.
    assert event.savings == {} and event.baseline_nanos == event.cost_nanos
    assert event.extra is not None
    assert event.extra["decisions"]["fallback"] == {
        "from": "gpt-4o",
        "to": "claude-3-5-haiku",
        "deployment": "an",
    }


def test_fallback_that_cannot_express_the_request_is_skipped(gateway, sim_a, sim_b) -> None:
    h = gateway(
        _dep("oa", sim_a, ["gpt-4o"], fallbacks={"gpt-4o": ["claude-3-5-haiku"]}),
        _dep("an", sim_b, ["claude-3-5-haiku"]),
    )
    _fault(sim_a, {"kind": "status", "status": 503, "model": "gpt-4o"})
    r = _post(h, {**CHAT, "logprobs": True})  # Anthropic has no logprobs
    assert r.status_code == 502
    assert _calls(sim_b) == 0
    assert _trail(_event(h, r)) == [("oa", 503, "upstream_503"), ("an", None, "translation_failed")]


# ------------------------------------------------------------------ streams


def test_stream_failing_before_its_first_byte_is_retried(gateway, sim_a) -> None:
    h = gateway(_dep("a", sim_a, ["gpt-4o"], retries=1))
    _fault(sim_a, {"kind": "cut", "after_chunks": 0, "model": "gpt-4o"})
    feature = unique("s0")
    with httpx2.stream(
        "POST", h.v1 + "/chat/completions", json={**CHAT, "stream": True},
        headers={"x-spendgate-feature": feature}, timeout=30,
    ) as r:  # fmt: skip
        assert r.status_code == 200
        chunks, done = openai_chunks(list(r.iter_lines()))
    assert done and all("error" not in c for c in chunks)
    assert _calls(sim_a) == 2
    event = h.one_for(feature)
    assert [a["error"] for a in event.attempts] == ["upstream_stream_cut", None]
    assert event.status == 200 and event.error_type is None
    assert event.cost_nanos == expected_cost_nanos(event)


def test_stream_is_never_retried_once_it_started(gateway, sim_a, sim_b) -> None:
    h = gateway(_dep("a", sim_a, ["gpt-4o"], retries=3), _dep("b", sim_b, ["gpt-4o"]))
    _fault(sim_a, {"kind": "cut", "after_chunks": 2, "model": "gpt-4o"})
    feature = unique("s2")
    with httpx2.stream(
        "POST", h.v1 + "/chat/completions", json={**CHAT, "stream": True},
        headers={"x-spendgate-feature": feature}, timeout=30,
    ) as r:  # fmt: skip
        assert r.status_code == 200
        chunks, done = openai_chunks(list(r.iter_lines()))
    assert not done and chunks[-1]["error"]["code"] == "upstream_stream_cut"
    assert (_calls(sim_a), _calls(sim_b)) == (1, 0)
    event = h.one_for(feature)
    assert event.error_type == "upstream_stream_cut"
    assert len(event.attempts) == 1


def test_anthropic_stream_failing_before_its_first_byte_fails_over(gateway, sim_a, sim_b) -> None:
    claude = [{"name": "claude-sonnet-4", "upstream": "claude-sonnet-4-20250514"}]
    h = gateway(_dep("a", sim_a, claude), _dep("b", sim_b, claude))
    _fault(sim_a, {"kind": "garbage", "model": "claude-sonnet-4-20250514"})
    client = anthropic.Anthropic(base_url=h.url, api_key="unused", max_retries=0)
    feature = unique("as0")
    with client.messages.stream(
        model="claude-sonnet-4", max_tokens=64,
        messages=[{"role": "user", "content": "Say hello."}],
        extra_headers={"x-spendgate-feature": feature},
    ) as stream:  # fmt: skip
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text and final.stop_reason
    assert (_calls(sim_a), _calls(sim_b)) == (1, 1)
    event = h.one_for(feature)
    assert _trail(event) == [("a", 200, "upstream_stream_cut"), ("b", 200, None)]
    assert event.deployment == "b" and event.status == 200
    assert event.cost_nanos == expected_cost_nanos(event)


# ------------------------------------------------------------------ circuit breaker


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_circuit_opens_skips_and_recovers_through_a_probe(gateway, sim_a, sim_b) -> None:
    h = gateway(
        _dep("a", sim_a, ["gpt-4o"], circuit_breaker={"failures": 2, "cooldown_s": 30}),
        _dep("b", sim_b, ["gpt-4o"]),
    )
    resilience = h.gateway.pipeline.dispatcher.resilience
    clock = Clock()
    resilience.clock = clock
    _fault(sim_a, {"kind": "status", "status": 503, "times": 3, "model": "gpt-4o"})

    trails = []
    for _ in range(3):
        r = _post(h)
        assert r.status_code == 200
        trails.append(_trail(_event(h, r)))
    failed, skipped = ("a", 503, "upstream_503"), ("a", None, "circuit_open")
    served_b = ("b", 200, None)
    assert trails == [[failed, served_b], [failed, served_b], [skipped, served_b]]
    assert (_calls(sim_a), _calls(sim_b)) == (2, 3)
    assert resilience.states() == {"a": "open"}

    clock.now += 31  # cool-down over: one probe goes to `a`; it fails again (3rd fault)
    r = _post(h)
    assert _trail(_event(h, r)) == [failed, served_b]
    assert resilience.states() == {"a": "open"}

    clock.now += 31  # the next probe succeeds and closes the circuit
    r = _post(h)
    assert _trail(_event(h, r)) == [("a", 200, None)]
    assert resilience.states() == {"a": "closed"}
    assert (_calls(sim_a), _calls(sim_b)) == (4, 4)


def test_every_circuit_open_fails_fast_with_retry_after(gateway, sim_a) -> None:
    h = gateway(_dep("a", sim_a, ["gpt-4o"], circuit_breaker={"failures": 1, "cooldown_s": 20}))
    h.gateway.pipeline.dispatcher.resilience.clock = Clock()
    _fault(sim_a, {"kind": "status", "status": 502, "model": "gpt-4o"})
    assert _post(h).status_code == 502
    r = _post(h)
    assert r.status_code == 503
    assert r.json()["error"]["code"] == "circuit_open"
    assert r.headers["retry-after"] == "20"
    assert _calls(sim_a) == 1
    event = _event(h, r)
    assert _trail(event) == [("a", None, "circuit_open")]
    assert event.cost_nanos == 0


# ------------------------------------------------------------------ config


def test_fallbacks_must_name_served_models(sim_a) -> None:
    def settings(**extra: Any) -> None:
        parse_settings({"deployments": [_dep("a", sim_a, ["gpt-4o"], **extra)]})

    with pytest.raises(ConfigError, match="no deployment serves"):
        settings(fallbacks={"gpt-4o": ["x"]})
    with pytest.raises(ConfigError, match="does not serve"):
        settings(fallbacks={"o3": ["gpt-4o"]})
    with pytest.raises(ConfigError, match="retries"):
        settings(retries=-1)


def test_fallback_to_openai_format_drops_injected_breakpoints(gateway, sim_a, sim_b) -> None:
    """The prefix stage marks an OpenAI-format body for Claude; when Claude fails and an
    OpenAI-format deployment serves the fallback, it gets the body without the markers."""
    h = gateway(
        _dep("an", sim_a, [{"name": "claude-sonnet-4", "upstream": "claude-sonnet-4-20250514"}],
             fallbacks={"claude-sonnet-4": ["gpt-4o"]}),
        _dep("oa", sim_b, ["gpt-4o"]),
        prefix={"enabled": True},
    )  # fmt: skip
    sent: list[tuple[str, dict[str, Any]]] = []
    real_open = h.gateway.http.open

    async def spy(url: str, body: dict[str, Any], headers: Any, dep: Any) -> Any:
        sent.append((dep.name, body))
        return await real_open(url, body, headers, dep)

    h.gateway.http.open = spy  # type: ignore[method-assign]
    _fault(sim_a, {"kind": "status", "status": 529, "model": "claude-sonnet-4-20250514"})
    system = "You answer questions about invoices. " * 300
    r = _post(h, {"model": "claude-sonnet-4", "messages": [
        {"role": "system", "content": system}, {"role": "user", "content": "Hi"}]})  # fmt: skip
    assert r.status_code == 200, r.text
    assert [name for name, _ in sent] == ["an", "oa"]
    assert "cache_control" in str(sent[0][1])  # Claude got the breakpoint…
    assert "cache_control" not in str(sent[1][1])  # …the OpenAI fallback did not
    assert sent[1][1]["messages"][0]["content"][0]["text"] == system
    event = _event(h, r)
    assert event.deployment == "oa" and event.served_model == "gpt-4o"
