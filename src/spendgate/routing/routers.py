"""Learned routers behind one interface: `score(call) -> P(the strong model is needed)`.

A registry maps names to factories (`default`, `random`, `length`), and `load_router(path)`
opens a file written by `spendgate train-router`. The file format is deliberately tiny and
dependency-free: magic `SGR1`, a JSON header (strong/weak models, bucket count, dense-feature
weights, calibrated thresholds, training provenance), then zlib-compressed float32 bucket
weights. Scoring needs only the standard library, so the gateway does not import numpy.
"""

from __future__ import annotations

import json
import math
import struct
import sys
import zlib
from array import array
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Protocol

from spendgate.call import Call
from spendgate.routing.features import DENSE_NAMES, call_text, dense_features, hashed_features

__all__ = [
    "DEFAULT_ROUTER_FILE",
    "LengthRouter",
    "LinearRouter",
    "RandomRouter",
    "Router",
    "get_router",
    "load_router",
    "register_router",
    "router_names",
]

MAGIC = b"SGR1"
DEFAULT_ROUTER_FILE = "router_default.bin"


class Router(Protocol):
    """Anything that scores a prompt: higher = the strong model is more likely needed."""

    name: str

    def score_text(self, text: str, turns: int = 1, tools: bool = False) -> float: ...

    def score(self, call: Call) -> float: ...


class _ScoreCall:
    name: str = "router"

    def score_text(self, text: str, turns: int = 1, tools: bool = False) -> float:
        raise NotImplementedError

    def score(self, call: Call) -> float:
        text, turns, tools = call_text(call.body)
        return self.score_text(text, max(turns, 1), tools)


class RandomRouter(_ScoreCall):
    """A deterministic pseudo-random score per prompt: the baseline every router must beat."""

    name = "random"

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    def score_text(self, text: str, turns: int = 1, tools: bool = False) -> float:
        return (zlib.crc32(f"{self.seed}:{text}".encode()) & 0xFFFFFFFF) / 2**32


class LengthRouter(_ScoreCall):
    """Longer prompt = harder: the one-line heuristic, useful as a second baseline."""

    name = "length"

    def score_text(self, text: str, turns: int = 1, tools: bool = False) -> float:
        return 1.0 - 1.0 / (1.0 + len(text) / 500.0)


@dataclass
class LinearRouter(_ScoreCall):
    """Logistic regression over hashed n-grams + dense features (see `features`)."""

    weights: array[float]
    dense: list[float]
    meta: dict[str, Any] = field(default_factory=dict)
    name: str = "linear"

    @property
    def buckets(self) -> int:
        return len(self.weights)

    @property
    def strong(self) -> str | None:
        return self.meta.get("strong")

    @property
    def weak(self) -> str | None:
        return self.meta.get("weak")

    @property
    def thresholds(self) -> dict[str, float]:
        """Calibrated thresholds stored with the model (e.g. `quality_95`, `strong_30`)."""
        return dict(self.meta.get("thresholds") or {})

    def logit_text(self, text: str, turns: int = 1, tools: bool = False) -> float:
        w = self.weights
        z = sum(w[h] * v for h, v in hashed_features(text, len(w)).items())
        z += sum(a * b for a, b in zip(self.dense, dense_features(text, turns, tools), strict=True))
        return z

    def score_text(self, text: str, turns: int = 1, tools: bool = False) -> float:
        z = self.logit_text(text, turns, tools)
        return 1.0 / (1.0 + math.exp(-max(min(z, 40.0), -40.0)))

    def save(self, path: str | Path) -> None:
        header = dict(self.meta)
        header.update(
            name=self.name,
            buckets=len(self.weights),
            dense_names=list(DENSE_NAMES),
            dense=[round(x, 7) for x in self.dense],
        )
        w = array("f", self.weights)
        if sys.byteorder != "little":
            w.byteswap()
        head = json.dumps(header, sort_keys=True).encode()
        blob = zlib.compress(w.tobytes(), 9)
        Path(path).write_bytes(MAGIC + struct.pack("<I", len(head)) + head + blob)

    @classmethod
    def from_bytes(cls, data: bytes, source: str = "<bytes>") -> LinearRouter:
        if data[:4] != MAGIC or len(data) < 8:
            raise ValueError(f"{source} is not a spendgate router file (bad magic)")
        (n,) = struct.unpack("<I", data[4:8])
        try:
            header = json.loads(data[8 : 8 + n])
            raw = zlib.decompress(data[8 + n :])
        except (ValueError, zlib.error) as exc:
            raise ValueError(f"{source} is a damaged router file: {exc}") from None
        if header.get("dense_names") != list(DENSE_NAMES):
            raise ValueError(f"{source} was trained with other features; retrain it")
        w = array("f")
        w.frombytes(raw)
        if sys.byteorder != "little":
            w.byteswap()
        if len(w) != header.get("buckets"):
            raise ValueError(f"{source}: weight count does not match its header")
        dense = [float(x) for x in header.pop("dense")]
        name = str(header.pop("name", "linear"))
        return cls(weights=w, dense=dense, meta=header, name=name)


def load_router(path: str | Path) -> LinearRouter:
    """Open a router file written by `spendgate train-router` (or the shipped default)."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read router file {p}: {exc.strerror}") from None
    return LinearRouter.from_bytes(data, str(p))


_DEFAULT: LinearRouter | None = None


def default_router() -> LinearRouter:
    """The router shipped in the wheel (trained by `scripts/train_default_router.py`)."""
    global _DEFAULT
    if _DEFAULT is None:
        data = resources.files("spendgate").joinpath("data", DEFAULT_ROUTER_FILE).read_bytes()
        _DEFAULT = LinearRouter.from_bytes(data, DEFAULT_ROUTER_FILE)
        _DEFAULT.name = "default"
    return _DEFAULT


_REGISTRY: dict[str, Callable[[], Router]] = {
    "default": default_router,
    "random": RandomRouter,
    "length": LengthRouter,
}


def register_router(name: str, factory: Callable[[], Router]) -> None:
    """Make a router available by name (config `routing.router`, `eval router --router`)."""
    _REGISTRY[name] = factory


def router_names() -> list[str]:
    return sorted(_REGISTRY)


def get_router(name_or_path: str) -> Router:
    """A registered router by name, else a router file by path."""
    factory = _REGISTRY.get(name_or_path)
    if factory is not None:
        return factory()
    if Path(name_or_path).exists():
        return load_router(name_or_path)
    raise ValueError(
        f"unknown router {name_or_path!r}: not a registered name ({', '.join(router_names())}) "
        "and no such file"
    )
