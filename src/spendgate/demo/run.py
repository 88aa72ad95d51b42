"""The demo's two passes: the same traffic through a real gateway as-is, then under the shipped
recommended policy, against one simulated upstream.

Each pass gets its own gateway and ledger, so the comparison is between two real bills, not
between a bill and an estimate. The optimized pass's ledger also carries spendgate's own
per-call accounting (baseline, savings by technique), which the report sets beside the
measured difference.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import aiohttp
import httpx2
import orjson
import yaml
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

from spendgate.config import simulated_settings
from spendgate.demo.traffic import DemoRequest
from spendgate.ledger import UsageEvent, open_ledger
from spendgate.serve import GatewayServer
from spendgate.server.app import Gateway

__all__ = ["Answer", "PassResult", "recommended_policy", "run_pass"]


def recommended_policy() -> dict[str, Any]:
    """The shipped policy (`spendgate/data/demo_policy.yaml`): config sections, as YAML."""
    text = (resources.files("spendgate") / "data" / "demo_policy.yaml").read_text("utf-8")
    policy: dict[str, Any] = yaml.safe_load(text)
    return policy


@dataclass
class Answer:
    status: int
    request_id: str | None
    cache: str | None
    text: str | None
    """The answer's text for non-streamed replies (what semantic hits are verified on)."""


@dataclass
class PassResult:
    name: str
    ledger_url: str
    answers: list[Answer]
    seconds: float
    events: list[UsageEvent] = field(default_factory=list)

    @property
    def statuses(self) -> dict[str, int]:
        return dict(Counter(str(a.status) for a in self.answers))


def _answer_text(body: Any) -> str | None:
    if not isinstance(body, dict):
        return None
    choices = body.get("choices")
    if isinstance(choices, list) and choices:
        message = choices[0].get("message") or {}
        return message.get("content") if isinstance(message.get("content"), str) else None
    content = body.get("content")
    if isinstance(content, list):
        return "".join(b.get("text", "") for b in content if isinstance(b, dict)) or None
    return None


async def _replay(
    url: str, work: list[DemoRequest], concurrency: int, progress: Progress | None, label: str
) -> list[Answer]:
    answers: list[Answer | None] = [None] * len(work)
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(len(work)):
        queue.put_nowait(i)
    task_id = progress.add_task(label, total=len(work)) if progress else None

    async def worker(session: aiohttp.ClientSession) -> None:
        while not queue.empty():
            i = queue.get_nowait()
            req = work[i]
            async with session.post(url + req.path, json=req.body, headers=req.headers) as resp:
                raw = await resp.read()
                text = None
                if not req.body.get("stream") and resp.status == 200:
                    text = _answer_text(orjson.loads(raw))
                answers[i] = Answer(
                    resp.status,
                    resp.headers.get("x-spendgate-request-id"),
                    resp.headers.get("x-spendgate-cache"),
                    text,
                )
            if progress is not None and task_id is not None:
                progress.advance(task_id)

    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    return [a for a in answers if a is not None]


def run_pass(
    name: str,
    upstream_url: str,
    folder: Path,
    work: list[DemoRequest],
    *,
    policy: dict[str, Any] | None,
    concurrency: int,
    console: Console,
    quiet: bool,
) -> PassResult:
    """One pass: a fresh gateway on its own ledger, the traffic replayed, the ledger read."""
    httpx2.delete(upstream_url + "/_sim/cache", timeout=10)  # the provider's prompt cache too
    ledger_url = f"sqlite:///{folder / f'{name}.db'}"
    settings = simulated_settings(
        upstream_url,
        storage={"ledger": ledger_url, "keys": f"sqlite:///{folder / f'{name}-keys.db'}"},
        **(policy or {}),
    )
    started = time.perf_counter()
    with GatewayServer(Gateway(settings)) as server:
        columns = (*Progress.get_default_columns()[:1], BarColumn(),
                   MofNCompleteColumn(), TimeElapsedColumn())  # fmt: skip
        with Progress(*columns, console=console, disable=quiet) as progress:
            answers = asyncio.run(_replay(server.url, work, concurrency, progress, name))
    seconds = time.perf_counter() - started
    store = open_ledger(ledger_url)
    try:
        events = list(store.events())
    finally:
        store.close()
    return PassResult(name, ledger_url, answers, seconds, events)
