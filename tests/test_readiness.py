"""Cold start (issue 17): tokenizers load in a worker thread after start-up, `/healthz`
answers 503 `starting` until they are loaded, and a call that arrives meanwhile waits for
them off the event loop (the loop keeps answering `/healthz`), then succeeds."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson

from conftest import gateway_settings
from spendgate.server.app import Gateway
from spendgate.simulated import SimulatedUpstream


async def _get(app: Gateway, path: str, body: bytes = b"", method: str = "GET") -> Any:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "path": path, "method": method, "headers": []}
    await app(scope, receive, send)
    status = sent[0]["status"]
    headers = dict(sent[0]["headers"])
    return status, headers, orjson.loads(b"".join(m.get("body", b"") for m in sent[1:]))


def test_healthz_says_starting_until_tokenizers_are_loaded(
    sim: SimulatedUpstream, tmp_path: Path
) -> None:
    gateway = Gateway(gateway_settings(sim, tmp_path))

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        gateway._warm = loop.create_future()  # what the lifespan starts: still loading
        status, headers, body = await _get(gateway, "/healthz")
        assert status == 503 and body["status"] == "starting"
        assert headers[b"retry-after"] == b"1"
        chat = orjson.dumps(
            {"model": "gpt-4o-mini", "max_tokens": 8,
             "messages": [{"role": "user", "content": "ready?"}]}
        )  # fmt: skip
        call = asyncio.ensure_future(_get(gateway, "/v1/chat/completions", chat, "POST"))
        await asyncio.sleep(0)  # the call starts and waits for the warm-up …
        status, _, body = await _get(gateway, "/healthz")  # … while the loop still answers
        assert status == 503 and not call.done()
        gateway._warm.set_result(["o200k"])
        status, _, body = await _get(gateway, "/healthz")
        assert status == 200 and body["status"] == "ok"
        status, _, body = await call
        assert status == 200, body
        await gateway.aclose()

    asyncio.run(scenario())
