"""How much of a call's input was its system prompt, measured at accounting time.

The "share of input spend that is system prompt" report needs, per call, the system
prompt's tokens and the input side of the cost. Both are known only while the call is in
memory (prompt text is never stored), so accounting puts them in the event's `extra`:

- `system_tokens`: tokens of the system prompt (OpenAI `system`/`developer` messages,
  Anthropic's top-level `system`), counted with the model's tokenizer, without framing;
- `input_cost_nanos`: uncached input + cache reads + cache writes, in nano-dollars.

The ledger's rollups turn these into `system_input_nanos` = input cost × system tokens /
input tokens per call (pro rata). Counting is memoised per (tokenizer, text): a feature
sends the same system prompt over and over, so the hot path pays a dict lookup, not a BPE
pass, after the first call.
"""

from __future__ import annotations

import hashlib

from spendgate.call import Call, Cost, Usage, to_nanos
from spendgate.providers.dialects.base import text_parts
from spendgate.tokens.encoders import count_text, estimated_counts, family

__all__ = ["input_split", "system_texts", "system_tokens"]

_SYSTEM_ROLES = ("system", "developer")


def system_texts(call: Call) -> list[str]:
    """The system prompt's text pieces, in either wire format."""
    body = call.body
    if call.endpoint == "embeddings":
        return []
    out: list[str] = []
    if "system" in body:  # Anthropic Messages
        out += text_parts(body.get("system"))
    if "instructions" in body:  # OpenAI Responses
        out += text_parts(body.get("instructions"))
    items = body.get("messages") if "messages" in body else body.get("input")
    for message in items if isinstance(items, list) else ():
        if isinstance(message, dict) and message.get("role") in _SYSTEM_ROLES:
            out += text_parts(message.get("content"))
    return out


_MEMO: dict[tuple[str, str | bytes], int] = {}
_MEMO_MAX = 4096


def _count(tokenizer_model: str, text: str) -> int:
    """Memoised per (tokenizer, text); a text longer than 256 characters is keyed by a
    16-byte digest, so the memo holds no prompt text (it used to keep up to 4,096 whole
    system prompts)."""
    key: str | bytes = text
    if len(text) > 256:
        key = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()
    found = _MEMO.get((tokenizer_model, key))
    if found is None:
        found = count_text(tokenizer_model, text)
        if len(_MEMO) >= _MEMO_MAX:
            _MEMO.clear()
        _MEMO[(tokenizer_model, key)] = found
    return found


def system_tokens(call: Call) -> int:
    """Tokens of the call's system prompt for the model that served it (0 when none);
    Claude's are o200k estimates (a pro-rata share needs no exact tokenizer)."""
    pieces = system_texts(call)
    if not pieces:
        return 0
    # Memoise per tokenizer family, not per model name: gpt-4o and gpt-4o-mini share one.
    model = call.model or call.requested_model
    fam = family(model)
    key = model if fam == "claude" else fam
    with estimated_counts():
        return sum(_count(key, text) for text in pieces)


def input_split(call: Call, cost: Cost | None, usage: Usage | None) -> dict[str, int] | None:
    """The `extra` entries for the system-prompt report, or None when the call has no
    priced input (failed before a provider, unknown price, embeddings…)."""
    if cost is None or usage is None or usage.input_tokens <= 0:
        return None
    out = {"input_cost_nanos": to_nanos(cost.input + cost.cache_read + cost.cache_write)}
    try:
        tokens = system_tokens(call)
    except Exception:  # a tokenizer problem must never lose the ledger event
        tokens = 0
    if tokens:
        out["system_tokens"] = min(tokens, usage.input_tokens)
    return out
