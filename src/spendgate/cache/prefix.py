"""Provider prompt caching: the `prefix` stage, last before the dispatcher.

Why a stage: Anthropic caches a prompt prefix only where the request marks it
(`cache_control` breakpoints, at most 4, on a prefix of at least 1,024 tokens), and most
clients never mark anything. A cache read costs 10% of the input price; a write costs 125%
(5-minute TTL) or 200% (1-hour TTL). So the stage marks the *stable* parts of the prompt —
tools, system, long documents, and in conversations the turns the next call will resend —
and credits what the provider's cache then saved. OpenAI caches prefixes on its own; there
the stage only watches that each feature's prefix stays stable (a system prompt that
changes every call — a timestamp, a user name up front — defeats the cache) and records it.

Rules:

- Runs only when the call will reach an Anthropic-format upstream (`api_for(model)` of the
  first deployment serving it). OpenAI-format bodies get `cache_control` on their content
  parts and tools, which the translator keeps; Anthropic bodies get it on their blocks.
- A body that already carries `cache_control` is the client's to manage: left untouched.
- Never reorders or rewrites content: a string system prompt or message becomes the same
  text as one block, and only the marker is added. The client's dict is never mutated.
- Token positions are estimated with the fast o200k tokenizer scaled to Claude's measured
  ratio: a breakpoint only has to clear the minimum, and exact Claude counts cost ~25 ms
  per 1,000 new tokens on this hardware — too much for every call.
- Savings (`call.savings["prompt_cache"]`, only for breakpoints this stage placed; caching
  the provider or the client did on its own is recorded as `provider_saved_usd`, since it
  would have happened without spendgate), from the usage the provider reported: the cost
  of the same usage with nothing cached, minus the actual cost — i.e. cache reads ×
  (input − read price) − cache writes × (write price − input). Negative when a write was
  never read back: that premium is the technique's own cost, and is shown as such.
- Shadow mode records the breakpoints it would set and, in `would_save_usd`, what they would
  have saved, predicted from the prefixes this process saw within the TTL.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any, ClassVar

import orjson

from spendgate.cache.config import PrefixConfig
from spendgate.call import API, Call, Decision, Usage
from spendgate.pricing import Pricer, billed_tier
from spendgate.providers.dialects import dialect_for
from spendgate.providers.translate import TranslationError, openai_to_anthropic_request
from spendgate.reply import Reply
from spendgate.stages import Next, StageContext
from spendgate.tokens import claude_version, count_text, estimated_counts, iter_anthropic_prompt

__all__ = [
    "Breakpoint",
    "Plan",
    "PrefixDecision",
    "PrefixStage",
    "build",
    "plan_breakpoints",
    "prompt_cache_saving",
]

log = logging.getLogger("spendgate.cache.prefix")

_PROBE = "sg-probe"
_COUNT_MODEL = "gpt-4o"
"""Positions are o200k-sized estimates from the text's size (`estimated_counts`): a
breakpoint placed a little early costs nothing (the provider ignores one on a prefix under
its minimum), and the gateway need not hold 200 MB of tokenizer tables for it."""
_MARKABLE_ANTHROPIC = frozenset({"text", "image", "document", "tool_use", "tool_result"})
_MARKABLE_OPENAI = frozenset({"text", "image_url", "file"})
_TRACKED = 50_000


@dataclass
class PrefixDecision(Decision):
    """What the prefix stage saw and did (`extra.decisions.prefix`)."""

    key: ClassVar[str] = "prefix"
    provider: str
    """The wire format of the first deployment serving the call (`anthropic` is marked)."""
    prefix_fp: str
    prefix_tokens: int
    """Hash and estimated tokens of the stable prefix (tools + leading system prompt)."""
    prefix_changed: bool | None = None
    """True when this feature's prefix differs from its previous call's on this model."""
    breakpoints: list[dict[str, Any]] | None = None
    source: str | None = None
    """`injected` (this stage marked it), `client`, `none` or `automatic` (OpenAI)."""
    reason: str | None = None
    shadow: bool | None = None
    would_save_usd: str | None = None
    provider_saved_usd: str | None = None
    """Caching the provider or the client did on its own: recorded, never credited."""


@dataclass(frozen=True, slots=True)
class Breakpoint:
    at: str
    """`tools`, `system`, `document`, `previous_turn` or `last_turn`."""
    tokens: int
    """Estimated prefix length through the marked block."""

    def as_dict(self, ttl: str) -> dict[str, Any]:
        return {"at": self.at, "tokens": self.tokens, "ttl": ttl}


@dataclass(slots=True)
class Plan:
    body: dict[str, Any] | None
    """The body with the breakpoints set (None: leave the call's body as it is)."""
    points: list[Breakpoint]
    digests: list[bytes]
    """A hash of the prompt through each breakpoint (to predict hits in shadow mode)."""
    prompt_tokens: int
    prefix_tokens: int
    """Estimated tokens of tools + system: the part that should be the same every call."""
    reason: str | None = None
    """Why nothing was marked, when nothing was."""


@dataclass(slots=True)
class _Slot:
    obj: dict[str, Any]
    kind: str
    turn: int
    tokens: int
    end: int
    digest: bytes


def _ratio(model: str) -> float:
    from spendgate.tokens.encoders import CLAUDE_RATIO_V3, CLAUDE_RATIO_V47

    return CLAUDE_RATIO_V3 if claude_version(model) == "3.0" else CLAUDE_RATIO_V47


def _has_cache_control(value: Any) -> bool:
    if isinstance(value, dict):
        return "cache_control" in value or any(_has_cache_control(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_cache_control(v) for v in value)
    return False


def _as_blocks(content: Any) -> Any:
    return [{"type": "text", "text": content}] if isinstance(content, str) and content else content


def _items(value: Any) -> list[Any]:
    """A list field as a list; anything else (absent, malformed) as nothing to mark."""
    return value if isinstance(value, list) else []


def _probe_anthropic(body: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    copy, marks = _copy_with_tools(body)
    if "system" in copy:
        copy["system"] = _as_blocks(copy["system"])
    for block in _items(copy.get("system")):
        if isinstance(block, dict) and block.get("type") == "text":
            marks.append(block)
    for message in _items(copy.get("messages")):
        if isinstance(message, dict):
            _collect_content(message, _MARKABLE_ANTHROPIC, marks)
    return copy, _numbered(marks)


def _probe_openai(body: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    copy, marks = _copy_with_tools(body)
    for message in _items(copy.get("messages")):
        # the translator keeps no cache_control on assistant or tool messages
        if isinstance(message, dict) and message.get("role") in ("system", "developer", "user"):
            _collect_content(message, _MARKABLE_OPENAI, marks)
    return copy, _numbered(marks)


def _copy_with_tools(body: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A deep copy of `body` to probe, and its tools: the first places a breakpoint can go."""
    copy: dict[str, Any] = orjson.loads(orjson.dumps(body))
    return copy, [tool for tool in _items(copy.get("tools")) if isinstance(tool, dict)]


def _collect_content(
    message: dict[str, Any], markable: frozenset[str], marks: list[dict[str, Any]]
) -> None:
    """Rewrite the message's content as blocks; add those of a `markable` type to `marks`."""
    message["content"] = _as_blocks(message.get("content"))
    for block in _items(message.get("content")):
        if isinstance(block, dict) and block.get("type") in markable:
            marks.append(block)


def _numbered(marks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Give each candidate a probe breakpoint carrying its position, to find it again."""
    for i, obj in enumerate(marks):
        obj["cache_control"] = {"type": _PROBE, "i": i}
    return marks


def _walk(
    model: str, anthropic_body: dict[str, Any], marks: list[dict[str, Any]]
) -> tuple[list[_Slot], list[int], int]:
    """Slots for the probed blocks in prompt order, the indices of user messages, and the
    prompt's estimated total."""
    ratio = _ratio(model)
    tools_ids = {id(t) for t in _items(anthropic_body.get("tools"))}
    system = anthropic_body.get("system")
    system_ids = {id(b) for b in system} if isinstance(system, list) else set()
    h = hashlib.blake2b(model.encode(), digest_size=16)
    slots: list[_Slot] = []
    user_turns: list[int] = []
    running = 0
    turn = -1
    with estimated_counts():
        pieces = list(iter_anthropic_prompt(_COUNT_MODEL, anthropic_body))
    for count, piece in pieces:
        running += count
        if not isinstance(piece, dict):
            continue
        if "role" in piece and len(piece) == 1:
            turn += 1
            if piece["role"] == "user":
                user_turns.append(turn)
        control = piece.get("cache_control")
        clean = {k: v for k, v in piece.items() if k != "cache_control"}
        h.update(orjson.dumps(clean, option=orjson.OPT_SORT_KEYS))
        if isinstance(control, dict) and control.get("type") == _PROBE:
            kind = "tool" if id(piece) in tools_ids else "system" if id(piece) in system_ids \
                else "message"  # fmt: skip
            slots.append(
                _Slot(
                    obj=marks[int(control["i"])],
                    kind=kind,
                    turn=turn,
                    tokens=round(count * ratio),
                    end=round(running * ratio),
                    digest=h.copy().digest(),
                )
            )
    return slots, user_turns, round(running * ratio)


def plan_breakpoints(body: dict[str, Any], api: str, model: str, cfg: PrefixConfig) -> Plan:
    """Where to put `cache_control` in a body bound for Anthropic model `model`.

    `api` is the body's wire format. Pure: the returned body is a new dict."""
    if _has_cache_control(body):
        return Plan(None, [], [], 0, 0, reason="client_managed")
    if api == "anthropic":
        copy, marks = _probe_anthropic(body)
        anthropic_body = copy
    else:
        copy, marks = _probe_openai(body)
        try:
            anthropic_body = openai_to_anthropic_request(copy)
        except TranslationError:
            return Plan(None, [], [], 0, 0, reason="untranslatable")
    slots, user_turns, total = _walk(model, anthropic_body, marks)
    tools = [s for s in slots if s.kind == "tool"]
    system = [s for s in slots if s.kind == "system"]
    prefix_tokens = (system or tools)[-1].end if (system or tools) else 0
    messages = [s for s in slots if s.kind == "message"]
    candidates: list[tuple[str, _Slot]] = []
    if cfg.conversation and len(user_turns) >= cfg.conversation_min_turns and messages:
        candidates.append(("last_turn", messages[-1]))
    if cfg.system and system:
        candidates.append(("system", system[-1]))
    if cfg.tools and tools:
        candidates.append(("tools", tools[-1]))
    if cfg.conversation and len(user_turns) >= max(2, cfg.conversation_min_turns):
        # Where the previous call put its `last_turn` mark: the end of the previous user
        # turn. Reading needs a breakpoint on exactly that prefix.
        earlier = [s for s in messages if s.turn <= user_turns[-2]]
        if earlier:
            candidates.append(("previous_turn", earlier[-1]))
    if cfg.documents:
        docs = [s for s in messages if s.tokens >= cfg.document_min_tokens]
        candidates.extend(("document", s) for s in reversed(docs))
    chosen: dict[int, tuple[str, _Slot]] = {}
    for label, slot in candidates:
        if slot.end < cfg.min_tokens or id(slot) in chosen:
            continue
        if len(chosen) >= cfg.max_breakpoints:
            break
        chosen[id(slot)] = (label, slot)
    for obj in marks:
        obj.pop("cache_control", None)
    if not chosen:
        return Plan(None, [], [], total, prefix_tokens, reason="below_min_tokens")
    marker = {"type": "ephemeral", **({"ttl": "1h"} if cfg.ttl == "1h" else {})}
    picked = sorted(chosen.values(), key=lambda item: item[1].end)
    for _, slot in picked:
        slot.obj["cache_control"] = dict(marker)
    return Plan(
        copy,
        [Breakpoint(label, slot.end) for label, slot in picked],
        [slot.digest for _, slot in picked],
        total,
        prefix_tokens,
    )


def _plain(usage: Usage) -> Usage:
    return replace(usage, cache_read_tokens=0, cache_write_tokens=0, cache_write_1h_tokens=0)


def prompt_cache_saving(pricer: Pricer, call: Call, reply: Reply, usage: Usage) -> Decimal | None:
    """USD the provider's prompt cache saved on `usage`: the same tokens all billed as
    uncached input, minus what they cost. None when the price is unknown."""
    kwargs: dict[str, Any] = {
        "deployment": reply.deployment,
        "served_as": reply.served_model,
        "service_tier": billed_tier(call, reply),
    }
    actual = pricer.total(call.model, usage, **kwargs)
    plain = pricer.total(call.model, _plain(usage), **kwargs)
    if actual is None or plain is None:
        return None
    return plain - actual


def _prefix_fingerprint(call: Call) -> tuple[str, int]:
    """Hash and estimated tokens of the part of the prompt meant to be the same every call
    of a feature: tools and the leading system prompt."""
    body = call.body
    system = dialect_for(call.api).system_material(body)
    tools = body.get("tools")
    material = orjson.dumps({"system": system, "tools": tools}, option=orjson.OPT_SORT_KEYS)
    text = orjson.dumps(system).decode() if system else ""
    with estimated_counts():
        tokens = count_text(_COUNT_MODEL, text) if text else 0
        if tools:
            tokens += count_text(_COUNT_MODEL, orjson.dumps(tools).decode())
    return hashlib.blake2b(material, digest_size=8).hexdigest(), tokens


class PrefixStage:
    name = "prefix"

    def __init__(self, ctx: StageContext, config: PrefixConfig) -> None:
        self.ctx = ctx
        self.config = config
        self.clock = time.monotonic
        self._seen: OrderedDict[bytes, float] = OrderedDict()
        self._last_prefix: OrderedDict[tuple[str, str], str] = OrderedDict()

    async def handle(self, call: Call, call_next: Next) -> Reply:
        cfg = self.config.for_feature(call.tags.feature)
        deps = self.ctx.table.serving(call.model)
        if not cfg.enabled or call.endpoint == "embeddings" or not deps:
            return await call_next(call)
        dep = deps[0]
        fingerprint, prefix_tokens = _prefix_fingerprint(call)
        decision = PrefixDecision(
            provider=dep.api_for(call.model), prefix_fp=fingerprint, prefix_tokens=prefix_tokens
        )
        if self._prefix_changed(call, fingerprint):
            decision.prefix_changed = True
        predicted: tuple[int, int] | None = None
        if decision.provider == "anthropic":
            try:
                plan = plan_breakpoints(call.body, call.api, dep.upstream_model(call.model), cfg)
            except Exception:  # an odd body is the validator's or upstream's to refuse
                log.exception("prefix planning failed for %s", call.request_id)
                plan = Plan(None, [], [], 0, 0, reason="error")
            decision.prefix_tokens = plan.prefix_tokens or prefix_tokens
            decision.breakpoints = [p.as_dict(cfg.ttl) for p in plan.points]
            if plan.reason:
                decision.source = "client" if plan.reason == "client_managed" else "none"
                decision.reason = plan.reason
            else:
                decision.source = "injected"
                predicted = self._predict(plan, cfg.ttl)
                if cfg.shadow:
                    decision.shadow = True
                elif plan.body is not None:
                    call.body = plan.body
                    if call.api == "openai":  # a new list: copies of the call share it
                        call.upstream_hooks = [*call.upstream_hooks, _unmarked_for_openai]
        else:
            decision.source = "automatic"
        call.decisions.add(decision)
        reply = await call_next(call)
        reply.on_done(lambda r: self._settle(call, r, decision, cfg, predicted))
        return reply

    def _prefix_changed(self, call: Call, fingerprint: str) -> bool:
        key = (call.tags.feature or "", call.model)
        last = self._last_prefix.get(key)
        self._last_prefix[key] = fingerprint
        self._last_prefix.move_to_end(key)
        while len(self._last_prefix) > _TRACKED:
            self._last_prefix.popitem(last=False)
        return last is not None and last != fingerprint

    def _predict(self, plan: Plan, ttl: str) -> tuple[int, int]:
        """(read, write) tokens this process expects the provider to report, from the
        prefixes it sent within the TTL — what shadow mode's figure rests on."""
        now = self.clock()
        life = 3600.0 if ttl == "1h" else 300.0
        read = 0
        for point, digest in zip(plan.points, plan.digests, strict=True):
            expires = self._seen.get(digest)
            if expires is not None and expires > now:
                read = point.tokens
            self._seen[digest] = now + life
            self._seen.move_to_end(digest)
        while len(self._seen) > _TRACKED:
            self._seen.popitem(last=False)
        write = max(0, plan.points[-1].tokens - read) if plan.points else 0
        return read, write

    def _settle(
        self,
        call: Call,
        reply: Reply,
        decision: PrefixDecision,
        cfg: PrefixConfig,
        predicted: tuple[int, int] | None,
    ) -> None:
        usage = reply.usage
        if usage is None:
            return
        if decision.shadow:
            if predicted is not None:
                read, write = predicted
                long = cfg.ttl == "1h"
                would = Usage(
                    input_tokens=usage.input_tokens,
                    output_tokens=usage.output_tokens,
                    cache_read_tokens=read,
                    cache_write_tokens=0 if long else write,
                    cache_write_1h_tokens=write if long else 0,
                )
                saved = prompt_cache_saving(self.ctx.pricer, call, reply, would)
                if saved is not None:
                    decision.would_save_usd = format(saved, "f")
            return
        cached = usage.cache_read_tokens + usage.cache_write_tokens + usage.cache_write_1h_tokens
        if not cached:
            return
        saved = prompt_cache_saving(self.ctx.pricer, call, reply, usage)
        if not saved:
            return
        if decision.source == "injected":
            call.savings["prompt_cache"] = saved
        else:
            # The provider cached on its own (OpenAI's automatic caching) or on the client's
            # own breakpoints: that saving would have happened without spendgate, so it is
            # recorded, never credited (the baseline is the call without spendgate).
            decision.provider_saved_usd = format(saved, "f")


def _unmarked_for_openai(call: Call, upstream: API) -> Call:
    """The breakpoints were placed on an OpenAI-format body for an Anthropic upstream; an
    OpenAI-format deployment (a fallback) gets it without them, as the client sent it."""
    if upstream != "openai":
        return call
    return replace(call, body=_without_cache_control(call.body))


def _without_cache_control(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_cache_control(v) for k, v in value.items() if k != "cache_control"}
    if isinstance(value, list):
        return [_without_cache_control(v) for v in value]
    return value


def build(ctx: StageContext) -> PrefixStage | None:
    config: PrefixConfig = ctx.settings.prefix
    if not config.on_anywhere():
        return None
    return PrefixStage(ctx, config)
