"""Nearest-neighbour search over unit vectors (inner product = cosine).

Small partitions (most tenants) are a numpy matrix searched exhaustively: exact, no build
cost, and for 64-d vectors faster than a graph below ~50k rows. A partition that grows past
`hnsw_from` moves to a faiss HNSW graph (when faiss-cpu is installed), which keeps a lookup
under a millisecond at a million entries.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["VectorIndex"]


class VectorIndex:
    def __init__(self, dim: int, *, hnsw_from: int = 50_000, ef_search: int = 64) -> None:
        self.dim = dim
        self.hnsw_from = hnsw_from
        self.ef_search = ef_search
        self._vectors = np.zeros((64, dim), dtype=np.float32)
        self._ids: list[int] = []
        self._hnsw: Any = None

    def __len__(self) -> int:
        return len(self._ids)

    @property
    def kind(self) -> str:
        return "hnsw" if self._hnsw is not None else "flat"

    def add(self, vector: np.ndarray, entry_id: int) -> None:
        self.add_many(vector.reshape(1, -1), [entry_id])

    def add_many(self, vectors: np.ndarray, ids: list[int]) -> None:
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if self._hnsw is not None:
            self._hnsw.add(vectors)
            self._ids.extend(ids)
            return
        n = len(self._ids)
        need = n + len(ids)
        if need > self._vectors.shape[0]:
            grown = np.zeros((max(need, 2 * self._vectors.shape[0]), self.dim), np.float32)
            grown[:n] = self._vectors[:n]
            self._vectors = grown
        self._vectors[n:need] = vectors
        self._ids.extend(ids)
        if need >= self.hnsw_from:
            self._to_hnsw()

    def _to_hnsw(self) -> None:
        try:
            import faiss
        except ImportError:
            return
        index = faiss.IndexHNSWFlat(self.dim, 32, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = 40
        index.hnsw.efSearch = self.ef_search
        index.add(np.ascontiguousarray(self._vectors[: len(self._ids)]))
        self._hnsw = index
        self._vectors = np.zeros((0, self.dim), np.float32)

    def search(self, query: np.ndarray, k: int) -> list[tuple[int, float]]:
        """Up to k (entry id, cosine) pairs, best first."""
        n = len(self._ids)
        if n == 0:
            return []
        q = np.ascontiguousarray(query, dtype=np.float32).reshape(1, -1)
        if self._hnsw is not None:
            sims, pos = self._hnsw.search(q, k)
            return [
                (self._ids[p], float(s)) for p, s in zip(pos[0], sims[0], strict=True) if p >= 0
            ]
        sims = self._vectors[:n] @ q[0]
        k = min(k, n)
        top = np.argpartition(-sims, k - 1)[:k] if n > k else np.arange(n)
        top = top[np.argsort(-sims[top])]
        return [(self._ids[int(p)], float(sims[p])) for p in top]
