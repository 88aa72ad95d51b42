"""`spendgate demo`: real prompts through a real gateway, twice — as written, then under the
shipped recommended policy — and the two bills side by side, with what each technique saved
and the guard-rails that say what it cost in quality. Nothing to configure, nothing left
behind (unless `--keep`).
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rich.console import Console

from spendgate.demo.report import compare, render
from spendgate.demo.run import recommended_policy, run_pass
from spendgate.demo.traffic import FEATURES, RATES, TENANTS, build_traffic, load_prompts
from spendgate.ledger import open_ledger, render_report, total
from spendgate.simulated import SimulatedUpstream

# The traffic names tests and scripts replay the demo with; the rest of the traffic model
# (`DemoRequest`, `Feature`, `RATES`) is in `spendgate.demo.traffic`.
__all__ = ["FEATURES", "TENANTS", "load_prompts", "requests_for", "run_demo"]


def requests_for(prompts: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, str], Any]]:
    """(path, headers, body) of the demo's calls, for tests and benches that replay them."""
    for req in build_traffic(prompts):
        yield req.path, req.headers, req.body


def _recommendations(ledger_url: str, n: int = 3) -> list[dict[str, Any]]:
    from spendgate.analytics.recommend import recommend
    from spendgate.analytics.traffic import load_traffic

    return [r.as_dict() for r in recommend(load_traffic(ledger_url))[:n]]


def _spend_views(ledger_url: str) -> dict[str, Any]:
    store = open_ledger(ledger_url, read_only=True)
    try:
        views = {dim: store.spend([dim]) for dim in ("feature", "team", "model", "day")}
        tenants = len(store.spend(["tenant"]))
        events = store.count()
    finally:
        store.close()
    out: dict[str, Any] = {
        f"by_{dim}": json.loads(render_report(rows, [dim], "json"))["rows"]
        for dim, rows in views.items()
    }
    out["tenants"] = tenants
    out["ledger_events"] = events
    out["total_cost_usd"] = format(total(views["feature"]).cost_usd, "f")
    return out


def run_demo(
    *,
    keep_serving: bool = False,
    as_json: bool = False,
    limit: int | None = None,
    concurrency: int = 16,
    keep: bool = False,
) -> dict[str, Any]:
    console = Console(stderr=True)
    prompts, source = load_prompts(limit)
    work = build_traffic(prompts)
    folder = Path(tempfile.mkdtemp(prefix="spendgate-demo-"))
    started = time.perf_counter()
    try:
        with SimulatedUpstream(latency="none") as sim:
            if not as_json:
                console.print(f"replaying {len(work)} calls ({len(prompts)} prompts, {source})")
            before = run_pass("baseline", sim.url, folder, work, policy=None,
                              concurrency=concurrency, console=console, quiet=as_json)  # fmt: skip
            after = run_pass("optimized", sim.url, folder, work, policy=recommended_policy(),
                             concurrency=concurrency, console=console, quiet=as_json)  # fmt: skip
        comparison = compare(work, before, after)
        summary: dict[str, Any] = {
            "prompts": len(prompts),
            "calls": len(work),
            "source": source,
            "rates": RATES,
            "statuses": {"baseline": before.statuses, "optimized": after.statuses},
            "seconds": round(time.perf_counter() - started, 1),
            "requests_per_second": round(2 * len(work) / (before.seconds + after.seconds), 1),
            "ledgers": str(folder) if keep or keep_serving else "(removed; --keep keeps them)",
            "ledger": after.ledger_url,
            **_spend_views(after.ledger_url),
            "baseline_cost_usd": comparison["baseline_usd"],
            "savings_usd": comparison["savings_usd"],
            "savings_by_technique": comparison["savings_by_technique"],
            "comparison": comparison,
            "recommendations": _recommendations(before.ledger_url),
        }
        if as_json:
            print(json.dumps(summary, indent=2))
        else:
            print(render(summary))
        if keep_serving:
            _serve(folder, console)
        return summary
    finally:
        if not (keep or keep_serving):
            shutil.rmtree(folder, ignore_errors=True)


def _serve(folder: Path, console: Console) -> None:
    """Keep a gateway up on the optimized ledger (with the recommended policy) to explore."""
    from spendgate.config import simulated_settings
    from spendgate.serve import GatewayServer
    from spendgate.server.app import Gateway

    with SimulatedUpstream(latency="realistic") as sim:
        settings = simulated_settings(
            sim.url,
            storage={"ledger": f"sqlite:///{folder / 'optimized.db'}",
                     "keys": f"sqlite:///{folder / 'optimized-keys.db'}"},
            **recommended_policy(),
        )  # fmt: skip
        with GatewayServer(Gateway(settings)) as server:
            console.print(f"\ngateway up at {server.url}/v1 (dashboard: {server.url}/dashboard)")
            console.print(f"ledgers in {folder}; Ctrl-C to stop")
            try:
                while True:
                    time.sleep(3600)
            except KeyboardInterrupt:
                pass
