"""Library mode: the whole gateway in-process, behind an `httpx2` transport.

The official SDKs accept an `http_client`; give them one built on these transports and
every call goes through the same edge, pipeline, accounting and ledger as the server —
attribution headers included — with no server to run:

    transport = SpendgateTransport(settings)
    client = openai.OpenAI(base_url="http://spendgate/v1", api_key="unused",
                           http_client=httpx2.Client(transport=transport))

The transports drive the gateway's ASGI app directly (no sockets). The sync transport runs
the gateway on its own event loop thread, because the pipeline is asynchronous.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx2

from spendgate.config import Settings
from spendgate.server.app import Gateway

__all__ = ["AsyncSpendgateTransport", "SpendgateTransport"]


class _ResponseBody(httpx2.AsyncByteStream):
    def __init__(
        self, queue: asyncio.Queue[bytes | None], task: asyncio.Task[None], gone: asyncio.Event
    ) -> None:
        self._queue = queue
        self._task = task
        self._gone = gone

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while True:
            chunk = await self._queue.get()
            if chunk is None:
                return
            yield chunk

    async def aclose(self) -> None:
        # The client stopped reading: tell the app, as a server would on disconnect.
        self._gone.set()
        await asyncio.gather(self._task, return_exceptions=True)


class AsyncSpendgateTransport(httpx2.AsyncBaseTransport):
    """For `openai.AsyncOpenAI(http_client=httpx2.AsyncClient(transport=...))`."""

    def __init__(self, gateway: Gateway | Settings) -> None:
        self.gateway = gateway if isinstance(gateway, Gateway) else Gateway(gateway)

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        body = await request.aread()
        scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.4"},
            "http_version": "1.1",
            "method": request.method,
            "scheme": request.url.scheme,
            "path": request.url.path,
            "raw_path": request.url.raw_path,
            "query_string": request.url.query,
            "root_path": "",
            "headers": [(k.lower(), v) for k, v in request.headers.raw],
            "client": ("127.0.0.1", 0),
            "server": ("spendgate", 0),
        }
        queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        gone = asyncio.Event()
        started: asyncio.Future[tuple[int, list[tuple[bytes, bytes]]]] = (
            asyncio.get_running_loop().create_future()
        )
        sent_body = False

        async def receive() -> dict[str, Any]:
            nonlocal sent_body
            if not sent_body:
                sent_body = True
                return {"type": "http.request", "body": body, "more_body": False}
            await gone.wait()
            return {"type": "http.disconnect"}

        async def send(message: Any) -> None:
            if message["type"] == "http.response.start":
                started.set_result((message["status"], list(message.get("headers", []))))
            elif message["type"] == "http.response.body":
                if gone.is_set():
                    raise OSError("client disconnected")
                chunk = message.get("body", b"")
                if chunk:
                    queue.put_nowait(chunk)
                if not message.get("more_body"):
                    queue.put_nowait(None)

        async def run() -> None:
            try:
                await self.gateway(scope, receive, send)
            finally:
                queue.put_nowait(None)
                if not started.done():
                    started.set_exception(RuntimeError("gateway sent no response"))

        task = asyncio.ensure_future(run())
        status, headers = await started
        return httpx2.Response(
            status, headers=headers, stream=_ResponseBody(queue, task, gone), request=request
        )

    async def aclose(self) -> None:
        await self.gateway.aclose()


class _SyncBody(httpx2.SyncByteStream):
    def __init__(self, body: httpx2.AsyncByteStream, loop: asyncio.AbstractEventLoop) -> None:
        self._body = body
        self._loop = loop
        self._iter = body.__aiter__()

    def __iter__(self) -> Iterator[bytes]:
        while True:
            try:
                yield asyncio.run_coroutine_threadsafe(
                    self._iter.__anext__(),  # type: ignore[arg-type]
                    self._loop,
                ).result()
            except StopAsyncIteration:
                return

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self._body.aclose(), self._loop).result()


class SpendgateTransport(httpx2.BaseTransport):
    """For `openai.OpenAI(http_client=httpx2.Client(transport=...))`."""

    def __init__(self, gateway: Gateway | Settings) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="spendgate-library", daemon=True
        )
        self._thread.start()
        self._inner = AsyncSpendgateTransport(gateway)
        self.gateway = self._inner.gateway

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        content = request.read()
        copy = httpx2.Request(request.method, request.url, headers=request.headers, content=content)
        response = asyncio.run_coroutine_threadsafe(
            self._inner.handle_async_request(copy), self._loop
        ).result()
        stream = response.stream
        assert isinstance(stream, httpx2.AsyncByteStream)
        return httpx2.Response(
            response.status_code,
            headers=response.headers,
            stream=_SyncBody(stream, self._loop),
            request=request,
        )

    def close(self) -> None:
        if self._loop.is_closed():
            return
        asyncio.run_coroutine_threadsafe(self._inner.aclose(), self._loop).result()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()
