"""Running the gateway under uvicorn: blocking for the CLI, or in a thread for the demo,
the benchmarks and the tests (a real server on a real socket, started and stopped cleanly)."""

from __future__ import annotations

import asyncio
import errno
import logging
import re
import socket
import threading
from typing import Any

import uvicorn

from spendgate.config import Settings
from spendgate.errors import SpendgateError
from spendgate.server.app import Gateway
from spendgate.server.protocol import bounded_protocol

__all__ = ["GatewayServer", "ServeError", "bind", "free_port", "redact", "run_server"]

log = logging.getLogger("spendgate.serve")


def redact(url: str) -> str:
    """A storage URL fit for logs: any password replaced by ***."""
    return re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", url)


def _loop_factory() -> Any:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency where it builds
        return None
    return uvloop.new_event_loop


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _uvicorn_config(gateway: Gateway, host: str, port: int) -> uvicorn.Config:
    return uvicorn.Config(
        gateway,
        host=host,
        port=port,
        loop="uvloop",
        http=bounded_protocol(gateway.settings.server.max_header_bytes, gateway.refuse_unrouted),
        lifespan="on",
        access_log=False,
        log_level="warning",
        timeout_graceful_shutdown=10,
    )


class ServeError(SpendgateError):
    """The gateway can't start (port taken, bad address): a one-line message for the CLI."""


def bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound before anything says "listening" (an address in use is
    a clear error, not a traceback after the banner)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        reason = "address already in use" if exc.errno == errno.EADDRINUSE else exc.strerror
        raise ServeError(f"cannot listen on {host}:{port}: {reason}") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def run_server(settings: Settings, *, host: str | None = None, port: int | None = None) -> None:
    """Serve until interrupted; on SIGINT/SIGTERM the lifespan shutdown flushes the ledger.

    Raises `ServeError` (port taken) or `ConfigError` (e.g. a provider key's environment
    variable unset) before anything is printed or opened."""
    host = host or settings.server.host
    port = settings.server.port if port is None else port
    sock = bind(host, port)
    port = sock.getsockname()[1]  # the one the OS picked, for --port 0
    try:
        gateway = Gateway(settings)
    except BaseException:
        sock.close()
        raise
    auth = "on" if gateway.auth_required else "OFF (no virtual keys configured)"
    print(
        f"spendgate listening on http://{host}:{port}/v1  "
        f"models: {', '.join(gateway.table.models()) or '(none)'}  auth: {auth}  "
        f"ledger: {redact(settings.storage.ledger)}",
        flush=True,
    )
    uvicorn.Server(_uvicorn_config(gateway, host, port)).run(sockets=[sock])


class GatewayServer:
    """A gateway on a loopback port in a background thread.

    `start()` returns once the socket is accepting (uvicorn's own `started` flag, set after
    bind), `stop()` runs the graceful shutdown, which flushes the ledger."""

    def __init__(self, gateway: Gateway, host: str = "127.0.0.1", port: int = 0) -> None:
        self.gateway = gateway
        self.host = host
        self.port = port or free_port()
        self._server = uvicorn.Server(_uvicorn_config(gateway, host, self.port))
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="spendgate-gateway", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def _run(self) -> None:
        async def main() -> None:
            task = asyncio.create_task(self._server.serve())
            while not self._server.started and not task.done():
                await asyncio.sleep(0.005)  # polls uvicorn's flag inside its own loop
            self._ready.set()
            await task

        try:
            with asyncio.Runner(loop_factory=_loop_factory()) as runner:
                runner.run(main())
        finally:
            self._ready.set()

    def start(self) -> GatewayServer:
        self._thread.start()
        self._ready.wait()
        if not self._server.started:
            raise RuntimeError(f"gateway failed to start on {self.url}")
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=30)

    def __enter__(self) -> GatewayServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
