"""Semantic cache lookup latency (embed + search + verify) at 100k and 1M entries, one core,
and the memory a process holds with the verifier loaded.

    .venv/bin/python bench/cache_lookup.py [--sizes 100000,1000000] [--queries 2000] [--json]
        [--verifier cross-encoder|features] [--embedder static|minilm] [--verify-top 1]

The default is the shipped configuration: the cross-encoder verifier on the top candidate.
`rss_mb`: a fresh process that imports the gateway's server, loads the semantic matcher
(static embedder, index, cross-encoder) and runs one lookup (VmRSS, /proc); the
`rss_after_mb` of this process includes the 100k/1M-entry indexes.

Entries: the distinct QQP questions (../shared/data/cache/) minus the queries, embedded
with the shipped static embedder. Past that count, further entries are copies of real entries'
vectors with a little Gaussian noise (re-normalised) that keep their source text, so the
index has the requested size while verification still runs on real text. Queries are the
held-out q1 questions. Each lookup is timed end to end through `SemanticMatcher.match`.
With the default `minilm` embedder, the stored entries' MiniLM vectors are what the stage
computes when it stores an entry: here they are computed before the timed loop for every
entry a query retrieves (an untimed pass), while each query's own MiniLM embedding (when the
cascade needs it) is inside the timed lookup. `--embedder static` measures the static
verifier alone. Single-threaded: OMP/BLAS threads are pinned to 1.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "cache" / "qqp_pairs.jsonl.gz"


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def _fresh_rss(verifier: str) -> float:
    """VmRSS of a new process with the gateway's server imported and the semantic matcher
    loaded (one lookup run), in MB."""
    import subprocess

    code = (
        "import spendgate.server.app, spendgate.cache.stage\n"
        "from spendgate.cache.semantic import SemanticMatcher\n"
        f"m = SemanticMatcher(verifier_name={verifier!r})\n"
        "ix = m.new_index(); ix.add(m.embedder.embed('how do I reset my password').vector, 0)\n"
        "m.match('how can I reset my password?', ix, lambda i: 'how do I reset my password')\n"
        "for line in open('/proc/self/status'):\n"
        "    if line.startswith('VmRSS:'): print(int(line.split()[1]) / 1024)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    try:
        return round(float(out.stdout.strip().splitlines()[-1]), 1)
    except (ValueError, IndexError):
        print(out.stderr, file=sys.stderr)
        return 0.0


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(DATA))
    ap.add_argument("--sizes", default="100000,1000000")
    ap.add_argument("--queries", type=int, default=2000)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--embedder", choices=["minilm", "static"], default="static")
    ap.add_argument("--verifier", choices=["cross-encoder", "features"], default="cross-encoder")
    ap.add_argument("--verify-top", type=int, default=1)
    args = ap.parse_args()
    rss_mb = _fresh_rss(args.verifier)
    if not args.json:
        print(f"rss with the model loaded (fresh process): {rss_mb} MB", flush=True)
    if not Path(args.data).exists():
        print(f"no data at {args.data}; nothing to measure", file=sys.stderr)
        return 0
    try:
        import faiss

        faiss.omp_set_num_threads(1)
    except ImportError:
        faiss = None

    from spendgate.cache.evaluate import is_heldout, load_pairs
    from spendgate.cache.index import VectorIndex
    from spendgate.cache.semantic import SemanticMatcher

    pairs = list(load_pairs(args.data))
    queries = [p.q1 for p in pairs if is_heldout(p.q1, p.q2)][: args.queries]
    # The queries themselves are not stored: every lookup runs the full verification
    # instead of stopping at an identical entry.
    asked = set(queries)
    texts = sorted({q for p in pairs for q in (p.q1, p.q2)} - asked)
    matcher = SemanticMatcher(
        embedder_name=args.embedder, verifier_name=args.verifier, verify_top=args.verify_top
    )
    t0 = time.perf_counter()
    base = matcher.embedder.embed_many(texts)
    embed_s = time.perf_counter() - t0
    rng = np.random.default_rng(0)
    results = []
    accurate: dict[int, np.ndarray] = {}  # entry text → MiniLM vector, shared by the sizes
    for size in [int(s) for s in args.sizes.split(",") if s]:
        index = VectorIndex(base.shape[1])
        t0 = time.perf_counter()
        take = min(size, len(texts))
        index.add_many(base[:take], list(range(take)))
        source = list(range(take))
        while len(source) < size:
            n = min(100_000, size - len(source))
            pick = rng.integers(0, len(texts), n)
            noisy = base[pick] + rng.normal(0, 0.05, (n, base.shape[1])).astype(np.float32)
            noisy /= np.linalg.norm(noisy, axis=1, keepdims=True)
            index.add_many(noisy, list(range(len(source), len(source) + n)))
            source.extend(int(i) for i in pick)
        build_s = time.perf_counter() - t0
        if matcher.accurate is not None:  # as stored with each entry (untimed)
            wanted = sorted(
                {
                    source[i]
                    for q in queries
                    for i, _cos in index.search(
                        matcher.embedder.embed(q).vector, matcher.candidates
                    )
                }
                - set(accurate)
            )
            for t, v in zip(wanted, matcher.accurate.embed_many([texts[t] for t in wanted]),
                            strict=True):  # fmt: skip
                accurate[t] = v
        timings = []
        hits = 0
        minilm_runs = 0
        ce_runs = [0]
        if matcher.cross is not None:
            score = type(matcher.cross).score

            def counted(
                query: str, cands: list[str], _f=score, _c=matcher.cross, _n=ce_runs
            ) -> np.ndarray:
                _n[0] += 1
                return _f(_c, query, cands)

            matcher.cross.score = counted  # type: ignore[method-assign]
        for q in queries:
            matcher._accurate_cache.clear()
            started = time.perf_counter()
            found = matcher.match(
                q, index, lambda i, src=source: texts[src[i]],
                accurate_of=lambda i, src=source: accurate.get(src[i]),
            )  # fmt: skip
            timings.append(time.perf_counter() - started)
            hits += found is not None
            minilm_runs += bool(matcher._accurate_cache)
        ms = np.asarray(timings) * 1000
        row = {
            "entries": size,
            "index": index.kind,
            "queries": len(queries),
            "hit_rate": round(hits / len(queries), 4),
            "minilm_query_share": round(minilm_runs / len(queries), 4),
            "cross_encoder_share": round(ce_runs[0] / len(queries), 4),
            "p50_ms": round(float(np.percentile(ms, 50)), 4),
            "p99_ms": round(float(np.percentile(ms, 99)), 4),
            "mean_ms": round(float(ms.mean()), 4),
            "build_s": round(build_s, 1),
        }
        results.append(row)
        if not args.json:
            print(
                f"{size:>9,} entries ({row['index']}): p50 {row['p50_ms']} ms  "
                f"p99 {row['p99_ms']} ms  mean {row['mean_ms']} ms  "
                f"(build {row['build_s']} s, hit rate {row['hit_rate']})",
                flush=True,
            )
        del index
    out = {
        "embedder": matcher.name,
        "verify_top": args.verify_top,
        "rss_mb": rss_mb,
        "rss_after_mb": _rss_mb(),
        "texts": len(texts),
        "embed_all_s": round(embed_s, 1),
        "faiss": faiss is not None,
        "results": results,
    }
    if args.json:
        print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
