"""Counters in Redis, shared by every gateway replica; each step is one Lua script, so it is
atomic across processes.

Layout, per counter (keys carry the configured prefix and the period id, and expire a period
after it ends):

    <prefix>c:<counter key>           hash  spent, reserved, l:<lease> = amount held
    <prefix>c:<counter key>:leases    zset  lease → expiry (ms); expired leases are reclaimed
                                            by the next reservation on that counter

Amounts travel as decimal strings; Lua numbers are doubles, so each counter is exact up to
2^53 nano-dollars (about $9 million per budget per period).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from spendgate.budgets.store import Counter, CounterState, ReserveResult, StoreUnavailable

__all__ = ["RESERVE_LUA", "SETTLE_LUA", "RedisStore"]

log = logging.getLogger("spendgate.budgets.redis")

RESERVE_LUA = """
-- KEYS[i]: counter hashes. ARGV: lease, now_ms, lease_expiry_ms, then 4 per key:
-- limit, hard (1/0), amount, keep_until_ms.
-- Returns {ok, spent_1, reserved_1, ..., spent_n, reserved_n, refused indexes...}.
local lease = ARGV[1]
local now = tonumber(ARGV[2])
local lease_exp = tonumber(ARGV[3])
local n = #KEYS
local out = {0}
local refused = {}
for i = 1, n do
  local k = KEYS[i]
  local lk = k .. ':leases'
  local expired = redis.call('ZRANGEBYSCORE', lk, '-inf', now)
  if #expired > 0 then
    local back = 0
    for _, id in ipairs(expired) do
      local amt = redis.call('HGET', k, 'l:' .. id)
      if amt then
        back = back + tonumber(amt)
        redis.call('HDEL', k, 'l:' .. id)
      end
    end
    redis.call('ZREMRANGEBYSCORE', lk, '-inf', now)
    if back ~= 0 then redis.call('HINCRBY', k, 'reserved', -back) end
  end
  local vals = redis.call('HMGET', k, 'spent', 'reserved')
  local spent = tonumber(vals[1] or '0')
  local reserved = tonumber(vals[2] or '0')
  out[#out + 1] = vals[1] or '0'
  out[#out + 1] = vals[2] or '0'
  local base = 3 + (i - 1) * 4
  if ARGV[base + 2] == '1' then
    local limit = tonumber(ARGV[base + 1])
    local amount = tonumber(ARGV[base + 3])
    if spent + reserved + amount > limit then refused[#refused + 1] = i end
  end
end
if #refused > 0 then
  for _, i in ipairs(refused) do out[#out + 1] = i end
  return out
end
out[1] = 1
for i = 1, n do
  local k = KEYS[i]
  local lk = k .. ':leases'
  local base = 3 + (i - 1) * 4
  local amount = ARGV[base + 3]
  redis.call('HINCRBY', k, 'reserved', amount)
  redis.call('HSET', k, 'l:' .. lease, amount)
  redis.call('ZADD', lk, lease_exp, lease)
  redis.call('PEXPIREAT', k, ARGV[base + 4])
  redis.call('PEXPIREAT', lk, ARGV[base + 4])
end
return out
"""

SETTLE_LUA = """
-- KEYS[i]: counter hashes. ARGV: lease, then 2 per key: actual, keep_until_ms.
-- Returns {before_1, after_1, ...}: spent around this settlement.
local lease = ARGV[1]
local out = {}
for i = 1, #KEYS do
  local k = KEYS[i]
  local held = redis.call('HGET', k, 'l:' .. lease)
  if held then
    redis.call('HDEL', k, 'l:' .. lease)
    redis.call('ZREM', k .. ':leases', lease)
    redis.call('HINCRBY', k, 'reserved', -tonumber(held))
  end
  local before = redis.call('HGET', k, 'spent') or '0'
  local after = redis.call('HINCRBY', k, 'spent', ARGV[2 * i])
  redis.call('PEXPIREAT', k, ARGV[2 * i + 1])
  out[#out + 1] = before
  out[#out + 1] = tostring(after)
end
return out
"""

SEED_LUA = """
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('HSET', KEYS[1], 'spent', ARGV[1], 'reserved', 0)
  redis.call('PEXPIREAT', KEYS[1], ARGV[2])
end
return 1
"""


def _ms(t: float) -> int:
    return int(t * 1000)


class RedisStore:
    """Counters shared through Redis. A client is made per event loop (library mode and
    tests may run several loops); `StoreUnavailable` is raised when Redis cannot answer."""

    synchronous = False

    def __init__(self, url: str, prefix: str = "spendgate:", timeout_s: float = 0.5) -> None:
        self.url = url
        self.prefix = prefix + "c:"
        self.timeout_s = timeout_s
        self._clients: dict[int, tuple[Any, dict[str, Any]]] = {}

    def _client(self) -> Any:
        return self._connection()[0]

    def _connection(self) -> tuple[Any, dict[str, Any]]:
        import redis.asyncio as aioredis

        loop_id = id(asyncio.get_running_loop())
        found = self._clients.get(loop_id)
        if found is None:
            # A blocking pool: a burst of calls waits for a free connection instead of
            # failing (which fail-open would turn into unaccounted spend).
            pool = aioredis.BlockingConnectionPool.from_url(
                self.url,
                socket_timeout=self.timeout_s,
                socket_connect_timeout=self.timeout_s,
                decode_responses=True,
                max_connections=64,
                timeout=10,
            )
            client = aioredis.Redis(connection_pool=pool)
            scripts = {  # Script objects: EVALSHA, falling back to EVAL on NOSCRIPT
                "reserve": client.register_script(RESERVE_LUA),
                "settle": client.register_script(SETTLE_LUA),
                "seed": client.register_script(SEED_LUA),
            }
            found = self._clients[loop_id] = (client, scripts)
        return found

    async def _run(self, script: str, keys: list[str], args: list[Any]) -> Any:
        import redis.exceptions

        _, scripts = self._connection()
        try:
            return await scripts[script](keys=keys, args=args)
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError) as exc:
            raise StoreUnavailable(f"budget store {self.url} unreachable: {exc}") from exc

    async def reserve(
        self, lease: str, counters: Sequence[Counter], now: float, lease_ttl: float
    ) -> ReserveResult:
        if not counters:
            return ReserveResult(True, [], [])
        args: list[Any] = [lease, _ms(now), _ms(now + lease_ttl)]
        for c in counters:
            args += [c.limit, 1 if c.hard else 0, c.amount, _ms(c.keep_until)]
        raw = await self._run("reserve", [self.prefix + c.key for c in counters], args)
        n = len(counters)
        states = [CounterState(int(raw[1 + 2 * i]), int(raw[2 + 2 * i])) for i in range(n)]
        refused = [int(i) - 1 for i in raw[1 + 2 * n :]]
        return ReserveResult(bool(int(raw[0])), states, refused)

    async def settle(
        self, lease: str, counters: Sequence[Counter], actual: Sequence[int]
    ) -> list[tuple[int, int]]:
        if not counters:
            return []
        args: list[Any] = [lease]
        for c, amount in zip(counters, actual, strict=True):
            args += [amount, _ms(c.keep_until)]
        raw = await self._run("settle", [self.prefix + c.key for c in counters], args)
        return [(int(raw[2 * i]), int(raw[2 * i + 1])) for i in range(len(counters))]

    def settle_now(
        self, lease: str, counters: Sequence[Counter], actual: Sequence[int]
    ) -> list[tuple[int, int]]:
        raise TypeError("the Redis store settles asynchronously; await settle()")

    async def read(self, keys: Sequence[str]) -> list[CounterState]:
        import redis.exceptions

        client = self._client()
        try:
            async with client.pipeline(transaction=False) as pipe:
                for key in keys:
                    pipe.hmget(self.prefix + key, "spent", "reserved")
                rows = await pipe.execute()
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError) as exc:
            raise StoreUnavailable(f"budget store {self.url} unreachable: {exc}") from exc
        return [CounterState(int(s or 0), int(r or 0)) for s, r in rows]

    async def scan(self, prefix: str) -> dict[str, CounterState]:
        client = self._client()
        keys = [
            k[len(self.prefix) :]
            async for k in client.scan_iter(match=_glob_escape(self.prefix + prefix) + "*")
            if not k.endswith(":leases")
        ]
        states = await self.read(keys)
        return dict(zip(keys, states, strict=True))

    async def seed(self, key: str, spent: int, keep_until: float) -> None:
        await self._run("seed", [self.prefix + key], [spent, _ms(keep_until)])

    async def aclose(self) -> None:
        clients, self._clients = self._clients, {}
        loop_id = id(asyncio.get_running_loop())
        for lid, (client, _) in clients.items():
            if lid == loop_id:
                await client.aclose()
                await client.connection_pool.disconnect()


def _glob_escape(text: str) -> str:
    return "".join("\\" + ch if ch in "*?[]\\" else ch for ch in text)
