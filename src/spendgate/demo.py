"""`spendgate demo`: real prompts through a real gateway to the simulated upstream, then a
cost report — the whole product in under a minute, with nothing to configure.

Traffic: Chatbot Arena prompts from `../shared/data/traffic/` when present (CC BY 4.0,
lm-sys/FastChat), else the small sample bundled in `spendgate/data/`. Each prompt is given a
feature (with its team, use case, model and wire format), a tenant drawn from a skewed
distribution (a few big customers, a long tail) and a user, deterministically from its id.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import json
import os
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import aiohttp
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

from spendgate.config import simulated_settings
from spendgate.ledger import SpendRow, open_ledger, render_report, total
from spendgate.providers.simulated import SimulatedUpstream
from spendgate.serve import GatewayServer
from spendgate.server.app import Gateway

__all__ = ["FEATURES", "Feature", "load_prompts", "run_demo"]


@dataclass(frozen=True)
class Feature:
    name: str
    team: str
    use_case: str
    model: str
    api: str
    """Wire format the app uses: `openai` (/v1/chat/completions) or `anthropic` (/v1/messages)."""
    system: str
    weight: int


FEATURES: tuple[Feature, ...] = (
    Feature("support-chat", "support", "chat", "gpt-4o", "openai",
            "You are a patient support agent for a SaaS product. Answer clearly.", 30),
    Feature("search-answers", "growth", "chat", "gpt-4o-mini", "openai",
            "Answer the user's question in a few sentences.", 25),
    Feature("code-assistant", "platform", "chat", "claude-sonnet-4", "anthropic",
            "You are a senior engineer. Give working code and explain briefly.", 20),
    Feature("doc-summarizer", "platform", "summarization", "claude-3-5-haiku", "openai",
            "Summarize the user's text in at most five bullet points.", 15),
    Feature("email-drafts", "growth", "summarization", "o3-mini", "openai",
            "Draft a concise, friendly email from the user's notes.", 10),
)  # fmt: skip

TENANTS = tuple(f"tenant-{name}" for name in (
    "acme", "globex", "initech", "umbrella", "hooli", "stark", "wayne", "wonka",
    "tyrell", "cyberdyne", "soylent", "aperture",
))  # fmt: skip


def _shared_traffic() -> Path | None:
    root = os.environ.get("SPENDGATE_SHARED")
    candidates = [Path(root) / "data" / "traffic"] if root else []
    here = Path.cwd()
    candidates += [p / "shared" / "data" / "traffic" for p in (here, *here.parents)]
    for folder in candidates:
        files = sorted(folder.glob("*.jsonl.gz")) if folder.is_dir() else []
        if files:
            return files[0]
    return None


def load_prompts(limit: int | None = None) -> tuple[list[dict[str, Any]], str]:
    """Prompts as `{"id", "turns"}`, and where they came from."""
    path = _shared_traffic()
    rows: list[dict[str, Any]] = []
    if path is not None:
        with gzip.open(path, "rt", encoding="utf-8") as fh:
            rows = [json.loads(line) for line in fh if line.strip()]
        source = str(path)
    else:
        sample = resources.files("spendgate") / "data" / "sample_prompts.jsonl"
        rows = [json.loads(line) for line in sample.read_text().splitlines() if line.strip()]
        source = "bundled sample (spendgate/data/sample_prompts.jsonl)"
    rows = [r for r in rows if r.get("turns")]
    return (rows[:limit] if limit else rows), source


def _pick(key: str, salt: str, n: int) -> int:
    return int.from_bytes(hashlib.blake2b((salt + key).encode(), digest_size=8).digest(), "big") % n


def _feature_for(prompt_id: str) -> Feature:
    point = _pick(prompt_id, "feature", sum(f.weight for f in FEATURES))
    for feature in FEATURES:
        if point < feature.weight:
            return feature
        point -= feature.weight
    return FEATURES[-1]


def _tenant_for(prompt_id: str) -> str:
    # Zipf-like: tenant k drawn with weight 1/(k+1).
    weights = [1 / (k + 1) for k in range(len(TENANTS))]
    point = _pick(prompt_id, "tenant", 10_000) / 10_000 * sum(weights)
    for tenant, w in zip(TENANTS, weights, strict=True):
        if point < w:
            return tenant
        point -= w
    return TENANTS[-1]


Request = tuple[str, dict[str, str], dict[str, Any]]


def requests_for(prompts: list[dict[str, Any]]) -> Iterator[Request]:
    """(path, headers, body) for each prompt."""
    for row in prompts:
        pid = str(row["id"])
        feature = _feature_for(pid)
        tenant = _tenant_for(pid)
        headers = {
            "x-spendgate-feature": feature.name,
            "x-spendgate-team": feature.team,
            "x-spendgate-use-case": feature.use_case,
            "x-spendgate-tenant": tenant,
            "x-spendgate-user": f"{tenant}-u{_pick(pid, 'user', 40)}",
        }
        turns = [str(t) for t in row["turns"]][:4]
        history: list[dict[str, Any]] = []
        for i, turn in enumerate(turns):
            history.append({"role": "user", "content": turn})
            if i < len(turns) - 1:
                history.append({"role": "assistant", "content": "(earlier answer)"})
        stream = _pick(pid, "stream", 4) == 0
        if feature.api == "anthropic":
            body: dict[str, Any] = {
                "model": feature.model,
                "system": feature.system,
                "messages": history,
                "max_tokens": 1024,
                "stream": stream,
            }
            yield "/v1/messages", headers, body
        else:
            body = {
                "model": feature.model,
                "messages": [{"role": "system", "content": feature.system}, *history],
                "stream": stream,
            }
            yield "/v1/chat/completions", headers, body


async def _replay(
    url: str,
    work: list[tuple[str, dict[str, str], dict[str, Any]]],
    concurrency: int,
    progress: Progress | None,
) -> dict[str, int]:
    statuses: dict[str, int] = {}
    queue: asyncio.Queue[tuple[str, dict[str, str], dict[str, Any]]] = asyncio.Queue()
    for item in work:
        queue.put_nowait(item)
    task_id = progress.add_task("replaying", total=len(work)) if progress else None

    async def worker(session: aiohttp.ClientSession) -> None:
        while not queue.empty():
            path, headers, body = queue.get_nowait()
            async with session.post(url + path, json=body, headers=headers) as resp:
                await resp.read()
                statuses[str(resp.status)] = statuses.get(str(resp.status), 0) + 1
            if progress is not None and task_id is not None:
                progress.advance(task_id)

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    return statuses


def _rows_json(rows: list[SpendRow], by: list[str]) -> list[dict[str, Any]]:
    rendered: list[dict[str, Any]] = json.loads(render_report(rows, by, "json"))["rows"]
    return rendered


def run_demo(
    *,
    keep_serving: bool = False,
    as_json: bool = False,
    limit: int | None = None,
    concurrency: int = 16,
) -> dict[str, Any]:
    console = Console(stderr=True)
    prompts, source = load_prompts(limit)
    work = list(requests_for(prompts))
    tmp = Path(tempfile.mkdtemp(prefix="spendgate-demo-"))
    ledger_url = f"sqlite:///{tmp / 'ledger.db'}"
    started = time.perf_counter()
    with SimulatedUpstream(latency="none") as sim:
        settings = simulated_settings(
            sim.url,
            storage={"ledger": ledger_url, "keys": f"sqlite:///{tmp / 'keys.db'}"},
        )
        server = GatewayServer(Gateway(settings)).start()
        try:
            if not as_json:
                console.print(f"gateway {server.url}/v1 → simulated upstream {sim.url}")
                console.print(f"replaying {len(work)} prompts from {source}")
            columns = (*Progress.get_default_columns()[:1], BarColumn(),
                       MofNCompleteColumn(), TimeElapsedColumn())  # fmt: skip
            with Progress(*columns, console=console, disable=as_json) as progress:
                statuses = asyncio.run(_replay(server.url, work, concurrency, progress))
            elapsed = time.perf_counter() - started
            if keep_serving:
                console.print(f"\ngateway up at {server.url}/v1 — Ctrl-C to stop")
                console.print(f"try: spendgate report --ledger {ledger_url} --by feature,model")
                try:
                    while True:
                        time.sleep(3600)
                except KeyboardInterrupt:
                    pass
        finally:
            server.stop()
    store = open_ledger(ledger_url)
    try:
        views = {dim: store.spend([dim]) for dim in ("feature", "team", "model", "day")}
        tenants = store.spend(["tenant"])
        events = store.count()
    finally:
        store.close()
    grand = total(views["feature"])
    summary: dict[str, Any] = {
        "prompts": len(work),
        "source": source,
        "ledger": ledger_url,
        "ledger_events": events,
        "statuses": statuses,
        "seconds": round(elapsed, 2),
        "requests_per_second": round(len(work) / elapsed, 1) if elapsed else None,
        "total_cost_usd": format(grand.cost_usd, "f"),
        "tenants": len(tenants),
        **{f"by_{dim}": _rows_json(rows, [dim]) for dim, rows in views.items()},
    }
    if as_json:
        print(json.dumps(summary, indent=2))
        return summary
    for dim, rows in views.items():
        print(f"\n== spend by {dim} ==")
        print(render_report(rows, [dim], "table"))
    print(
        f"{len(work)} calls in {elapsed:.1f}s, {events} ledger events, {len(tenants)} tenants, "
        f"statuses {statuses}; total ${grand.cost_usd:f}\nledger: {ledger_url}"
    )
    return summary
