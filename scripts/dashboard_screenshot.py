"""Take `docs/dashboard.png`: the dashboard of a gateway with a realistic ledger.

The ledger holds two weeks of synthetic history (written directly: a gateway cannot receive
calls in the past; shaped like the demo's five features, priced at list prices, with cache
hits and routed calls credited as the cache and routing stages would credit them) and today's
real demo replay through the gateway (the Chatbot Arena prompts of ../shared/data when
present). Two soft budgets, feature values and one alert webhook (a local receiver) are
configured so every panel has something to show. The history's calls carry system-prompt
measurements as accounting records them (`extra.system_tokens`, `extra.input_cost_nanos`),
with prompts of production-like length (the demo's own are a dozen tokens), so the
system-prompts panel has a feature worth caching.

    .venv/bin/python scripts/dashboard_screenshot.py [--out docs/dashboard.png] [--prompts 300]

Needs Debian's chromium (/usr/bin/chromium) and `pip install playwright` (no `playwright
install`: the system browser is used).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import sys
import tempfile
import threading
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from spendgate.call import Usage, to_nanos
from spendgate.config import simulated_settings
from spendgate.demo import FEATURES, TENANTS, load_prompts, requests_for
from spendgate.ledger import UsageEvent
from spendgate.pricing import PriceCatalog
from spendgate.serve import GatewayServer, free_port
from spendgate.server.app import Gateway
from spendgate.simulated import SimulatedUpstream

ROOT = Path(__file__).resolve().parent.parent
SERVED = {"claude-sonnet-4": "claude-sonnet-4-20250514",
          "claude-3-5-haiku": "claude-3-5-haiku-20241022"}  # fmt: skip
SYSTEM_TOKENS = {"support-chat": 1800, "code-assistant": 2600, "search-answers": 450,
                 "doc-summarizer": 300, "email-drafts": 900}  # fmt: skip
"""Synthetic system-prompt length per demo feature, tokens."""
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]  # fmt: skip


def _list_price(model: str, input_tokens: int, output_tokens: int) -> tuple[int, int]:
    """(total, input side) of a call at list price, nanos."""
    cost = PriceCatalog.default().cost(model, Usage(input_tokens=input_tokens,
                                                    output_tokens=output_tokens))  # fmt: skip
    assert cost is not None, model
    return to_nanos(cost.total), to_nanos(cost.input)


def history(days: int, per_day: int, seed: int = 11) -> list[UsageEvent]:
    rng = random.Random(seed)
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    weights = [f.weight for f in FEATURES]
    out = []
    for d in range(1, days + 1):
        day = today - timedelta(days=d)
        optimized = d <= days // 2  # optimizations switched on a week ago
        for _ in range(int(per_day * (1 + (days - d) / days))):
            f = rng.choices(FEATURES, weights)[0]
            tenant = TENANTS[min(int(rng.paretovariate(1.2)) - 1, len(TENANTS) - 1)]
            system = SYSTEM_TOKENS.get(f.name, 0)
            input_tokens = system + rng.randrange(200, 3000)
            output_tokens = rng.randrange(50, 800)
            served = SERVED.get(f.model, f.model)
            baseline, input_cost = _list_price(served, input_tokens, output_tokens)
            cost, savings, cache, route = baseline, {}, "miss" if optimized else None, None
            if optimized and rng.random() < 0.18:
                cost, input_cost, savings, cache = 0, 0, {"cache": baseline}, "hit"
            elif optimized and f.model == "gpt-4o" and rng.random() < 0.45:
                served = "gpt-4o-mini"
                cost, input_cost = _list_price(served, input_tokens, output_tokens)
                savings = {"routing": baseline - cost}
                route = {"requested": "gpt-4o", "served": "gpt-4o-mini", "mode": "active"}
            # What accounting records per call (a cache hit never reached a provider).
            extra: dict[str, Any] = (
                {"system_tokens": system, "input_cost_nanos": input_cost} if cost else {}
            )
            out.append(UsageEvent(
                request_id="hist-" + uuid.uuid4().hex,
                ts=(day + timedelta(seconds=rng.uniform(0, 86_399))).timestamp(),
                endpoint="messages" if f.api == "anthropic" else "chat", api=f.api,
                requested_model=f.model, served_model=served, provider="simulated",
                status=200 if rng.random() > 0.01 else 502, latency_ms=rng.uniform(200, 3000),
                feature=f.name, team=f.team, use_case=f.use_case, tenant=tenant,
                user=f"{tenant}-u{rng.randrange(40)}",
                input_tokens=input_tokens, output_tokens=output_tokens,
                cost_nanos=cost, baseline_nanos=baseline, savings=savings, cache=cache,
                route=route, extra=extra,
            ))  # fmt: skip
    return out


async def replay(url: str, n: int) -> None:
    work = list(requests_for(load_prompts(n)[0]))
    sem = asyncio.Semaphore(8)
    async with aiohttp.ClientSession() as session:

        async def one(path: str, headers: dict[str, str], body: dict[str, Any]) -> None:
            async with sem, session.post(url + path, json=body, headers=headers) as r:
                await r.read()

        await asyncio.gather(*(one(*w) for w in work))


class Receiver:
    """A local webhook receiver, so the alerts panel shows real deliveries."""

    def __init__(self) -> None:
        self.port = free_port()
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        threading.Thread(target=self._run, daemon=True).start()
        self._ready.wait()

    def _run(self) -> None:
        async def hook(request: web.Request) -> web.Response:
            await request.read()
            return web.json_response({"ok": True})

        async def main() -> None:
            app = web.Application()
            app.router.add_post("/hook", hook)
            runner = web.AppRunner(app)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", self.port).start()
            self._ready.set()
            await asyncio.Event().wait()

        asyncio.run(main())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=str(ROOT / "docs" / "dashboard.png"))
    ap.add_argument("--prompts", type=int, default=300)
    ap.add_argument("--days", type=int, default=14)
    ap.add_argument("--width", type=int, default=1600, help="viewport width in CSS pixels")
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    tmp = Path(tempfile.mkdtemp(prefix="spendgate-shot-"))
    os.environ["SPENDGATE_SHOT_ADMIN_KEY"] = key = "shot-" + uuid.uuid4().hex
    receiver = Receiver()
    with SimulatedUpstream(latency="none") as sim:
        settings = simulated_settings(
            sim.url,
            storage={"ledger": f"sqlite:///{tmp / 'ledger.db'}",
                     "keys": f"sqlite:///{tmp / 'keys.db'}"},
            server={"admin_key_env": "SPENDGATE_SHOT_ADMIN_KEY"},
            budgets={"budgets": [
                {"name": "support", "scope": {"team": "support"}, "limit_usd": "0.25",
                 "period": "day", "mode": "soft"},
                {"name": "growth", "scope": {"team": "growth"}, "limit_usd": "0.05",
                 "period": "day", "mode": "soft"},
                {"name": "platform", "scope": {"team": "platform"}, "limit_usd": "2",
                 "period": "day", "mode": "hard"},
            ]},
            features={"support-chat": {"revenue_usd_per_month": 40},
                      "code-assistant": {"revenue_usd_per_month": 5},
                      "faq-answers": {"value_usd_per_month": 12}},
            alerts={"webhooks": [{"url": f"http://127.0.0.1:{receiver.port}/hook",
                                  "format": "slack"}],
                    "check_interval_s": 3600,
                    "anomaly": {"min_spend_usd": "0.05", "scopes": ["feature", "team"]}},
        )  # fmt: skip
        gateway = Gateway(settings)
        gateway.store.write_batch(history(args.days, 60))
        server = GatewayServer(gateway).start()
        try:
            asyncio.run(replay(server.url, args.prompts))
            gateway.writer.flush(timeout=30)
            alerts = gateway.stage_context.alerts
            asyncio.run_coroutine_threadsafe(alerts.check(), alerts.loop).result(60)
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
                page = browser.new_page(viewport={"width": args.width, "height": 1000},
                                        device_scale_factor=1)  # fmt: skip
                page.goto(f"{server.url}/dashboard?key={key}&since=30d")
                page.wait_for_function("() => document.body.dataset.state === 'ready'")
                page.screenshot(path=args.out, full_page=True)
                browser.close()
        finally:
            server.stop()
            shutil.rmtree(tmp, ignore_errors=True)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
