"""Traffic for the simulator and recommendations: read from a ledger or a JSONL of requests,
or generated from the shared real data for tests and demos.

The generator mixes real prompts (`traffic/`), real paraphrase pairs (`cache/`, so some
calls repeat in other words) and prompts of known difficulty (`routing/`), spread over
features, tenants and a daily cycle (more calls in working hours).
"""

from __future__ import annotations

import gzip
import json
import math
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from spendgate.analytics.simulate import TrafficRecord
from spendgate.ledger import open_ledger
from spendgate.tokens import count_openai_request, count_text

__all__ = ["generate_traffic", "load_traffic", "read_jsonl", "record_from_request"]


def read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                yield json.loads(line)


def record_from_request(row: dict[str, Any], default_output: int = 250) -> TrafficRecord:
    """One JSONL request row (`body`, `tags`, optional `ts`, `output_tokens`, `answer`) as a
    record that keeps its body, so the simulator replays it through the real code."""
    tags = row.get("tags") or {}
    body = row.get("body") or row
    model = str(body.get("model") or row.get("model") or "gpt-4o")
    messages = body.get("messages")
    prompt = row.get("prompt")
    if messages is None:
        messages = [{"role": "user", "content": str(prompt or "")}]
    if prompt is None:
        users = [m for m in messages if isinstance(m, dict) and m.get("role") == "user"]
        content = users[-1].get("content") if users else ""
        prompt = content if isinstance(content, str) else json.dumps(content)
    input_tokens = row.get("input_tokens") or count_openai_request(model, {"messages": messages})
    output = row.get("output_tokens")
    if output is None and isinstance(row.get("answer"), str):
        output = count_text(model, row["answer"])
    request = dict(body) if isinstance(body, dict) and "messages" in body else None
    if request is not None:
        request.setdefault("model", model)
    user = tags.get("user") or row.get("user")
    return TrafficRecord(
        feature=str(tags.get("feature") or row.get("feature") or "(none)"),
        tenant=str(tags.get("tenant") or row.get("tenant") or "(none)"),
        model=model,
        input_tokens=int(input_tokens),
        output_tokens=int(output if output is not None else default_output),
        ts=float(row.get("ts") or 0.0),
        prompt=prompt,
        body=request,
        api="anthropic" if row.get("api") == "anthropic" else "openai",
        user=str(user) if user else None,
        request_id=row.get("request_id"),
    )


def _stored_request(extra: dict[str, Any] | None, model: str) -> dict[str, Any] | None:
    """The request an operator chose to store with the event (`extra.request`: the body;
    or `extra.messages` / `extra.prompt`), else None: the ledger keeps fingerprints only."""
    if not extra:
        return None
    request = extra.get("request")
    if isinstance(request, dict) and isinstance(request.get("messages"), list):
        return {"model": model, **request}
    messages = extra.get("messages")
    if isinstance(messages, list):
        return {"model": model, "messages": messages}
    prompt = extra.get("prompt")
    if isinstance(prompt, str):
        return {"model": model, "messages": [{"role": "user", "content": prompt}]}
    return None


def _system_tokens(extra: dict[str, Any] | None) -> int:
    value = (extra or {}).get("system_tokens")
    return int(value) if isinstance(value, int | float) else 0


def load_traffic(source: str, *, default_output_tokens: int = 250) -> list[TrafficRecord]:
    """Records from a ledger URL (`sqlite:///…`, `postgresql://…`, a `.db` path) or a JSONL
    (optionally gzipped) of requests with tags."""
    path = Path(source)
    if source.endswith((".jsonl", ".jsonl.gz", ".json.gz")) and path.exists():
        return [record_from_request(row, default_output_tokens) for row in read_jsonl(path)]
    store = open_ledger(source, create=False, read_only=True)
    try:
        return [
            TrafficRecord(
                feature=e.feature or "(none)",
                tenant=e.tenant or "(none)",
                model=e.requested_model,
                input_tokens=e.input_tokens,
                output_tokens=e.output_tokens,
                ts=e.ts,
                fingerprint=e.prompt_fingerprint,
                cache_read_tokens=e.cache_read_tokens,
                body=_stored_request(e.extra, e.requested_model),
                api=e.api,
                user=e.user,
                request_id=e.request_id,
                system_tokens=_system_tokens(e.extra),
                stream=e.stream,
                latency_ms=e.latency_ms,
                batch=(e.extra or {}).get("service_tier") == "batch",
            )
            for e in store.events()
            if e.status < 400
        ]
    finally:
        store.close()


FEATURE_MIX: tuple[tuple[str, str, float], ...] = (
    ("support-chat", "gpt-4o", 0.35),
    ("search-answers", "gpt-4o", 0.30),
    ("code-assistant", "claude-sonnet-4", 0.20),
    ("doc-summarizer", "gpt-4o", 0.15),
)


def generate_traffic(
    shared: Path,
    *,
    calls: int = 2_000,
    days: int = 7,
    repeat_share: float = 0.25,
    paraphrase_share: float = 0.10,
    tenants: int = 12,
    seed: int = 7,
    start_ts: float = 1_790_000_000.0,
) -> list[dict[str, Any]]:
    """Requests (JSONL rows) with tags and timestamps, from the shared real data."""
    rng = random.Random(seed)
    prompts = [
        r["turns"][0]
        for r in read_jsonl(shared / "data/traffic/arena_prompts.jsonl.gz")
        if r.get("turns")
    ]
    pairs = [
        (r["q1"], r["q2"])
        for r in read_jsonl(shared / "data/cache/qqp_pairs.jsonl.gz")
        if r.get("duplicate")
    ][:5_000]
    routing = [
        r["prompt"]
        for _, r in zip(
            range(3_000),
            read_jsonl(shared / "data/routing/routellm_gpt4_vs_mixtral.jsonl.gz"),
            strict=False,
        )
    ]
    pool = prompts + routing
    second = dict(pairs)

    def pair_of(p: str) -> list[tuple[str, str]]:
        q2 = second.get(p)
        return [(p, q2)] if q2 is not None else []

    issued: list[tuple[str, str, str]] = []
    rows: list[dict[str, Any]] = []
    for i in range(calls):
        day = i * days // calls
        # Daily cycle: calls cluster around 14:00 UTC.
        hour = min(23.99, max(0.0, rng.gauss(14, 3.5)))
        ts = start_ts + day * 86_400 + hour * 3_600 + rng.random()
        feature, model, _ = rng.choices(FEATURE_MIX, weights=[w for *_, w in FEATURE_MIX])[0]
        tenant = f"tenant-{min(tenants - 1, int(rng.paretovariate(1.2)) - 1)}"
        roll = rng.random()
        if issued and roll < repeat_share:
            feature, tenant, prompt = rng.choice(issued)
        elif roll < repeat_share + paraphrase_share:
            # Half the time a recent question comes back in other words, from the same
            # tenant and feature (the people who ask it); otherwise a new question that
            # may be paraphrased later.
            recent = [(f, t, q2) for f, t, p in issued[-200:] for q1, q2 in pair_of(p)]
            if recent and rng.random() < 0.5:
                feature, tenant, prompt = rng.choice(recent)
            else:
                prompt = rng.choice(pairs)[0]
        else:
            prompt = rng.choice(pool)
        issued.append((feature, tenant, prompt))
        model = dict((f, m) for f, m, _ in FEATURE_MIX)[feature]
        out = int(max(16, min(1500, rng.lognormvariate(math.log(220), 0.6))))
        rows.append(
            {
                "ts": ts,
                "tags": {"feature": feature, "tenant": tenant},
                "body": {"model": model, "messages": [{"role": "user", "content": prompt}]},
                "output_tokens": out,
            }
        )
    return rows
