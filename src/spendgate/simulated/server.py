"""Running the simulated upstream: on a loopback port in a background thread (tests, the
demo, benchmarks) or in the foreground (`spendgate simulate-upstream`)."""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
from typing import Any

import uvicorn

from spendgate.simulated.app import SimApp, create_app

__all__ = ["SimulatedUpstream", "serve"]


class _QuietCut(logging.Filter):
    """A deliberate "cut" fault makes uvicorn log that the app did not finish its response;
    that is the point of the fault, not an error worth a log line."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "without completing response" not in record.getMessage()


def _config(app: SimApp, host: str, port: int, log_level: str) -> uvicorn.Config:
    logging.getLogger("uvicorn.error").addFilter(_QuietCut())
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        loop="uvloop",
        http="httptools",
        lifespan="off",
        access_log=False,
        log_level=log_level,
        timeout_graceful_shutdown=5,
        backlog=4096,
    )


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, ready: threading.Event) -> None:
        super().__init__(config)
        self._ready = ready
        self.loop: asyncio.AbstractEventLoop | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        self.loop = asyncio.get_running_loop()
        try:
            await super().startup(sockets)
        finally:
            self._ready.set()


class SimulatedUpstream:
    """The simulated upstream on a loopback port in a background thread.

    `with SimulatedUpstream() as up: OpenAI(base_url=up.url + "/v1")`. The socket is bound
    before the thread starts (so `.url` is known at once) and `start()` returns only after
    uvicorn has finished its startup, so the first request never races the server.
    """

    def __init__(
        self,
        latency: str = "none",
        seed: int = 0,
        port: int = 0,
        require_key: str | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        self.app = create_app(latency=latency, seed=seed, require_key=require_key)
        self.host = host
        self.port = port
        self._sock: socket.socket | None = None
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 10.0) -> SimulatedUpstream:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        self.port = sock.getsockname()[1]
        self.app.public_url = self.url
        self._sock = sock
        ready = threading.Event()
        server = _Server(_config(self.app, self.host, self.port, "warning"), ready)
        self._server = server
        self._thread = threading.Thread(
            target=server.run, kwargs={"sockets": [sock]}, name="sim-upstream", daemon=True
        )
        self._thread.start()
        if not ready.wait(timeout) or not server.started:
            self.stop()
            raise RuntimeError("simulated upstream failed to start")
        return self

    def stop(self) -> None:
        """Graceful: held responses are released, open streams finish, then the thread ends."""
        server, thread = self._server, self._thread
        if server is not None:
            if server.loop is not None and not server.loop.is_closed():
                server.loop.call_soon_threadsafe(self.app.release)
            server.should_exit = True
        if thread is not None:
            thread.join(timeout=15)
        if self._sock is not None:
            self._sock.close()
        self._server = self._thread = self._sock = None

    def stats(self) -> dict[str, Any]:
        return self.app.stats()

    def __enter__(self) -> SimulatedUpstream:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve(
    host: str = "127.0.0.1", port: int = 8900, latency: str = "realistic", seed: int = 0
) -> None:
    """Run the simulated upstream in the foreground (`spendgate simulate-upstream`)."""
    app = create_app(latency=latency, seed=seed)
    uvicorn.Server(_config(app, host, port, "info")).run()
