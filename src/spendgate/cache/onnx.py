"""One way to open an ONNX model: single-threaded (a verifier runs on the hot path, one pair
at a time, beside the gateway's own threads) and with onnxruntime's telemetry off.

onnxruntime ≥ 1.2x ships Microsoft's 1DS telemetry on Linux too; a gateway that sees its
customers' traffic must not send events about its runtime anywhere, so it is disabled
before the first session. (The runtime still leaves a small `.ses` session-id file in the
temp directory; it holds no data.)
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

__all__ = ["onnx_session"]


@functools.cache
def _runtime() -> Any:
    import onnxruntime as ort

    ort.disable_telemetry_events()
    return ort


def onnx_session(path: Path | str) -> Any:
    ort = _runtime()
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
