"""Faults the simulated upstream injects: queued over HTTP (`/_sim/faults`) or given per
request in an `x-sim-fault` header, so a gateway test can drive retries, fallbacks and odd
usage across a real socket."""

from __future__ import annotations

from typing import Any

from spendgate.simulated.wire import Fault

__all__ = ["header_fault", "take_fault", "usage_override"]


def header_fault(value: str) -> Fault | None:
    """`x-sim-fault: status=429;retry_after=2` / `timeout=5` / `cut=3` / `garbage`."""
    fault: Fault = {}
    for i, part in enumerate(p.strip() for p in value.replace(",", ";").split(";")):
        if not part:
            continue
        key, _, raw = part.partition("=")
        key = key.strip()
        if i == 0:
            fault["kind"] = key
            arg = {"status": "status", "timeout": "seconds", "cut": "after_chunks"}.get(key)
            if arg and raw:
                fault[arg] = float(raw) if key == "timeout" else int(raw)
        elif raw:
            fault[key] = raw if key == "mode" else float(raw)
    return fault or None


def take_fault(
    queue: list[Fault], path: str, model: str, headers: dict[bytes, bytes]
) -> Fault | None:
    """The fault for this request: its header's, else the first queued one that matches
    (used up after its `times`)."""
    direct = headers.get(b"x-sim-fault")
    if direct:
        return header_fault(direct.decode("latin-1"))
    for fault in queue:
        if fault.get("model") not in (None, model):
            continue
        if fault.get("path") not in (None, path, "/v1" + path):
            continue
        fault["times"] = int(fault.get("times", 1)) - 1
        if fault["times"] <= 0:
            queue.remove(fault)
        return fault
    return None


def usage_override(fault: Fault | None) -> dict[str, Any] | None:
    """A queued `{"kind": "usage", "usage": {…}}`: report exactly this usage block (in the
    endpoint's own format), so a test can drive a golden cost case end to end through the
    gateway; the answer itself is unchanged."""
    if fault is None or fault.get("kind") != "usage":
        return None
    value = fault.get("usage")
    return value if isinstance(value, dict) else None
