"""Real clients of the Responses API against `spendgate serve --simulated` (the CLI itself, in
its own process, on a real socket): the OpenAI Agents SDK's default model (which speaks the
Responses API), LangChain's ChatOpenAI with `use_responses_api=True`, and the openai SDK —
each call attributed and priced in the ledger the server writes."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx2
import openai
import pytest

from conftest import assert_priced, unique
from spendgate.ledger import UsageEvent, open_ledger
from spendgate.serve import free_port


class Served:
    def __init__(self, url: str, ledger: str, proc: subprocess.Popen[bytes]) -> None:
        self.url = url
        self.v1 = url + "/v1"
        self.ledger = ledger
        self.proc = proc

    def events(self, feature: str, count: int, seconds: float = 15) -> list[UsageEvent]:
        """The feature's rows once `count` are in (the server flushes every 50 ms); each
        round trips through the server before reading again, never a bare sleep."""
        deadline = time.monotonic() + seconds
        rows: list[UsageEvent] = []
        while time.monotonic() < deadline:
            store = open_ledger(self.ledger, create=False, read_only=True)
            try:
                rows = list(store.events(filters={"feature": feature}))
            finally:
                store.close()
            if len(rows) >= count:
                return rows
            httpx2.get(self.url + "/healthz", timeout=5)
        raise AssertionError(f"expected {count} rows for {feature}, got {rows}")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    folder = tmp_path_factory.mktemp("served")
    ledger = f"sqlite:///{folder / 'ledger.db'}"
    config = folder / "spendgate.yaml"
    config.write_text(f"storage:\n  ledger: {ledger}\n  keys: sqlite:///{folder / 'keys.db'}\n")
    port = free_port()
    exe = Path(sys.executable).with_name("spendgate")
    proc = subprocess.Popen(
        [str(exe), "serve", "--simulated", "--latency", "none", "--config", str(config),
         "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, "OPENAI_AGENTS_DISABLE_TRACING": "1"},
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx2.get(url + "/healthz", timeout=1).status_code == 200:
                break
        except httpx2.TransportError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"spendgate serve did not start: {proc.stderr.read()!r}")
        time.sleep(0.05)  # waiting for another process to bind: nothing to join on
    yield Served(url, ledger, proc)
    proc.terminate()
    proc.wait(timeout=30)


def test_openai_sdk_create_and_stream(served: Served) -> None:
    feature = unique("cli-sdk")
    headers = {"x-spendgate-feature": feature}
    with openai.OpenAI(base_url=served.v1, api_key="x", max_retries=0) as client:
        raw = client.responses.with_raw_response.create(
            model="gpt-4o-mini", input="Say hi.", extra_headers=headers
        )
        cost = Decimal(raw.headers["x-spendgate-cost-usd"])
        with client.responses.stream(
            model="claude-sonnet-4", input="Stream hi.", extra_headers=headers
        ) as stream:
            for _ in stream:
                pass
            assert stream.get_final_response().output_text
    rows = served.events(feature, 2)
    for row in rows:
        assert_priced(row)
    plain = next(r for r in rows if r.request_id == raw.headers["x-spendgate-request-id"])
    assert plain.cost_nanos == int(cost * 1_000_000_000)


def test_agents_sdk_default_model_runs_a_tool_loop(served: Served) -> None:
    agents = pytest.importorskip("agents")
    feature = unique("cli-agents")
    calls: list[str] = []

    @agents.function_tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        calls.append(city)
        return f"It is sunny in {city}."

    client = openai.AsyncOpenAI(
        base_url=served.v1,
        api_key="x",
        max_retries=0,
        default_headers={"x-spendgate-feature": feature, "x-spendgate-team": "agents"},
    )
    agents.set_tracing_disabled(True)
    agents.set_default_openai_client(client, use_for_tracing=False)
    agent = agents.Agent(
        name="weather", instructions="Answer with tools.", model="gpt-4o", tools=[get_weather]
    )

    async def run() -> Any:
        try:
            return await agents.Runner.run(agent, "Use get_weather to check Paris.")
        finally:
            await client.close()

    result = asyncio.run(run())
    assert calls and result.final_output
    rows = served.events(feature, 2)
    assert len(rows) == 2  # the call that asked for the tool, the one that answered
    for row in rows:
        assert row.endpoint == "responses" and row.team == "agents"
        assert_priced(row)


def test_langchain_chat_openai_with_responses_api(served: Served) -> None:
    lc = pytest.importorskip("langchain_openai")
    feature = unique("cli-langchain")
    llm = lc.ChatOpenAI(
        model="gpt-4o-mini",
        base_url=served.v1,
        api_key="x",
        use_responses_api=True,
        max_retries=0,
        default_headers={"x-spendgate-feature": feature},
    )
    answer = llm.invoke("Tell me about ledgers.")
    assert answer.text and answer.usage_metadata["input_tokens"] > 0
    streamed = "".join(chunk.text for chunk in llm.stream("And briefly about caches."))
    assert streamed
    rows = served.events(feature, 2)
    assert {r.stream for r in rows} == {False, True}
    for row in rows:
        assert row.endpoint == "responses"
        assert_priced(row)
