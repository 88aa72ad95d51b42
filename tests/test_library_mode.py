"""Library mode: the SDKs drive the gateway in-process through httpx2 transports; calls land
in the same ledger, attributed by the client's `default_headers`."""

from __future__ import annotations

from pathlib import Path

import anthropic
import httpx2
import openai
import pytest

from conftest import assert_priced, gateway_settings, unique
from spendgate.config import Settings
from spendgate.ledger import UsageEvent, open_ledger
from spendgate.library import AsyncSpendgateTransport, SpendgateTransport
from spendgate.simulated import SimulatedUpstream


@pytest.fixture
def settings(sim: SimulatedUpstream, tmp_path: Path) -> Settings:
    return gateway_settings(sim, tmp_path)


def _rows(settings: Settings, feature: str) -> list[UsageEvent]:
    store = open_ledger(settings.storage.ledger)
    try:
        return list(store.events(filters={"feature": feature}))
    finally:
        store.close()


def test_sync_openai_client(settings: Settings) -> None:
    feature = unique("lib-sync")
    transport = SpendgateTransport(settings)
    client = openai.OpenAI(
        base_url="http://spendgate/v1",
        api_key="x",
        http_client=httpx2.Client(transport=transport),
        default_headers={"x-spendgate-feature": feature, "x-spendgate-team": "lib-team"},
        max_retries=0,
    )
    try:
        completion = client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "Say something useful."}]
        )
        assert completion.choices[0].message.content
        assert completion.usage is not None

        pieces = []
        usage = None
        for chunk in client.chat.completions.create(
            model="claude-sonnet-4",
            messages=[{"role": "user", "content": "Stream something useful."}],
            stream=True,
            stream_options={"include_usage": True},
        ):
            usage = chunk.usage or usage
            pieces.extend(c.delta.content or "" for c in chunk.choices)
        assert "".join(pieces).strip()
        assert usage is not None
    finally:
        client.close()  # closes the transport: graceful gateway shutdown, ledger flushed

    rows = _rows(settings, feature)
    assert len(rows) == 2
    by_model = {r.requested_model: r for r in rows}
    assert by_model["gpt-4o"].output_tokens == completion.usage.completion_tokens
    assert by_model["claude-sonnet-4"].stream
    assert by_model["claude-sonnet-4"].output_tokens == usage.completion_tokens
    for row in rows:
        assert row.team == "lib-team"
        assert_priced(row)


async def test_async_openai_client(settings: Settings) -> None:
    feature = unique("lib-async")
    transport = AsyncSpendgateTransport(settings)
    client = openai.AsyncOpenAI(
        base_url="http://spendgate/v1",
        api_key="x",
        http_client=httpx2.AsyncClient(transport=transport),
        default_headers={"x-spendgate-feature": feature, "x-spendgate-tenant": "acme"},
        max_retries=0,
    )
    try:
        completion = await client.chat.completions.create(
            model="claude-sonnet-4", messages=[{"role": "user", "content": "Say hi."}]
        )
        assert completion.choices[0].message.content
        stream = await client.chat.completions.create(
            model="gpt-4o",
            messages=[{"role": "user", "content": "Stream hi."}],
            stream=True,
        )
        text = ""
        async for chunk in stream:
            text += "".join(c.delta.content or "" for c in chunk.choices)
            assert chunk.usage is None
        assert text.strip()
        embedding = await client.embeddings.create(
            model="text-embedding-3-small", input="library mode"
        )
        assert len(embedding.data[0].embedding) == 1536
        transport.gateway.writer.flush(timeout=10)
        assert len(_rows(settings, feature)) == 3
    finally:
        await client.close()

    rows = _rows(settings, feature)
    assert sorted(r.requested_model for r in rows) == [
        "claude-sonnet-4",
        "gpt-4o",
        "text-embedding-3-small",
    ]
    for row in rows:
        assert row.tenant == "acme"
        assert not row.usage_estimated
        assert_priced(row)


def test_sync_anthropic_client(settings: Settings) -> None:
    feature = unique("lib-anthropic")
    transport = SpendgateTransport(settings)
    client = anthropic.Anthropic(
        base_url="http://spendgate",
        api_key="x",
        http_client=httpx2.Client(transport=transport),
        default_headers={"x-spendgate-feature": feature},
        max_retries=0,
    )
    try:
        message = client.messages.create(
            model="claude-sonnet-4",
            max_tokens=100,
            messages=[{"role": "user", "content": "Say hi."}],
        )
        with client.messages.stream(
            model="gpt-4o", max_tokens=100, messages=[{"role": "user", "content": "Hi?"}]
        ) as stream:
            final = stream.get_final_message()
    finally:
        client.close()
    rows = {r.requested_model: r for r in _rows(settings, feature)}
    assert len(rows) == 2
    assert rows["claude-sonnet-4"].output_tokens == message.usage.output_tokens
    assert rows["gpt-4o"].output_tokens == final.usage.output_tokens
    for row in rows.values():
        assert_priced(row)


def test_library_bad_input_is_an_sdk_error(settings: Settings) -> None:
    transport = SpendgateTransport(settings)
    client = openai.OpenAI(
        base_url="http://spendgate/v1",
        api_key="x",
        http_client=httpx2.Client(transport=transport),
        max_retries=0,
    )
    try:
        with pytest.raises(openai.NotFoundError) as info:
            client.chat.completions.create(
                model="no-such-model", messages=[{"role": "user", "content": "x"}]
            )
        assert info.value.code == "model_not_found"
        with pytest.raises(openai.BadRequestError) as bad:
            client.chat.completions.create(
                model="gpt-4o",
                messages=[{"role": "user", "content": "x"}],
                temperature=7,
            )
        assert bad.value.param == "temperature"
    finally:
        client.close()
    store = open_ledger(settings.storage.ledger)
    try:
        statuses = sorted(e.status for e in store.events())
    finally:
        store.close()
    assert statuses == [400, 404]
