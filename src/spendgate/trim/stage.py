"""The trim stage: history window → span compression → output cap and hint, in that order
(old turns that get summarized are not worth compressing first).

Savings credited (only when the upstream billed the call):
- `compression`: (span tokens before − after) × the served model's uncached input price;
- `history`: (prompt tokens of the dropped turns − the summary note's tokens) × the same
  price. The summary call itself is billed in its own ledger event (use_case
  `history_summary`), once per conversation segment;
- output caps: nothing (see `output.py`).

A client can opt one request out with the header `x-spendgate-trim: off`; the gateway's own
summary calls carry it.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, ClassVar

from spendgate.call import Call, Cost, Decision, Usage
from spendgate.pricing import billed_tier
from spendgate.providers.dialects import dialect_for
from spendgate.reply import Reply
from spendgate.stages import Next, StageContext
from spendgate.tokens import family
from spendgate.trim.compress import warm_up
from spendgate.trim.config import TrimConfig
from spendgate.trim.history import INTERNAL_HEADER, HistoryWindow, SummaryError, transcript
from spendgate.trim.output import TRUNCATED, OutputLimiter
from spendgate.trim.spans import MARK, compress_as_configured, compression_counter, strip_marks
from spendgate.trim.sysprompt import fingerprint, system_text

__all__ = ["TrimDecision", "TrimStage", "build"]

log = logging.getLogger("spendgate.trim")


@dataclass
class TrimDecision(Decision):
    """What the trim stage did (`extra.decisions.trim`); each part is present only when
    that part ran and had something to say."""

    key: ClassVar[str] = "trim"
    system: dict[str, Any] | None = None
    """The system prompt's short hash and token count (`trim.record_system_prompt`)."""
    history: dict[str, Any] | None = None
    """Turns kept and summarized, tokens before/after, shadow (or the summary's error)."""
    compress: dict[str, Any] | None = None
    """Spans compressed, tokens before/after, ratio, shadow."""
    output: dict[str, Any] | None = None
    """The max_tokens cap: cap, source, client_max, applied, hint, shadow, truncated…"""


def build(ctx: StageContext) -> TrimStage | None:
    cfg: TrimConfig = ctx.settings.trim
    if not cfg.active:
        return None  # off, or no feature/use case opted in to any part
    return TrimStage(cfg, ctx)


class TrimStage:
    name = "trim"

    def __init__(self, cfg: TrimConfig, ctx: StageContext) -> None:
        self.cfg = cfg
        self.ctx = ctx
        self.output = OutputLimiter(cfg.output, ctx.store)
        self.history = HistoryWindow(
            cfg.history, self._run_internal, lambda model, text: compression_counter(model)[0](text)
        )
        if cfg.compress.features or cfg.compress.use_cases:
            warm_up()  # load word statistics now, not on the first compressed request

    async def _run_internal(self, call: Call) -> Reply:
        if self.ctx.run_internal is None:
            raise SummaryError("the gateway offers no internal calls")
        return await self.ctx.run_internal(call)

    async def handle(self, call: Call, call_next: Next) -> Reply:
        if call.endpoint == "embeddings" or not isinstance(call.body.get("messages"), list):
            return await call_next(call)
        if call.headers.get(INTERNAL_HEADER, "").lower() == "off":
            body = _strip_all_marks(call.body)
            if body is not call.body:
                call.body = body
            return await call_next(call)
        decision = TrimDecision()
        saved: dict[str, int] = {}
        body = call.body
        if self.cfg.record_system_prompt:
            counter, _ = compression_counter(call.model)
            decision.system = fingerprint(call.body, call.api, counter)

        hc = self.cfg.history
        if hc.matches(call.tags):
            body = await self._history(call, body, decision, saved)

        cc = self.cfg.compress
        if cc.matches(call.tags):
            counter, estimated = compression_counter(call.model, cc.exact_counts)
            # Off the event loop: a 100k-token tool output takes ~150 ms of CPU.
            new, report = await asyncio.to_thread(
                compress_as_configured, body, call.api, cc, counter
            )
            if report.spans:
                decision.compress = {
                    "spans": report.spans,
                    "tokens_before": report.tokens_before,
                    "tokens_after": report.tokens_after,
                    "ratio": cc.ratio,
                    "shadow": cc.shadow,
                    "estimated_counts": estimated,
                }
                if cc.shadow:
                    new = _strip_all_marks(body)
                else:
                    saved["compression"] = report.saved_tokens
            body = new
        else:
            body = _strip_all_marks(body)

        oc = self.cfg.output
        applied = False
        if oc.matches(call.tags):
            await self.output.refresh(call.tags.feature)
            capped, out_decision = self.output.apply(call, body)
            if out_decision:
                out_decision["shadow"] = oc.shadow
                decision.output = out_decision
                if not oc.shadow:
                    body = capped
                    applied = bool(out_decision.get("applied"))

        if body is not call.body:
            call.body = body
        if decision.as_json():
            call.decisions.add(decision)
        reply = await call_next(call)
        reply.on_done(lambda r: self._settle(call, r, saved, decision, applied))
        return reply

    async def _history(
        self, call: Call, body: dict[str, Any], decision: TrimDecision, saved: dict[str, int]
    ) -> dict[str, Any]:
        hc = self.cfg.history
        messages = body["messages"]
        try:
            win = await self.history.window(call, messages)
        except SummaryError as exc:
            decision.history = {"error": str(exc)[:200]}
            return body
        if win is None:
            return body
        new = dialect_for(call.api).with_summary({**body, "messages": win.messages}, win.summary)
        before, after = _prompt_tokens(call, body), _prompt_tokens(call, new)
        decision.history = {
            "turns": win.turns_total,
            "summarized_turns": win.turns_summarized,
            "summary_calls": win.summary_calls,
            "summary_cached": win.cache_hit,
            "tokens_before": before,
            "tokens_after": after,
            "shadow": hc.shadow,
        }
        if hc.shadow:
            return body
        saved["history"] = max(0, before - after)
        return new

    def _settle(
        self,
        call: Call,
        reply: Reply,
        saved: dict[str, int],
        decision: TrimDecision,
        applied: bool,
    ) -> None:
        if applied and decision.output is not None:
            truncated = reply.finish_reason in TRUNCATED
            decision.output["truncated"] = truncated
            if self.output.observe(call, reply.finish_reason, applied):
                decision.output["backed_off"] = True
        if reply.status != 200 or reply.usage is None:
            return
        out = decision.output
        if out and out.get("shadow") and out.get("cap") is not None:
            self._shadow_cap(call, reply, out)
        for technique, tokens in saved.items():
            if tokens > 0:
                usd = self._input_usd(call, reply, tokens)
                if usd is not None:
                    call.savings[technique] = call.savings.get(technique, Decimal(0)) + usd

    def _shadow_cap(self, call: Call, reply: Reply, out: dict[str, Any]) -> None:
        """Shadow mode observes the uncapped answer, so the cap's effect is measurable: it
        would have cut `output_tokens − cap` tokens and truncated the answer if positive.
        Recorded as a would-be figure, never credited as savings."""
        assert reply.usage is not None
        client = out.get("client_max")
        if client is not None and client <= out["cap"]:
            return
        over = max(0, reply.usage.output_tokens - int(out["cap"]))
        out["would_truncate"] = over > 0
        out["would_save_tokens"] = over
        cost = self._usd(call, reply, Usage(output_tokens=over))
        if cost is not None:
            out["would_save_usd"] = format(cost.output, "f")

    def _input_usd(self, call: Call, reply: Reply, tokens: int) -> Decimal | None:
        """What `tokens` more uncached input would have cost on the deployment that served."""
        cost = self._usd(call, reply, Usage(input_tokens=tokens))
        return None if cost is None else cost.input

    def _usd(self, call: Call, reply: Reply, usage: Usage) -> Cost | None:
        return self.ctx.pricer.cost(
            call.model,
            usage,
            deployment=reply.deployment,
            served_as=reply.served_model,
            service_tier=billed_tier(call, reply),
        )


def _prompt_tokens(call: Call, body: dict[str, Any]) -> int:
    """Prompt tokens of a body: exact for OpenAI-family models; for Claude the calibrated
    estimate over the message texts (the exact tokenizer is ~30 ms per 1k tokens here)."""
    if family(call.model) == "claude":
        count, _ = compression_counter(call.model)
        texts = [system_text(body, call.api)]
        texts += [transcript([[m]]) for m in body.get("messages") or []]
        return sum(count(t) for t in texts if t)
    try:
        return int(dialect_for(call.api).count_request(call.model, body))
    except Exception:  # a counting gap must not fail the call
        log.debug("token count failed", exc_info=True)
        return 0


def _strip_all_marks(body: dict[str, Any]) -> dict[str, Any]:
    """The body without `<compress>` marks (gateway markup never goes upstream)."""
    if "<compress" not in _cheap_text(body).lower():
        return body

    def fix(content: Any) -> Any:
        if isinstance(content, str):
            return strip_marks(content) if MARK.search(content) else content
        if isinstance(content, list):
            out = []
            for part in content:
                if isinstance(part, dict) and isinstance(part.get("text"), str):
                    out.append({**part, "text": fix(part["text"])})
                elif isinstance(part, dict) and part.get("type") == "tool_result":
                    out.append({**part, "content": fix(part.get("content"))})
                else:
                    out.append(part)
            return out
        return content

    new = dict(body)
    if "system" in body:
        new["system"] = fix(body["system"])
    new["messages"] = [
        {**m, "content": fix(m.get("content"))} if isinstance(m, dict) and "content" in m else m
        for m in body.get("messages") or []
    ]
    return new


def _cheap_text(body: dict[str, Any]) -> str:
    import orjson

    try:
        return orjson.dumps([body.get("system"), body.get("messages")]).decode()
    except TypeError:
        return ""
