"""What do the prefix stage and the resilience machinery cost per call, and what does
prompt caching save on a realistic repeated-prefix workload?

    .venv/bin/python bench/prefix.py            # table
    .venv/bin/python bench/prefix.py --json     # JSON on stdout

1. `plan_breakpoints` time (mean CPU, and wall p50/p99 — the p99 tail on a shared loaded
   machine is preemption, not work) on three bodies: a one-shot call with a
   ~2k-token system prompt (Anthropic format), the same in OpenAI format (translated to find
   positions), and a 10-turn conversation. Bodies are made unique per iteration (a fresh
   user turn), so tokenizer caches only help where they would in production (the system).
2. Savings end to end: a simulated upstream and a gateway with `prefix.enabled`, N calls of
   one feature sharing a ~2k-token system prompt with distinct questions, to Claude Sonnet 4
   through both client formats; the ledger's actual vs baseline cost gives the saving.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx2

from spendgate.cache.config import PrefixConfig
from spendgate.cache.prefix import plan_breakpoints
from spendgate.config import simulated_settings
from spendgate.ledger import open_ledger
from spendgate.serve import GatewayServer
from spendgate.server.app import Gateway
from spendgate.simulated import SimulatedUpstream

MODEL = "claude-sonnet-4-20250514"
_WORDS = [
    "ledger", "invoice", "tenant", "budget", "routing",
    "latency", "provider", "refund", "policy", "audit",
]  # fmt: skip


def text(seed: str, words: int) -> str:
    return f"{seed}. " + " ".join(_WORDS[(i * 7) % len(_WORDS)] for i in range(words))


def _time(fn: Any, n: int) -> dict[str, float]:
    fn(-1)  # warm-up: the first call loads the tokenizers (seconds, once per process)
    samples = []
    cpu = time.process_time()
    for i in range(n):
        started = time.perf_counter()
        fn(i)
        samples.append((time.perf_counter() - started) * 1e6)
    cpu_mean = (time.process_time() - cpu) / n * 1e6
    samples.sort()
    return {
        "n": n,
        "cpu_mean_us": round(cpu_mean, 1),
        "p50_us": round(statistics.median(samples), 1),
        "p99_us": round(samples[int(n * 0.99) - 1], 1),
    }


def planner(n: int) -> dict[str, Any]:
    cfg = PrefixConfig(enabled=True)
    system = text("system", 1700)
    history: list[dict[str, Any]] = []
    for t in range(10):
        history += [
            {"role": "user", "content": text(f"q{t}", 120)},
            {"role": "assistant", "content": text(f"a{t}", 150)},
        ]

    def anthropic_one_shot(i: int) -> None:
        body = {"system": system, "messages": [{"role": "user", "content": f"question {i}"}]}
        plan_breakpoints(body, "anthropic", MODEL, cfg)

    def openai_one_shot(i: int) -> None:
        body = {"messages": [{"role": "system", "content": system},
                             {"role": "user", "content": f"question {i}"}]}  # fmt: skip
        plan_breakpoints(body, "openai", MODEL, cfg)

    def conversation(i: int) -> None:
        msgs = [*history, {"role": "user", "content": f"follow-up {i}"}]
        plan_breakpoints({"system": system, "messages": msgs}, "anthropic", MODEL, cfg)

    return {
        "anthropic_one_shot": _time(anthropic_one_shot, n),
        "openai_one_shot": _time(openai_one_shot, n),
        "conversation_10_turns": _time(conversation, n),
    }


def savings(calls: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    with SimulatedUpstream(latency="none") as sim, tempfile.TemporaryDirectory() as tmp:
        ledger = f"sqlite:///{Path(tmp) / 'ledger.db'}"
        settings = simulated_settings(
            sim.url,
            storage={"ledger": ledger, "keys": f"sqlite:///{Path(tmp) / 'keys.db'}"},
            prefix={"enabled": True},
        )
        gateway = Gateway(settings)
        with GatewayServer(gateway) as server, httpx2.Client(timeout=60) as http:
            for api in ("anthropic", "openai"):
                system = text(uuid.uuid4().hex, 1700)
                feature = f"bench-{api}"
                for i in range(calls):
                    question = f"Question {i}: which region holds archive {i}?"
                    if api == "anthropic":
                        url, body = server.url + "/v1/messages", {
                            "model": "claude-sonnet-4", "max_tokens": 64, "system": system,
                            "messages": [{"role": "user", "content": question}]}  # fmt: skip
                    else:
                        url, body = server.url + "/v1/chat/completions", {
                            "model": "claude-sonnet-4", "max_tokens": 64,
                            "messages": [{"role": "system", "content": system},
                                         {"role": "user", "content": question}]}  # fmt: skip
                    r = http.post(url, json=body, headers={"x-spendgate-feature": feature})
                    r.raise_for_status()
            gateway.writer.flush(timeout=30)
        store = open_ledger(ledger, create=False)
        for api in ("anthropic", "openai"):
            events = list(store.events(filters={"feature": f"bench-{api}"}))
            cost = sum(e.cost_nanos or 0 for e in events)
            baseline = sum(e.baseline_nanos or 0 for e in events)
            inp = sum(e.input_tokens for e in events)
            out[api] = {
                "calls": len(events),
                "input_tokens": inp,
                "cache_read_tokens": sum(e.cache_read_tokens for e in events),
                "hit_ratio": round(sum(e.cache_read_tokens for e in events) / inp, 4),
                "cost_usd": format(cost / 1e9, ".6f"),
                "baseline_usd": format(baseline / 1e9, ".6f"),
                "saved_share_of_total": round(1 - cost / baseline, 4),
            }
        store.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("-n", type=int, default=300, help="planner iterations per body")
    parser.add_argument("--calls", type=int, default=20, help="gateway calls per client format")
    args = parser.parse_args()
    result = {
        "load_average_1m": round(os.getloadavg()[0], 2),
        "planner": planner(args.n),
        "savings": savings(args.calls),
    }
    if args.json:
        json.dump(result, sys.stdout, indent=2)
        print()
        return
    print(f"load average (1 min) at the start: {result['load_average_1m']}")
    print("plan_breakpoints, µs per call (single thread):")
    for name, r in result["planner"].items():
        print(
            f"  {name:<24} cpu {r['cpu_mean_us']:>7.1f}   wall p50 {r['p50_us']:>8.1f}"
            f"   p99 {r['p99_us']:>8.1f}   (n={r['n']})"
        )
    print("repeated ~2k-token system prompt, claude-sonnet-4, through the gateway:")
    for api, r in result["savings"].items():
        print(
            f"  {api:<10} {r['calls']} calls  hit ratio {r['hit_ratio']:.1%}  "
            f"cost ${r['cost_usd']} vs baseline ${r['baseline_usd']}  "
            f"saved {r['saved_share_of_total']:.1%} of the total"
        )


if __name__ == "__main__":
    main()
