"""`POST /v1/embeddings`: unit vectors seeded by model and input (the same text always gets
the same vector), as floats or base64, with usage counted by the project's tokenizers."""

from __future__ import annotations

import base64
import math
import random
import struct
from typing import Any

import orjson

from spendgate import tokens
from spendgate.simulated.model import digest
from spendgate.simulated.state import UpstreamState
from spendgate.simulated.wire import Exchange, send_error

__all__ = ["serve_embeddings"]


async def serve_embeddings(state: UpstreamState, ex: Exchange) -> None:
    body, model, send, fault = ex.body, ex.model, ex.send, ex.fault
    raw_input = body.get("input")
    if not model or raw_input is None or raw_input == [] or raw_input == "":
        await send_error(send, "openai", 400, "'input' and 'model' are required.")
        return
    dims = body.get("dimensions") or (3072 if model.endswith("-large") else 1536)
    if not isinstance(dims, int) or not 1 <= dims <= 3072:
        # OpenAI's widest model has 3,072; an unbounded value would allocate without limit.
        await send_error(send, "openai", 400, "'dimensions' must be between 1 and 3072.")
        return
    as_b64 = body.get("encoding_format") == "base64"
    data = [
        {
            "object": "embedding",
            "index": index,
            "embedding": _vector(state, model, item, dims, as_b64),
        }
        for index, item in enumerate(_items(raw_input))
    ]
    used = tokens.count_embedding_input(model, raw_input)
    payload = {
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": used, "total_tokens": used},
    }
    delay = 0.05 + used * 1e-5 if state.latency == "realistic" else 0.0
    await state.respond(send, payload, delay, fault)


def _items(raw_input: Any) -> list[Any]:
    """One text or one token array is one item; a list of them is many."""
    if isinstance(raw_input, str) or (
        isinstance(raw_input, list) and all(isinstance(x, int) for x in raw_input)
    ):
        return [raw_input]
    return list(raw_input)


def _vector(state: UpstreamState, model: str, item: Any, dims: int, as_b64: bool) -> Any:
    rng = random.Random(digest(model.encode(), orjson.dumps(item), str(state.seed).encode()))
    vec = [rng.gauss(0.0, 1.0) for _ in range(dims)]
    norm = math.sqrt(sum(v * v for v in vec)) or 1.0
    vec = [v / norm for v in vec]
    return base64.b64encode(struct.pack(f"<{dims}f", *vec)).decode() if as_b64 else vec
