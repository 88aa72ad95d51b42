"""Run one spendgate gateway (uvicorn, one worker) against a given upstream, for
bench/overhead.py. A separate process so the benchmark measures it, not its own client.

    python bench/gateway_runner.py --upstream http://127.0.0.1:P --port Q --ledger PATH --keys PATH

Stops gracefully on SIGTERM/SIGINT (uvicorn's handler runs the lifespan shutdown, which
flushes the ledger) and only then exits.
"""

from __future__ import annotations

import argparse

from spendgate.config import simulated_settings
from spendgate.serve import run_server


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--upstream", required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--ledger", required=True, help="path of the SQLite ledger file")
    ap.add_argument("--keys", required=True, help="path of the SQLite key store file")
    args = ap.parse_args()
    settings = simulated_settings(
        args.upstream,
        storage={"ledger": f"sqlite:///{args.ledger}", "keys": f"sqlite:///{args.keys}"},
    )
    run_server(settings, host=args.host, port=args.port)


if __name__ == "__main__":
    main()
