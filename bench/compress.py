"""Compression speed and quality on the shared data: one core, wall and CPU time.

    .venv/bin/python bench/compress.py [--limit N] [--json]

Prints, per dataset and ratio, achieved ratio, answer retention (held-out NQ split; all of
QMSum) and the time per 1k input tokens of `compress_text` (wall clock and thread CPU),
plus the tail (p99) of per-request wall time. Skips a dataset that is absent.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from spendgate.tokens import count_text
from spendgate.trim.compress import compress_text
from spendgate.trim.evaluate import in_split, load_rows, retention
from spendgate.trim.spans import compression_counter

DATA = Path("/work/shared/data/compression")


def run(name: str, rows: list[dict[str, Any]], ratio: float, model: str) -> dict[str, Any]:
    count, _ = compression_counter(model)
    compress_text(rows[0]["context"], rows[0]["question"], ratio, count)  # warm-up
    wall = cpu = 0.0
    per_req: list[float] = []
    before = after = 0
    kept = 0.0
    for row in rows:
        w0, c0 = time.perf_counter(), time.thread_time()
        res = compress_text(row["context"], row["question"], ratio, count)
        dw = time.perf_counter() - w0
        wall += dw
        cpu += time.thread_time() - c0
        tokens = count_text(model, row["context"])
        per_req.append(dw * 1000)
        before += tokens
        after += count_text(model, res.text)
        kept += retention(row, res.text)
    per_req.sort()
    k = before / 1000
    return {
        "data": name,
        "model": model,
        "n": len(rows),
        "target_ratio": round(ratio, 4),
        "achieved_ratio": round(after / before, 4),
        "answer_retention": round(kept / len(rows), 4),
        "wall_ms_per_1k_tokens": round(wall * 1000 / k, 3),
        "cpu_ms_per_1k_tokens": round(cpu * 1000 / k, 3),
        "p99_ms_per_request": round(per_req[min(len(per_req) - 1, int(0.99 * len(per_req)))], 2),
        "mean_tokens": round(before / len(rows)),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    results = []
    nq = DATA / "nq_open_10docs.jsonl.gz"
    qm = DATA / "qmsum_test.jsonl.gz"
    if nq.exists():
        rows = [r for r in load_rows(nq) if in_split(r, "held-out")][: args.limit]
        for ratio in (1 / 3, 1 / 5):
            results.append(run("nq held-out", rows, ratio, "gpt-4o"))
        results.append(run("nq held-out", rows, 1 / 3, "claude-sonnet-4"))
    if qm.exists():
        rows = load_rows(qm, limit=args.limit)
        for ratio in (1 / 3, 1 / 5):
            results.append(run("qmsum", rows, ratio, "gpt-4o"))
    if args.json:
        print(json.dumps(results))
        return
    for r in results:
        print(
            f"{r['data']:<12} {r['model']:<16} ratio {r['target_ratio']:.3f} → "
            f"{r['achieved_ratio']:.3f}  retention {r['answer_retention']:.3f}  "
            f"{r['wall_ms_per_1k_tokens']:.2f} ms/1k wall, {r['cpu_ms_per_1k_tokens']:.2f} cpu, "
            f"p99 {r['p99_ms_per_request']:.1f} ms/req (mean {r['mean_tokens']} tok)"
        )


if __name__ == "__main__":
    main()
