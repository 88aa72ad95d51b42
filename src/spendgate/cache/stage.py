"""The cache stage: answer from the cache when it is safe, otherwise pass the call on and
store the answer when it completes.

Order per call: policy (is the cache on for this feature? may this request use it?) →
`x-spendgate-cache: bypass|refresh` → exact lookup → semantic lookup → upstream → store.
A hit answers alone with zero usage (actual cost 0) and credits `call.savings["cache"]` with
what the stored answer's usage costs on the requested model; `call.cache_outcome` becomes
the `x-spendgate-cache` response header (hit, semantic-hit, miss, bypass).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import TYPE_CHECKING, Any, ClassVar

import orjson

from spendgate.cache.backends import Backend, MemoryLRU, SQLiteBackend, open_backend
from spendgate.cache.config import CacheConfig
from spendgate.cache.exact import (
    body_from_sse,
    exact_key,
    request_skip_reason,
    response_skip_reason,
    sse_from_body,
    usage_from_dict,
    usage_to_dict,
    zero_usage_body,
)
from spendgate.call import HIDDEN, Call, Decision, Usage, fields_json
from spendgate.errors import GatewayError
from spendgate.pricing import normalize_tier
from spendgate.reply import Reply
from spendgate.stages import Next, StageContext

if TYPE_CHECKING:
    from spendgate.cache.semantic import SemanticEntry, SemanticIndex
    from spendgate.cache.thresholds import ThresholdPolicy

__all__ = ["CacheDecision", "CacheStage", "Policy", "build"]

log = logging.getLogger("spendgate.cache")
HEADER = "x-spendgate-cache"
THRESHOLD_HEADER = "x-spendgate-cache-threshold"


@dataclass
class CacheDecision(Decision):
    """What the cache stage did (`extra.decisions.cache`)."""

    key: ClassVar[str] = "cache"
    outcome: str | None = None
    """hit, semantic-hit, miss, refresh, bypass, skip, or shadow-hit / shadow-semantic-hit."""
    reason: str | None = None
    """Why a `skip` (the request is not cacheable)."""
    semantic: dict[str, Any] | None = None
    """The best semantic candidate: score, decision (hit, verify, explore, miss) and the
    entry's own threshold when thresholds are learnt."""
    lookup_ms: float | None = None
    age_s: float | None = None
    """A hit's lookup time and the stored answer's age."""
    would_save_usd: str | None = None
    """Shadow mode: what the hit would have saved (None when the price is unknown)."""
    not_stored: str | None = None
    """Why the answer was not stored."""
    shadow: bool = field(default=False, metadata=HIDDEN)

    def as_json(self) -> Any:
        out = fields_json(self)
        if self.shadow:  # written even when None: the hit happened, its price is unknown
            out["would_save_usd"] = self.would_save_usd
        return out


@dataclass(frozen=True, slots=True)
class Policy:
    """The cache settings that apply to one call (top level merged with its feature's)."""

    ttl_s: float
    scope: str
    semantic: bool
    cache_tool_calls: bool
    cache_sampled: bool
    threshold: float | None
    delta: float | None = None
    verify_rate: float = 0.0
    equivalence: str = "question"
    shadow: bool = False
    """Look up and record what a hit would have saved, but always call upstream."""


@dataclass(slots=True)
class Pending:
    """A semantic candidate whose answer is compared with the upstream one when it arrives
    (a sampled verification of a would-be hit, or an exploration of a near miss)."""

    entry: SemanticEntry
    score: float
    decision: str


class CacheStage:
    name = "cache"

    def __init__(self, config: CacheConfig, ctx: StageContext | None = None) -> None:
        self.config = config
        self.ctx = ctx
        self.backend: Backend = open_backend(
            config.backend, max_bytes=config.max_bytes, prefix=config.key_prefix
        )
        self.semantic: SemanticIndex | None = None
        self.thresholds: ThresholdPolicy | None = None
        sem = config.semantic
        if sem.enabled or any(f.semantic for f in config.features.values()):
            # numpy, tokenizers and the embedder load only when the semantic tier is on.
            from spendgate.cache.semantic import (
                SemanticIndex,
                SemanticMatcher,
                open_semantic_store,
            )
            from spendgate.cache.thresholds import ThresholdPolicy

            matcher = SemanticMatcher(
                embedder_name=sem.embedder,
                verifier_name=sem.verifier,
                threshold=sem.threshold,
                min_cosine=sem.min_cosine,
                candidates=sem.candidates,
                verify_top=sem.verify_top,
            )
            self.thresholds = ThresholdPolicy(matcher.prior, verify_rate=sem.verify_rate)
            self.semantic = SemanticIndex(
                matcher,
                open_semantic_store(sem.store, config.key_prefix),
                sync_interval_s=sem.sync_interval_s,
                max_entries=sem.max_entries,
            )
        self._tasks: set[asyncio.Task[Any]] = set()
        self.outcomes: dict[tuple[str, bool], int] = {}
        """(verify | explore, agreed) → count: the verified outcomes this stage recorded."""
        self._loop: asyncio.AbstractEventLoop | None = None

    # ------------------------------------------------------------ policy
    def policy(self, call: Call) -> Policy | None:
        c = self.config
        f = c.override(call.tags.feature)
        if not c.enabled_for(call.tags.feature):
            return None

        def pick(name: str) -> Any:
            value = getattr(f, name, None) if f is not None else None
            return getattr(c, name) if value is None else value

        semantic = c.semantic.enabled if f is None or f.semantic is None else f.semantic
        threshold = c.semantic.threshold
        if f is not None and f.threshold is not None:
            threshold = max(threshold or 0.0, f.threshold)

        def sem(name: str) -> Any:
            value = getattr(f, name, None) if f is not None else None
            return getattr(c.semantic, name) if value is None else value

        return Policy(
            ttl_s=pick("ttl_s"),
            scope=pick("scope"),
            semantic=semantic and self.semantic is not None,
            cache_tool_calls=pick("cache_tool_calls"),
            cache_sampled=pick("cache_sampled"),
            threshold=threshold,
            delta=sem("delta"),
            verify_rate=sem("verify_rate"),
            equivalence=sem("equivalence"),
            shadow=c.shadow_for(call.tags.feature),
        )

    @staticmethod
    def _stricter(call: Call, policy: Policy) -> Policy:
        """`x-spendgate-cache-threshold: 0.97` raises the semantic bar for one request; a
        value below the configured one is ignored (a request may never loosen it)."""
        raw = call.headers.get(THRESHOLD_HEADER)
        if raw is None:
            return policy
        try:
            value = float(raw)
        except ValueError:
            value = -1.0
        if not 0.0 <= value <= 1.0:
            raise GatewayError(
                400,
                f"Invalid {THRESHOLD_HEADER} header {raw!r}: a number between 0 and 1.",
                param=THRESHOLD_HEADER,
                code="invalid_cache_header",
            )
        if policy.threshold is not None and value <= policy.threshold:
            return policy
        return replace(policy, threshold=value)

    # ------------------------------------------------------------ the stage
    async def handle(self, call: Call, call_next: Next) -> Reply:
        self._loop = asyncio.get_running_loop()
        policy = self.policy(call)
        if policy is None or call.endpoint == "embeddings":
            return await call_next(call)
        mode = call.headers.get(HEADER, "").strip().lower()
        if mode not in ("", "bypass", "refresh"):
            raise GatewayError(
                400,
                f"Invalid {HEADER} header {mode!r}: use `bypass` (skip the cache) or "
                "`refresh` (skip the lookup, store the new answer).",
                param=HEADER,
                code="invalid_cache_header",
            )
        if mode == "bypass":
            call.cache_outcome = "bypass"
            call.decisions.add(CacheDecision(outcome="bypass"))
            return await call_next(call)
        policy = self._stricter(call, policy)
        skip = request_skip_reason(call, cache_sampled=policy.cache_sampled)
        if skip is not None:
            call.decisions.add(CacheDecision(outcome="skip", reason=skip))
            return await call_next(call)
        key = exact_key(call, policy.scope)
        question: tuple[str, list[Any]] | None = None
        partition: str | None = None
        if policy.semantic:
            from spendgate.cache.semantic import partition_key, query_text

            question = query_text(call, self.config.semantic.max_turns)
            if question is not None and len(question[0]) > self.config.semantic.max_chars:
                question = None
            partition = partition_key(call, policy.scope, question[1]) if question else None
        pending: Pending | None = None
        if mode != "refresh":
            reply, pending = await self._lookup(call, key, policy, question, partition)
            if reply is not None:
                return reply
        call.cache_outcome = "refresh" if mode == "refresh" else "miss"
        decision = call.decisions.ensure(CacheDecision)
        if decision.outcome is None:
            decision.outcome = call.cache_outcome
        reply = await call_next(call)
        captured: list[bytes] | None = None
        if reply.is_stream and reply.chunks is not None:
            captured = []
            reply.chunks = _capture(reply.chunks, captured)
        reply.on_done(
            lambda r: self._store(call, r, key, policy, captured, question, partition, pending)
        )
        return reply

    def decide(self, entry: SemanticEntry, score: float, policy: Policy) -> str:
        """hit | verify | explore | miss for the best candidate (see `thresholds.py`)."""
        assert self.semantic is not None
        floor = policy.threshold or 0.0
        if policy.delta is None or self.thresholds is None:
            cut = max(self.semantic.matcher.threshold, floor)
            return "hit" if score >= 1.0 or score >= cut else "miss"
        decision = self.thresholds.decide(
            entry.stats, score, policy.delta, verify_rate=policy.verify_rate
        )
        if decision in ("hit", "verify") and score < 1.0 and score < floor:
            decision = "explore"  # the operator's or the request's floor is stricter
        if decision == "explore" and not self.config.semantic.explore:
            decision = "miss"
        return decision

    async def _lookup(
        self,
        call: Call,
        key: str,
        policy: Policy,
        question: tuple[str, list[Any]] | None,
        partition: str | None,
    ) -> tuple[Reply | None, Pending | None]:
        started = time.perf_counter()
        raw = await self.backend.get(key)
        outcome = "hit"
        pending: Pending | None = None
        if raw is None and question is not None and partition is not None and self.semantic:
            await self.semantic.sync()
            found = self.semantic.candidate(partition, question[0])
            if found is not None:
                entry, score = found
                decision = self.decide(entry, score, policy)
                info: dict[str, Any] = {"score": round(score, 5), "decision": decision}
                if policy.delta is not None and self.thresholds is not None:
                    t = self.thresholds.threshold(entry.stats, policy.delta)
                    info["entry_threshold"] = round(min(t, 1.0), 5)
                call.decisions.ensure(CacheDecision).semantic = info
                if decision == "hit":
                    raw = await self.backend.get(entry.answer_key)
                    outcome = "semantic-hit"
                elif decision in ("verify", "explore"):
                    pending = Pending(entry, score, decision)
        if raw is None:
            return None, pending
        try:
            stored = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return None, pending
        lookup_ms = round((time.perf_counter() - started) * 1000, 3)
        saved = self._value(call, usage_from_dict(stored.get("usage") or {}))
        record = call.decisions.ensure(CacheDecision)
        if policy.shadow:
            record.outcome = "shadow-" + outcome
            record.shadow = True
            record.would_save_usd = format(saved, "f") if saved is not None else None
            return None, None
        call.cache_outcome = outcome
        if saved is not None:
            call.savings["cache"] = saved
        age = round(time.time() - float(stored.get("at", 0)), 3)
        record.outcome, record.lookup_ms, record.age_s = outcome, lookup_ms, age
        return self._replay(call, stored), None

    def _replay(self, call: Call, stored: dict[str, Any]) -> Reply:
        body = zero_usage_body(stored["body"])
        deps = self.ctx.table.serving(call.model) if self.ctx is not None else []
        reply = Reply(
            usage=Usage(),
            served_model=stored.get("served_model") or call.model,
            deployment=deps[0].name if deps else None,
            finish_reason=stored.get("finish_reason"),
        )
        reply.ttfb_ms = (time.perf_counter() - call.started) * 1000
        if call.stream:
            include_usage = bool((call.body.get("stream_options") or {}).get("include_usage"))
            reply.chunks = _replay_chunks(
                sse_from_body(call.api, body, include_usage=include_usage)
            )
        else:
            reply.body = body
        return reply

    def _value(self, call: Call, usage: Usage) -> Decimal | None:
        """What the stored answer's usage costs on the requested model (the avoided cost)."""
        if self.ctx is None:
            return None
        tier = normalize_tier(call.body.get("service_tier"))
        return self.ctx.pricer.total(call.requested_model, usage, service_tier=tier)

    # ------------------------------------------------------------ store
    def _store(
        self,
        call: Call,
        reply: Reply,
        key: str,
        policy: Policy,
        captured: list[bytes] | None,
        question: tuple[str, list[Any]] | None,
        partition: str | None,
        pending: Pending | None = None,
    ) -> None:
        if reply.status != 200 or reply.error is not None or reply.client_disconnected:
            return
        if reply.extra.get("stream_error") or reply.usage is None or reply.usage.estimated:
            return
        body = body_from_sse(call.api, b"".join(captured)) if captured is not None else reply.body
        reason = response_skip_reason(body, cache_tool_calls=policy.cache_tool_calls)
        if pending is not None and isinstance(body, dict) and reason is None:
            self._spawn(self._judge(pending, body, policy))
        if reason is not None:
            call.decisions.ensure(CacheDecision).not_stored = reason
            return
        entry = {
            "body": body,
            "usage": usage_to_dict(reply.usage),
            "served_model": reply.served_model,
            "finish_reason": reply.finish_reason,
            "at": time.time(),
        }
        value = orjson.dumps(entry)
        if len(value) > self.config.max_entry_bytes:
            return
        sem: SemanticEntry | None = None
        if question is not None and partition is not None and self.semantic is not None:
            from spendgate.cache.semantic import SemanticEntry

            vector = self.semantic.matcher.embedder.embed(question[0]).vector
            sem = SemanticEntry(partition, question[0], vector, key, time.time() + policy.ttl_s)
        # In-process parts are written now, so the very next request can hit; shared
        # stores are written by a task (callbacks are synchronous; see docs/pipeline.md).
        local = self.backend.lru if isinstance(self.backend, SQLiteBackend) else self.backend
        if isinstance(local, MemoryLRU):
            local.set_now(key, value, time.time() + policy.ttl_s)
        if sem is not None and self.semantic is not None and self.semantic.local_only:
            self.semantic.insert(sem)
            sem = None
        if isinstance(self.backend, MemoryLRU) and sem is None:
            return
        self._spawn(self._write(key, value, policy.ttl_s, sem))

    async def _write(self, key: str, value: bytes, ttl_s: float, sem: SemanticEntry | None) -> None:
        try:
            if not isinstance(self.backend, MemoryLRU):
                await self.backend.set(key, value, ttl_s)
            if sem is not None and self.semantic is not None:
                await self.semantic.add(sem)
        except Exception:
            log.exception("cache store failed")

    async def _judge(self, pending: Pending, body: dict[str, Any], policy: Policy) -> None:
        """Compare the fresh answer with the candidate's stored one and record the outcome
        on the entry (a disagreement tightens it at once)."""
        from spendgate.cache.thresholds import answers_agree

        try:
            raw = await self.backend.get(pending.entry.answer_key)
            if raw is None:
                return  # the stored answer expired: nothing to compare with
            stored = orjson.loads(raw).get("body")
            agreed = answers_agree(
                answer_of(stored),
                answer_of(body),
                mode="answer" if policy.equivalence == "answer" else "text",
                bar=self.config.semantic.answer_similarity,
            )
            pending.entry.stats.record(pending.score, agreed)
            self.outcomes[pending.decision, agreed] = (
                self.outcomes.get((pending.decision, agreed), 0) + 1
            )
        except Exception:
            log.exception("cache: comparing a verified answer failed")

    def _spawn(self, coro: Any) -> None:
        try:
            task = asyncio.get_running_loop().create_task(coro)
        except RuntimeError:
            coro.close()
            return
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self) -> None:
        """Wait for pending stores (tests and graceful shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    def drain_threadsafe(self, timeout: float = 10.0) -> None:
        """From another thread (a test driving a `GatewayServer`): wait for pending stores
        on the loop that serves this stage."""
        if self._loop is None or self._loop.is_closed():
            return
        asyncio.run_coroutine_threadsafe(self.drain(), self._loop).result(timeout)


def answer_of(body: Any) -> Any:
    """What an answer says, for comparing two answers: the message text (OpenAI or
    Anthropic), or the tool calls; the whole body when the shape is unknown."""
    if not isinstance(body, dict):
        return body
    choices = body.get("choices")
    if isinstance(choices, list) and choices and isinstance(choices[0], dict):
        message = choices[0].get("message") or {}
        if message.get("tool_calls"):
            return [
                (c.get("function") or {}).get("name", "")
                + (c.get("function") or {}).get("arguments", "")
                for c in message["tool_calls"]
                if isinstance(c, dict)
            ]
        return message.get("content") or ""
    blocks = body.get("content")
    if isinstance(blocks, list):
        return "".join(str(b.get("text", "")) for b in blocks if isinstance(b, dict))
    return body


async def _capture(chunks: AsyncIterator[bytes], into: list[bytes]) -> AsyncIterator[bytes]:
    async for chunk in chunks:
        into.append(chunk)
        yield chunk


async def _replay_chunks(events: list[bytes]) -> AsyncIterator[bytes]:
    for event in events:
        yield event


def build(ctx: StageContext) -> CacheStage | None:
    config: CacheConfig = ctx.settings.cache
    if not config.on_anywhere():
        return None
    try:
        stage = CacheStage(config, ctx)
    except ValueError as exc:
        from spendgate.config import ConfigError

        raise ConfigError(str(exc)) from None
    return stage
