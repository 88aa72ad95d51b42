"""Fuzz the gateway from its own OpenAPI document (`GET /openapi.json`) with schemathesis.

For every operation, schemathesis draws valid (positive) and invalid (negative) requests —
bodies, headers and tag values. A request fails when it gets a 5xx that is not an upstream
fault, when the connection drops without an answer, or when its request id does not have
exactly one ledger row.

    python bench/fuzz_openapi.py [--examples 200] [--seed 1] [--json]

`tests/test_fuzz_openapi.py` runs it small in `make test`; `bench/faults.py` runs it large.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from spendgate.config import simulated_settings  # noqa: E402
from spendgate.ledger import open_ledger  # noqa: E402
from spendgate.serve import GatewayServer  # noqa: E402
from spendgate.server.app import Gateway  # noqa: E402
from spendgate.simulated import SimulatedUpstream  # noqa: E402

UPSTREAM_FAULT_CODES = {"upstream_error", "upstream_timeout", "upstream_unreachable"}


def _upstream_fault(response: Any) -> bool:
    try:
        error = response.json().get("error") or {}
    except ValueError:
        return False
    return error.get("type") == "upstream_error" or error.get("code") in UPSTREAM_FAULT_CODES


def fuzz(base_url: str, *, examples: int, seed: int) -> dict[str, Any]:
    """Drive `examples` cases per operation and generation mode; returns the tallies and the
    request ids seen (for the ledger check)."""
    document = requests.get(base_url + "/openapi.json", timeout=10).json()
    schema = schemathesis.openapi.from_dict(document)
    tally = _Tally()
    session = requests.Session()
    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            _drive(operation, mode, examples, seed, base_url, session, tally)
    session.close()
    return tally.report(seed)


class _Tally:
    def __init__(self) -> None:
        self.tried: Counter[str] = Counter()
        self.statuses: Counter[int] = Counter()
        self.server_errors: list[dict[str, Any]] = []
        self.dropped: list[dict[str, Any]] = []
        self.request_ids: list[str] = []

    def report(self, seed: int) -> dict[str, Any]:
        return {
            "tried": sum(self.tried.values()),
            "by_operation": dict(self.tried),
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "server_errors": self.server_errors,
            "dropped": self.dropped,
            "request_ids": self.request_ids,
            "seed": seed,
        }


def _drive(
    operation: Any,
    mode: GenerationMode,
    examples: int,
    seed: int,
    base_url: str,
    session: requests.Session,
    tally: _Tally,
) -> None:
    label = f"{operation.label} {mode.value}"

    @hypothesis_seed(seed)
    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
        phases=[Phase.explicit, Phase.generate],
    )
    def run(case: Any) -> None:
        tally.tried[label] += 1
        try:
            response = case.call(base_url=base_url, session=session, timeout=30)
        except requests.RequestException as exc:
            tally.dropped.append({"op": label, "error": repr(exc)[:200]})
            return
        tally.statuses[response.status_code] += 1
        if response.status_code >= 500 and not _upstream_fault(response):
            tally.server_errors.append(
                {"op": label, "status": response.status_code, "body": response.text[:200]}
            )
        # schemathesis' response keeps every header as a list of values.
        request_id = response.headers.get("x-spendgate-request-id") or []
        tally.request_ids.extend(request_id)

    with contextlib.suppress(Unsatisfiable):  # a GET has nothing to make invalid
        run()


def run_against_fresh_gateway(examples: int, seed: int = 1) -> dict[str, Any]:
    """A simulated upstream and a gateway on loopback, fuzzed, then the ledger checked:
    every request id answered must have exactly one row."""
    with (
        tempfile.TemporaryDirectory(prefix="sg-fuzz-") as folder,
        SimulatedUpstream(latency="none") as upstream,
    ):
        ledger = f"sqlite:///{folder}/ledger.db"
        settings = simulated_settings(
            upstream.url, storage={"ledger": ledger, "keys": f"sqlite:///{folder}/keys.db"}
        )
        gateway = Gateway(settings)
        with GatewayServer(gateway) as server:
            report = fuzz(server.url, examples=examples, seed=seed)
        reader = open_ledger(ledger)
        rows = Counter(e.request_id for e in reader.events())
        reader.close()
    ids = report.pop("request_ids")
    report["lost_rows"] = sum(1 for i in ids if rows[i] == 0)
    report["duplicate_rows"] = sum(1 for i in ids if rows[i] > 1)
    report["failed"] = len(report["server_errors"]) + len(report["dropped"])
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=200, help="per operation and mode")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    report = run_against_fresh_gateway(args.examples, args.seed)
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(
        f"fuzz: tried {report['tried']}, 5xx (not upstream) {len(report['server_errors'])}, "
        f"dropped {len(report['dropped'])}, lost rows {report['lost_rows']}, "
        f"duplicate rows {report['duplicate_rows']}"
    )
    print("statuses:", report["statuses"])
    for item in (report["server_errors"] + report["dropped"])[:10]:
        print("  ", item)


if __name__ == "__main__":
    main()
