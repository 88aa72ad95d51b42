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
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from spendgate.budgets.store import (
    LIVE,
    Counter,
    CounterState,
    ReserveResult,
    Settlement,
    StoreUnavailable,
)

__all__ = ["RESERVE_LUA", "SETTLE_LUA", "EpochChanged", "RedisStore"]

log = logging.getLogger("spendgate.budgets.redis")

RESERVE_LUA = """
-- KEYS[1..n]: counter hashes; KEYS[n+1]: the live-replica zset; KEYS[n+2]: the epoch
-- hash. ARGV: lease, now_ms, lease_expiry_ms, epoch, then 4 per key: limit, hard (1/0),
-- amount, keep_until_ms. Returns {ok, live replicas, spent_1, reserved_1, ..., spent_n,
-- reserved_n, refused indexes...}, or {-1} when the epoch is not the caller's (Redis
-- restarted empty: the caller recovers first).
local n = #KEYS - 2
if redis.call('HGET', KEYS[n + 2], 'id') ~= ARGV[4] then return {-1} end
local lease = ARGV[1]
local now = tonumber(ARGV[2])
local lease_exp = tonumber(ARGV[3])
local out = {0, redis.call('ZCARD', KEYS[n + 1])}
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
        -- a tombstone: a settlement arriving after the reclaim still counts, once
        redis.call('HSET', k, 'x:' .. id, 1)
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
  local base = 4 + (i - 1) * 4
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
  local base = 4 + (i - 1) * 4
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
-- KEYS[1..n]: counter hashes; KEYS[n+1]: the lease's once-marker; KEYS[n+2]: the
-- epoch hash. ARGV: lease, epoch, mode, marker_ttl_ms, then 2 per key: actual,
-- keep_until_ms. Idempotent, so a settlement whose answer was lost may be sent again:
--   the lease is held      -> release it and add `actual` to spent;
--   a tombstone is left    -> (reclaimed after its TTL) add `actual`, drop the tombstone;
--   mode 'once'            -> (admitted while Redis was away: never reserved here) add
--                             `actual` if the once-marker was not set yet;
--   otherwise              -> already settled (or reserved before Redis came back empty,
--                             so counted by the ledger seed): nothing.
-- Mode 'release' only gives the reservation back: a finished call of the seed's window
-- whose ledger row the seed reads.
-- A call received before the epoch's cutoff that is applied here is also in the ledger
-- seed's window: its replica reports it (SEED_DELTA's f: fields) once its row is written.
-- Returns {code, before_1, after_1, ...}: code 1 applied, 0 not applied, -1 epoch moved.
local n = #KEYS - 2
if redis.call('HGET', KEYS[n + 2], 'id') ~= ARGV[2] then return {-1} end
local lease = ARGV[1]
local apply = false
local out = {0}
for i = 1, n do
  local k = KEYS[i]
  local held = redis.call('HGET', k, 'l:' .. lease)
  if held then
    redis.call('HDEL', k, 'l:' .. lease)
    redis.call('ZREM', k .. ':leases', lease)
    redis.call('HINCRBY', k, 'reserved', -tonumber(held))
    apply = true
  elseif redis.call('HDEL', k, 'x:' .. lease) == 1 then
    apply = true
  end
end
if ARGV[3] == 'once' then
  if redis.call('SET', KEYS[n + 1], 1, 'NX', 'PX', ARGV[4]) then apply = true end
end
if ARGV[3] == 'release' then apply = false end
if apply then out[1] = 1 end
for i = 1, n do
  local k = KEYS[i]
  local before = redis.call('HGET', k, 'spent') or '0'
  local after = before
  if apply then
    after = tostring(redis.call('HINCRBY', k, 'spent', ARGV[3 + 2 * i]))
    redis.call('PEXPIREAT', k, ARGV[4 + 2 * i])
  end
  out[#out + 1] = before
  out[#out + 1] = after
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

EPOCH_LUA = """
-- KEYS[1]: the epoch hash. ARGV: new id, adopt (1: counters already exist, so they are
-- not re-seeded: cutoff 0). Creates the epoch when missing; returns {id, cutoff_ms}.
if redis.call('EXISTS', KEYS[1]) == 0 then
  local t = redis.call('TIME')
  local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  local cutoff = now_ms
  if ARGV[2] == '1' then cutoff = 0 end
  redis.call('HSET', KEYS[1], 'id', ARGV[1], 'cutoff', cutoff)
end
return redis.call('HMGET', KEYS[1], 'id', 'cutoff')
"""

SEED_DELTA_LUA = """
-- KEYS[1..n]: counter hashes; KEYS[n+1]: the epoch hash. ARGV: epoch, ledger id, replica
-- id, report (1: this replica's written-early amounts below are current), then 3 per key:
-- the ledger's spend before the epoch's cutoff, keep_until_ms, and what this replica's
-- calls of that window added here by settling and whose ledger rows are written.
-- The counter keeps, per ledger, the seed it last added (s:<ledger>) and each replica's
-- report (f:<ledger>:<replica>); the seed is the ledger's spend minus the reports (those
-- calls are already in `spent`), and only its change is added: idempotent, and a report
-- that lags only over-counts (refuses early) until the next seed.
local n = #KEYS - 1
if redis.call('HGET', KEYS[n + 1], 'id') ~= ARGV[1] then return -1 end
local field = 's:' .. ARGV[2]
local mine = 'f:' .. ARGV[2] .. ':' .. ARGV[3]
local prefix = 'f:' .. ARGV[2] .. ':'
for i = 1, n do
  local k = KEYS[i]
  if ARGV[4] == '1' then redis.call('HSET', k, mine, ARGV[4 + 3 * i]) end
  local reported = 0
  local all = redis.call('HGETALL', k)
  for j = 1, #all, 2 do
    if string.sub(all[j], 1, #prefix) == prefix then reported = reported + tonumber(all[j + 1]) end
  end
  local want = tonumber(ARGV[2 + 3 * i]) - reported
  local had = tonumber(redis.call('HGET', k, field) or '0')
  if want ~= had then
    redis.call('HINCRBY', k, 'spent', want - had)
    redis.call('HSET', k, field, want)
  end
  if ARGV[3 + 3 * i] ~= '0' then redis.call('PEXPIREAT', k, ARGV[3 + 3 * i]) end
end
return 1
"""

REREGISTER_LUA = """
-- KEYS[1..n]: counter hashes; KEYS[n+1]: the epoch hash. ARGV: epoch, lease,
-- lease_expiry_ms, then 2 per key: amount, keep_until_ms. Holds a reservation made before
-- Redis restarted again, without a limit check (the call is already running).
local n = #KEYS - 1
if redis.call('HGET', KEYS[n + 1], 'id') ~= ARGV[1] then return -1 end
local lease = ARGV[2]
for i = 1, n do
  local k = KEYS[i]
  if not redis.call('HGET', k, 'l:' .. lease) then
    redis.call('HINCRBY', k, 'reserved', ARGV[2 + 2 * i])
    redis.call('HSET', k, 'l:' .. lease, ARGV[2 + 2 * i])
    redis.call('ZADD', k .. ':leases', ARGV[3], lease)
    redis.call('PEXPIREAT', k, ARGV[3 + 2 * i])
    redis.call('PEXPIREAT', k .. ':leases', ARGV[3 + 2 * i])
  end
end
return 1
"""

HEARTBEAT_LUA = """
-- KEYS[1]: zset of live replicas. ARGV: replica id, stale_ms. Returns the live count.
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now_ms, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now_ms - tonumber(ARGV[2]))
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]) * 2)
return redis.call('ZCARD', KEYS[1])
"""


ONCE_TTL_MS = 7 * 86400 * 1000
"""How long a fail-open call's once-marker lives: longer than any outbox backlog."""


def _ms(t: float) -> int:
    return int(t * 1000)


class EpochChanged(StoreUnavailable):
    """Redis answered under another epoch twice in a row (restarting over and over)."""


EpochHook = Callable[[str, float], Awaitable[None]]
"""`hook(epoch, cutoff)`: run once a process meets an epoch (at its first contact and after
Redis came back empty), before any reservation in it: seed the counters from the ledger and
hold again the reservations of calls still running."""

DOWN_FOR_S = 1.0
"""After Redis failed to answer, reservations fail fast for this long (no 0.5 s timeout per
call while it is away); settlements keep trying through the outbox."""


class RedisStore:
    """Counters shared through Redis. A client is made per event loop (library mode and
    tests may run several loops); `StoreUnavailable` is raised when Redis cannot answer.

    Epochs: `<prefix>epoch` holds a random id and a cutoff time, made by the first process
    that finds it missing (a new Redis, or one restarted empty). Every script checks it, so a
    process notices a restart at its next call, runs `on_epoch` (re-seed from the ledger
    the spend of calls received before the cutoff), and only then reserves again. Calls
    received before the cutoff are in the ledger seed's window: their spend reaches the
    counter through the seed or through their settlement here, never both (each replica
    reports what such calls settled here once their rows are written, and the seed leaves
    that out)."""

    synchronous = False
    epochs = True

    def __init__(self, url: str, prefix: str = "spendgate:", timeout_s: float = 0.5) -> None:
        self.url = url
        self.root = prefix
        self.prefix = prefix + "c:"
        self.epoch_key = prefix + "epoch"
        self.timeout_s = timeout_s
        self.epoch: str | None = None
        self.cutoff = 0.0
        """Unix seconds: calls received before it are counted from the ledger."""
        self.on_epoch: EpochHook | None = None
        self.recoveries = 0
        self.replicas = 0
        """Live replicas as the last reservation saw them (heartbeats register them)."""
        self._clients: dict[int, tuple[Any, dict[str, Any]]] = {}
        self._locks: dict[int, asyncio.Lock] = {}
        self._down_until = 0.0

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
                name: client.register_script(lua)
                for name, lua in (
                    ("reserve", RESERVE_LUA),
                    ("settle", SETTLE_LUA),
                    ("seed", SEED_LUA),
                    ("epoch", EPOCH_LUA),
                    ("seed_delta", SEED_DELTA_LUA),
                    ("reregister", REREGISTER_LUA),
                    ("heartbeat", HEARTBEAT_LUA),
                )
            }
            found = self._clients[loop_id] = (client, scripts)
        return found

    async def _run(self, script: str, keys: list[str], args: list[Any]) -> Any:
        import redis.exceptions

        _, scripts = self._connection()
        try:
            return await scripts[script](keys=keys, args=args)
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError) as exc:
            self._down_until = time.monotonic() + DOWN_FOR_S
            raise StoreUnavailable(f"budget store {self.url} unreachable: {exc}") from exc

    # ------------------------------------------------------------------ epochs
    async def _recover(self, seen: str | None) -> None:
        """Meet the current epoch (creating it when Redis is empty) and run `on_epoch`;
        single-flight per event loop: concurrent callers wait for the one doing it."""
        loop_id = id(asyncio.get_running_loop())
        lock = self._locks.setdefault(loop_id, asyncio.Lock())
        async with lock:
            if self.epoch is not None and self.epoch != seen:
                return  # another caller recovered meanwhile
            adopt = await self._has_counters()
            raw = await self._run("epoch", [self.epoch_key], [uuid.uuid4().hex, int(adopt)])
            epoch, cutoff = str(raw[0]), int(raw[1]) / 1000
            if epoch != self.epoch:
                if self.epoch is not None:
                    log.warning(
                        "budget store %s came back under a new epoch (restarted empty?): "
                        "re-seeding counters from the ledger",
                        self.url,
                    )
                    self.recoveries += 1
                before = (self.epoch, self.cutoff)
                self.epoch, self.cutoff = epoch, cutoff
                if self.on_epoch is not None:
                    try:
                        await self.on_epoch(epoch, cutoff)
                    except StoreUnavailable:
                        self.epoch, self.cutoff = before  # the next call recovers again
                        raise
                    except Exception:
                        log.exception("re-seeding the budget counters failed")

    async def _has_counters(self) -> bool:
        """Whether counters exist without an epoch (an older spendgate made them): they are
        adopted as they are, not re-seeded on top."""
        import redis.exceptions

        client = self._client()
        try:
            cursor, found = await client.scan(0, match=_glob_escape(self.prefix) + "*", count=500)
            while not found and cursor:
                cursor, found = await client.scan(
                    cursor, match=_glob_escape(self.prefix) + "*", count=500
                )
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError) as exc:
            raise StoreUnavailable(f"budget store {self.url} unreachable: {exc}") from exc
        return bool(found) and not await client.exists(self.epoch_key)

    async def _epoch_call(self, script: str, keys: list[str], args: Callable[[], list[Any]]) -> Any:
        """Run an epoch-checked script, recovering (once) when the epoch moved."""
        for _ in range(2):
            if self.epoch is None:
                await self._recover(None)
            seen = self.epoch
            raw = await self._run(script, [*keys, self.epoch_key], args())
            code = raw if isinstance(raw, int) else int(raw[0])
            if code != -1:
                return raw
            await self._recover(seen)
        raise EpochChanged(f"budget store {self.url} keeps changing epoch")

    # ------------------------------------------------------------------ counters
    async def reserve(
        self, lease: str, counters: Sequence[Counter], now: float, lease_ttl: float
    ) -> ReserveResult:
        if not counters:
            return ReserveResult(True, [], [])
        if time.monotonic() < self._down_until:
            raise StoreUnavailable(
                f"budget store {self.url} unreachable (retrying shortly)", maybe_applied=False
            )

        def args() -> list[Any]:
            out: list[Any] = [lease, _ms(now), _ms(now + lease_ttl), self.epoch]
            for c in counters:
                out += [c.limit, 1 if c.hard else 0, c.amount, _ms(c.keep_until)]
            return out

        keys = [self.prefix + c.key for c in counters]
        raw = await self._epoch_call("reserve", [*keys, self.root + "replicas"], args)
        n = len(counters)
        self.replicas = int(raw[1])
        states = [CounterState(int(raw[2 + 2 * i]), int(raw[3 + 2 * i])) for i in range(n)]
        refused = [int(i) - 1 for i in raw[2 + 2 * n :]]
        return ReserveResult(bool(int(raw[0])), states, refused)

    async def settle(
        self, lease: str, counters: Sequence[Counter], actual: Sequence[int], how: Settlement = LIVE
    ) -> list[tuple[int, int]]:
        """`finished`: the call's ledger row is already written (an outbox entry): if the
        call is in the seed's window, the seed counts it, so this only releases."""
        if not counters:
            return []

        def args() -> list[Any]:
            early = how.received_at is not None and how.received_at < self.cutoff
            mode = "release" if early and how.finished else "once" if how.once else "lease"
            out: list[Any] = [lease, self.epoch, mode, ONCE_TTL_MS]
            for c, amount in zip(counters, actual, strict=True):
                out += [amount, _ms(c.keep_until)]
            return out

        keys = [self.prefix + c.key for c in counters]
        raw = await self._epoch_call("settle", [*keys, self.root + "once:" + lease], args)
        self._down_until = 0.0  # it answered: reservations may try it again
        # the marker key sits between the counters and the epoch key
        return [(int(raw[1 + 2 * i]), int(raw[2 + 2 * i])) for i in range(len(counters))]

    def settle_now(
        self, lease: str, counters: Sequence[Counter], actual: Sequence[int]
    ) -> list[tuple[int, int]]:
        raise TypeError("the Redis store settles asynchronously; await settle()")

    async def seed_delta(
        self,
        ledger_id: str,
        spend: dict[str, tuple[int, float]],
        *,
        replica: str = "",
        reported: dict[str, int] | None = None,
    ) -> None:
        """Seed each counter with the ledger's spend `spend[key]` (before the cutoff), less
        what replicas reported as settled here (`reported`: this replica's, whose rows are
        written; None keeps its last report). Idempotent."""
        keys = sorted(set(spend) | set(reported or {}))
        for i in range(0, len(keys), 200):
            chunk = keys[i : i + 200]

            def args(chunk: list[str] = chunk) -> list[Any]:
                out: list[Any] = [self.epoch, ledger_id, replica, 0 if reported is None else 1]
                for key in chunk:
                    nanos, keep = spend.get(key, (0, 0.0))  # keep 0: expiry unchanged
                    out += [nanos, _ms(keep), (reported or {}).get(key, 0)]
                return out

            await self._run_checked("seed_delta", [self.prefix + k for k in chunk], args)

    async def reregister(
        self, lease: str, counters: Sequence[Counter], now: float, lease_ttl: float
    ) -> None:
        """Hold again, without a limit check, a reservation of a call still running."""

        def args() -> list[Any]:
            out: list[Any] = [self.epoch, lease, _ms(now + lease_ttl)]
            for c in counters:
                out += [c.amount, _ms(c.keep_until)]
            return out

        await self._run_checked("reregister", [self.prefix + c.key for c in counters], args)

    async def _run_checked(
        self, script: str, keys: list[str], args: Callable[[], list[Any]]
    ) -> None:
        """For scripts run from inside a recovery: an epoch change here is left to the next
        reservation, which recovers again."""
        raw = await self._run(script, [*keys, self.epoch_key], args())
        if int(raw) == -1:
            raise EpochChanged(f"budget store {self.url} changed epoch during recovery")

    async def mark_seeded(self, replica: str) -> int:
        """Record that this replica seeded its ledger in the current epoch; returns how many
        replicas did so far."""
        import redis.exceptions

        key = f"{self.root}seeded:{self.epoch}"
        client = self._client()
        try:
            async with client.pipeline(transaction=True) as pipe:
                pipe.sadd(key, replica)
                pipe.expire(key, 7 * 86400)
                pipe.scard(key)
                _, _, count = await pipe.execute()
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError) as exc:
            raise StoreUnavailable(f"budget store {self.url} unreachable: {exc}") from exc
        return int(count)

    async def seeded_count(self) -> int:
        import redis.exceptions

        try:
            return int(await self._client().scard(f"{self.root}seeded:{self.epoch}"))
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError) as exc:
            raise StoreUnavailable(f"budget store {self.url} unreachable: {exc}") from exc

    async def check_epoch(self) -> None:
        """Notice a restart without waiting for the next reservation (heartbeat)."""
        import redis.exceptions

        try:
            current = await self._client().hget(self.epoch_key, "id")
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError) as exc:
            raise StoreUnavailable(f"budget store {self.url} unreachable: {exc}") from exc
        if self.epoch is not None and current != self.epoch:
            await self._recover(self.epoch)

    async def heartbeat(self, replica: str, stale_s: float) -> int:
        """Say this replica is alive; returns how many replicas are (fail-open shares)."""
        raw = await self._run("heartbeat", [self.root + "replicas"], [replica, _ms(stale_s)])
        return int(raw)

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
