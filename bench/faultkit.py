"""Real services to break on purpose: a redis-server, a PostgreSQL cluster and gateway
processes, each started here on a free port in a temp dir and stopped, paused (SIGSTOP),
killed or restarted by the caller. Used by `bench/faults.py` and the fault tests; never
touches the machine's own Redis or PostgreSQL.

Nothing here sleeps to synchronise: a service is ready when it answers (Redis PING,
`pg_ctl -w`), a gateway when its pre-bound socket is handed over (the kernel queues
connections until uvicorn accepts them).
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "GatewayProcess",
    "PostgresServer",
    "RedisServer",
    "free_port",
    "gateway_config",
    "have_postgres",
    "have_redis",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def have_redis() -> bool:
    return shutil.which("redis-server") is not None


def _pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


def have_postgres() -> bool:
    return _pg_bin() is not None


def _drain(stream: Any) -> None:
    for _ in stream:
        pass


class RedisServer:
    """`redis-server --port P --save ''` with no persistence: a restart comes back empty."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--daemonize", "no", "--loglevel", "notice"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        assert self.proc.stdout is not None
        seen = []
        for line in self.proc.stdout:  # ready when it says so (it binds first)
            seen.append(line)
            if b"Ready to accept connections" in line:
                break
        else:
            raise RuntimeError(f"redis-server on {self.port} did not start: {seen[-5:]}")
        threading.Thread(target=_drain, args=(self.proc.stdout,), daemon=True).start()

    def pause(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
            self.proc.wait()

    def restart_empty(self) -> None:
        self.kill()
        self.start()

    def client(self) -> Any:
        import redis

        return redis.Redis(host="127.0.0.1", port=self.port, decode_responses=True)

    def stop(self) -> None:
        self.kill()


class PostgresServer:
    """A throw-away PostgreSQL cluster (`initdb` + `pg_ctl`) on a free port, trust auth."""

    def __init__(self) -> None:
        bin_dir = _pg_bin()
        if bin_dir is None:
            raise RuntimeError("no PostgreSQL binaries under /usr/lib/postgresql")
        self.bin = bin_dir
        self.port = free_port()
        self.home = Path(tempfile.mkdtemp(prefix="sg-pg-"))
        self.data = self.home / "data"
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self._as = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if self._as:
            shutil.chown(self.home, "postgres")
        subprocess.run(
            [*self._as, str(self.bin / "initdb"), "-D", str(self.data), "-A", "trust",
             "-U", "postgres", "--no-sync", "-E", "UTF8"],
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        self.start()

    def start(self) -> None:
        opts = f"-p {self.port} -k {self.home} -c listen_addresses=127.0.0.1 -c fsync=off"
        subprocess.run(
            [*self._as, str(self.bin / "pg_ctl"), "-D", str(self.data), "-w", "-o", opts,
             "-l", str(self.home / "log"), "start"],
            check=True, stdout=subprocess.DEVNULL,
        )  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        subprocess.run(
            [*self._as, str(self.bin / "pg_ctl"), "-D", str(self.data), "-w", "-m", mode,
             "stop"],
            check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip

    def destroy(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.home, ignore_errors=True)


_CHILD = """
import socket, sys
import uvicorn
from spendgate.config import load_settings
from spendgate.serve import _uvicorn_config
from spendgate.server.app import Gateway

sock = socket.socket(fileno=int(sys.argv[2]))
gateway = Gateway(load_settings(sys.argv[1]))
uvicorn.Server(_uvicorn_config(gateway, "127.0.0.1", 0)).run(sockets=[sock])
"""


class GatewayProcess:
    """`spendgate` gateway in its own process on a socket bound here (clients may connect
    at once). `signal(SIGTERM)` runs the graceful shutdown; SIGKILL loses the process."""

    def __init__(self, config: Path, *, log: Path | None = None) -> None:
        self.config = config
        self.sock = socket.create_server(("127.0.0.1", 0), backlog=2048)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        fd = self.sock.fileno()
        self.log_path = log or config.with_suffix(".log")
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in wait()
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _CHILD, str(config), str(fd)],
            pass_fds=[fd],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"},
        )
        # The child holds the listening socket now; without our copy, connections to a
        # killed gateway are refused at once instead of waiting in the backlog.
        self.sock.close()

    def ready(self, timeout: float = 60) -> dict[str, Any]:
        """Block until the gateway answers `/healthz` (the kernel held the connection until
        uvicorn accepted it; its signal handlers are installed by then) and is ready."""
        import httpx2

        deadline = time.monotonic() + timeout
        while True:
            r = httpx2.get(self.url + "/healthz", timeout=timeout)
            if r.status_code == 200 or time.monotonic() > deadline:
                return dict(r.json())
            # 503 "starting": the answer itself says when to ask again
            time.sleep(float(r.headers.get("retry-after", "0.05")))

    def signal(self, sig: int) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)

    def stop(self, timeout: float = 60) -> int:
        """SIGTERM, then wait; 0 for a graceful exit (uvicorn re-raises the captured SIGTERM
        once its shutdown is done, which shows as -SIGTERM: that is a clean exit too)."""
        if self.proc.poll() is None:
            self.ready(timeout)
        self.signal(signal.SIGTERM)
        return self.wait(timeout)

    def wait(self, timeout: float = 60) -> int:
        try:
            code = self.proc.wait(timeout=timeout)
        finally:
            self.sock.close()
            self._log.close()
        return 0 if code == -signal.SIGTERM else code

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        self.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def gateway_config(folder: Path, upstream: str, **sections: Any) -> Path:
    """Write a gateway config for the simulated upstream at `upstream`: SQLite ledger and
    key store in `folder` unless `storage` says otherwise; `sections` merged in."""
    from spendgate.config import simulated_settings

    folder.mkdir(parents=True, exist_ok=True)
    storage = {
        "ledger": f"sqlite:///{(folder / 'ledger.db').resolve()}",
        "keys": f"sqlite:///{(folder / 'keys.db').resolve()}",
        **sections.pop("storage", {}),
    }
    data = simulated_settings(upstream, storage=storage).model_dump(mode="json", exclude_none=True)
    for key, value in sections.items():
        data[key] = {**data[key], **value} if isinstance(data.get(key), dict) else value
    path = folder / "spendgate.yaml"
    path.write_text(yaml.safe_dump(data))
    return path
