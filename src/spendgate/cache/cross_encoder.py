"""The semantic cache's default verifier: a small cross-encoder that reads both questions at
once and says how likely the stored answer answers the new one.

A bi-encoder embeds each question alone, so "iPhone 6" / "iPhone 7", or two questions that
differ in one name or in word order, land close together. A cross-encoder reads
`[CLS] query [SEP] stored [SEP]` in one pass with attention across both, so the one word
that differs is visible to it. The shipped model (`spendgate/data/cache_cross_encoder.onnx`,
int8, 3 transformer layers of all-MiniLM-L6-v2 fine-tuned on QQP's training split by
`scripts/train_cross_encoder.py`) runs with `onnxruntime` on one thread, and only on the
top candidate(s) retrieval returns; docs/cache.md has its figures.

Its sidecar (`cache_cross_encoder.json`) carries what the model was chosen with on the
validation split: the default threshold and a calibration curve (validation precision of
the pairs around each score), which the per-entry thresholds (`thresholds.py`) start from.

`onnxruntime` is imported only when the semantic tier is on and this verifier is chosen.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "CROSS_ENCODER_PATH",
    "CrossEncoder",
    "CrossEncoderInfo",
    "get_cross_encoder",
    "load_info",
]

_DATA = Path(__file__).resolve().parent.parent / "data"
CROSS_ENCODER_PATH = _DATA / "cache_cross_encoder.onnx"
INFO_PATH = _DATA / "cache_cross_encoder.json"
TOKENIZER_PATH = _DATA / "minilm_tokenizer.json"


@dataclass(frozen=True, slots=True)
class CrossEncoderInfo:
    """What the shipped model was chosen with (all on the validation split)."""

    threshold: float
    """The default decision threshold: validation precision >= 0.96 from here up."""
    max_tokens: int
    calibration: tuple[tuple[float, float], ...]
    """(score, P(duplicate | score)) points, increasing in both (isotonic on validation)."""
    info: str
    entity_veto: bool = False
    """Veto pairs whose named things are disjoint ("learn Python" / "learn Java"): on when
    it raised validation precision at the chosen threshold."""

    def prior(self, score: float) -> float:
        """P(the stored answer is right | score), interpolated on the calibration curve."""
        if not self.calibration:
            return score
        xs = [x for x, _ in self.calibration]
        ys = [y for _, y in self.calibration]
        return float(np.interp(score, xs, ys))


def load_info(path: Path | None = None) -> CrossEncoderInfo:
    raw = json.loads((path or INFO_PATH).read_text())
    return CrossEncoderInfo(
        threshold=float(raw["threshold"]),
        max_tokens=int(raw.get("max_tokens", 64)),
        calibration=tuple((float(x), float(y)) for x, y in raw.get("calibration", [])),
        info=str(raw.get("info", "")),
        entity_veto=bool(raw.get("entity_veto", False)),
    )


class CrossEncoder:
    """Scores (query, stored question) pairs: a probability per pair, one thread."""

    def __init__(self, model: Path | None = None, info: Path | None = None) -> None:
        from tokenizers import Tokenizer

        from spendgate.cache.onnx import onnx_session

        self.info = load_info(info)
        self.threshold = self.info.threshold
        self.tokenizer = Tokenizer.from_file(str(TOKENIZER_PATH))
        self.tokenizer.enable_truncation(self.info.max_tokens)
        self.tokenizer.no_padding()
        self.session = onnx_session(model or CROSS_ENCODER_PATH)

    def score(self, query: str, candidates: list[str]) -> np.ndarray:
        """P(duplicate) of `query` against each candidate, in one batch."""
        if not candidates:
            return np.zeros(0, np.float32)
        encs = self.tokenizer.encode_batch([(query, c) for c in candidates])
        width = max(len(e.ids) for e in encs)
        ids = np.zeros((len(encs), width), np.int64)
        mask = np.zeros((len(encs), width), np.int64)
        types = np.zeros((len(encs), width), np.int64)
        for i, e in enumerate(encs):
            n = len(e.ids)
            ids[i, :n] = e.ids
            types[i, :n] = e.type_ids
            mask[i, :n] = 1
        feeds: dict[str, Any] = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
        return np.asarray(self.session.run(None, feeds)[0], np.float32).reshape(-1)


_SHARED: list[CrossEncoder] = []
_LOCK = threading.Lock()


def get_cross_encoder() -> CrossEncoder:
    """The process-wide cross-encoder (loads in ~0.2 s; raises ImportError without
    `onnxruntime`)."""
    with _LOCK:
        if not _SHARED:
            _SHARED.append(CrossEncoder())
        return _SHARED[0]
