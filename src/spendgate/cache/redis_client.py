"""One asyncio Redis client per event loop, for the cache's Redis stores.

A `redis.asyncio` client belongs to the loop it first ran on; the gateway runs one loop, but
the CLI, the tests and the library's sync transport start others. The client is made on
first use and again whenever the running loop is another one.
"""

from __future__ import annotations

import asyncio
from typing import Any

__all__ = ["LoopRedis"]


class LoopRedis:
    """Call it for the client of the running loop; `aclose` closes the current one."""

    def __init__(self, url: str) -> None:
        import redis.asyncio as aioredis

        self.url = url
        self._factory = aioredis.from_url
        self._client: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def __call__(self) -> Any:
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop:
            self._client = self._factory(self.url)
            self._loop = loop
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
