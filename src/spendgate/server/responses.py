"""The Responses API at the edge: validating a request, resolving `previous_response_id`,
giving every Response the gateway's id, storing it, and `GET`/`DELETE /v1/responses/{id}`.

Why the gateway keeps the conversation itself rather than passing `previous_response_id` to
OpenAI: a call is routed per turn (turn 1 on gpt-4o, turn 2 on a Claude model, a fallback in
between), and only the gateway saw every turn. So each stored Response keeps the full input
it answered plus its output; the next turn's input is that, then the new items. Stages then
see the whole conversation (the exact cache keys on content, not on an opaque id; budgets
count all of the input), and any deployment can serve the next turn.

Responses are owned by the tenant of the call (or, without one, by its virtual key): a
request naming another owner's id gets the same 404 as an unknown id, so ids leak nothing.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, ClassVar

import orjson

from spendgate.call import Call, Decision
from spendgate.errors import GatewayError
from spendgate.providers import responses as dialect
from spendgate.providers.responses_adapter import response_id
from spendgate.reply import Reply
from spendgate.state import StateStore, owner_of
from spendgate.state.config import ResponsesConfig

__all__ = [
    "RESPONSE_PARAMS",
    "Chained",
    "ResponsesService",
    "owner_of",
    "validate_responses",
]

log = logging.getLogger(__name__)

KIND = "response"
WRITE_GATHER_S = 0.02

RESPONSE_PARAMS = frozenset(
    {
        "background", "context_management", "conversation", "include", "input",
        "instructions", "max_output_tokens", "max_tool_calls", "metadata", "model",
        "moderation", "parallel_tool_calls", "previous_response_id", "prompt",
        "prompt_cache_key", "prompt_cache_options", "prompt_cache_retention", "reasoning",
        "safety_identifier", "service_tier", "store", "stream", "stream_options",
        "temperature", "text", "tool_choice", "tools", "top_logprobs", "top_p", "truncation",
        "user",
    }
)  # fmt: skip
_ITEM_TYPES = frozenset(
    {"message", "function_call", "function_call_output", "reasoning", "item_reference"}
)
_LIFECYCLE = re.compile(
    rb"^event: response\.(created|queued|in_progress|completed|incomplete|failed)\n"
)


@dataclass
class Chained(Decision):
    """A Responses call that continued a stored one (`previous_response_id`): the edge
    echoes the id on the answer, the ledger records it as `decisions.responses`."""

    key: ClassVar[str] = "responses"
    previous_response_id: str


# --------------------------------------------------------------------------- validation


def _bad(message: str, param: str | None, code: str = "invalid_value") -> GatewayError:
    return GatewayError(400, message, param=param, code=code)


_TYPED = (
    ("stream", (bool,), "a boolean"),
    ("store", (bool,), "a boolean"),
    ("background", (bool,), "a boolean"),
    ("previous_response_id", (str,), "a string"),
    ("text", (dict,), "an object"),
    ("reasoning", (dict,), "an object"),
    ("metadata", (dict,), "an object"),
    ("user", (str,), "a string"),
    ("service_tier", (str,), "a string"),
)


def validate_responses(body: dict[str, Any]) -> str:
    """Check a Responses body (what stages and translators rely on); returns the model."""
    for key in body:
        if key not in RESPONSE_PARAMS:
            raise _bad(f"Unrecognized request argument supplied: {key}", key, "unknown_parameter")
    model = _check_model(body.get("model"))
    _check_input(body)
    instructions = body.get("instructions")
    if instructions is not None and not isinstance(instructions, str | list):
        raise _bad("'instructions' must be a string", "instructions", "invalid_type")
    _check_tools(body.get("tools"))
    _check_scalars(body)
    _check_unsupported(body)
    return model


def _check_model(model: Any) -> str:
    if not isinstance(model, str) or not model.strip():
        raise _bad("you must provide a model parameter", "model", "missing_required_parameter")
    if len(model) > 256 or not model.isprintable():
        raise _bad("'model' must be at most 256 printable characters", "model")
    return model


def _check_input(body: dict[str, Any]) -> None:
    raw = body.get("input")
    if raw is None and body.get("previous_response_id") is None and body.get("prompt") is None:
        raise _bad("'input' is required", "input", "missing_required_parameter")
    if raw is not None and not isinstance(raw, str | list):
        raise _bad("'input' must be a string or an array of items", "input", "invalid_type")
    for i, item in enumerate(raw if isinstance(raw, list) else ()):
        _check_item(f"input[{i}]", item)


def _check_item(where: str, item: Any) -> None:
    if not isinstance(item, dict):
        raise _bad(f"'{where}' must be an object", where, "invalid_type")
    kind = item.get("type", "message")
    if not isinstance(kind, str):
        raise _bad(f"'{where}.type' must be a string", f"{where}.type", "invalid_type")
    if kind == "message" or ("role" in item and "type" not in item):
        _check_message(where, item)
    elif kind in ("function_call", "function_call_output"):
        if not isinstance(item.get("call_id"), str):
            raise _bad(f"'{where}.call_id' is required", f"{where}.call_id")
        if kind == "function_call" and not isinstance(item.get("name"), str):
            raise _bad(f"'{where}.name' is required", f"{where}.name")
        if kind == "function_call" and not isinstance(item.get("arguments", ""), str):
            raise _bad(f"'{where}.arguments' must be a string", f"{where}.arguments")


def _check_message(where: str, item: dict[str, Any]) -> None:
    if item.get("role") not in ("user", "assistant", "system", "developer"):
        raise _bad(
            f"'{where}.role' must be one of user, assistant, system, developer",
            f"{where}.role",
        )
    content = item.get("content")
    if not isinstance(content, str | list):
        raise _bad(
            f"'{where}.content' must be a string or an array of parts",
            f"{where}.content",
            "invalid_type",
        )
    for j, part in enumerate(content if isinstance(content, list) else ()):
        if not isinstance(part, dict) or not isinstance(part.get("type"), str):
            raise _bad(
                f"'{where}.content[{j}]' must be an object with a type",
                f"{where}.content[{j}]",
                "invalid_type",
            )


def _check_tools(tools: Any) -> None:
    if tools is None:
        return
    if not isinstance(tools, list):
        raise _bad("'tools' must be an array", "tools", "invalid_type")
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict) or not isinstance(tool.get("type"), str):
            raise _bad(f"'tools[{i}]' must be an object with a type", f"tools[{i}]")
        if tool["type"] == "function" and not isinstance(tool.get("name"), str):
            raise _bad(f"'tools[{i}].name' is required", f"tools[{i}].name")


def _check_scalars(body: dict[str, Any]) -> None:
    for key, kinds, name in _TYPED:
        value = body.get(key)
        if value is not None and not isinstance(value, kinds):
            raise _bad(f"'{key}' must be {name}", key, "invalid_type")
    for key, lo, hi in (("temperature", 0.0, 2.0), ("top_p", 0.0, 1.0)):
        value = body.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float) or not lo <= value <= hi:
            raise _bad(f"'{key}' must be a number between {lo:g} and {hi:g}", key)
    limit = body.get("max_output_tokens")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 16):
        raise _bad("'max_output_tokens' must be an integer of at least 16", "max_output_tokens")


def _check_unsupported(body: dict[str, Any]) -> None:
    if body.get("background"):
        raise _bad(
            "background responses are not supported through this gateway: stream instead, "
            "or defer the call (x-spendgate-defer: 24h)",
            "background",
            "unsupported_parameter",
        )
    if body.get("conversation") is not None:
        raise _bad(
            "conversation objects are not supported through this gateway; chain turns with "
            "previous_response_id",
            "conversation",
            "unsupported_parameter",
        )


# --------------------------------------------------------------------------- the service


def not_found(rid: str, param: str | None = None) -> GatewayError:
    return GatewayError(
        404,
        f"Response with id '{rid}' not found.",
        param=param,
        code="response_not_found" if param is None else "previous_response_not_found",
    )


class ResponsesService:
    """Stored Responses for one gateway process (shared by replicas through the store)."""

    def __init__(self, store: StateStore, config: ResponsesConfig | None = None) -> None:
        self.store = store
        self.config = config or ResponsesConfig()
        self._recent: OrderedDict[str, tuple[str, bytes, float]] = OrderedDict()
        """id → (owner, record, expires): written here first, then to the store."""
        self._tasks: set[asyncio.Task[None]] = set()
        self._writing = False
        self._pending: list[tuple[str, str, bytes, float | None]] = []
        """Records waiting for the writer: one transaction carries all that queued up while
        the previous one was written (a commit per Response would cost more than the call)."""

    # -------------------------------------------------------------- before the pipeline
    async def prepare(self, call: Call, owner: str) -> None:
        """Make the call's input complete: the previous Response's input and output, then
        this request's items. A string input becomes one user message either way, so both
        spellings of one request key the cache alike."""
        body = call.body
        items = dialect.input_items(body)
        previous = body.get("previous_response_id")
        if previous is not None:
            record = await self._load(previous, owner)
            if record is None:
                raise not_found(previous, "previous_response_id")
            history = list(record.get("input") or [])
            response = record.get("response") or {}
            history += [i for i in response.get("output") or () if isinstance(i, dict)]
            items = history + items
        for i, item in enumerate(items):
            if isinstance(item, dict) and item.get("type") == "item_reference":
                raise _bad(
                    "item_reference items are not supported through this gateway; send the "
                    "item itself or chain with previous_response_id",
                    f"input[{i}]",
                    "unsupported_parameter",
                )
        new = {k: v for k, v in body.items() if k != "previous_response_id"}
        new["input"] = items
        call.body = new
        if previous:
            call.decisions.add(Chained(previous))

    # -------------------------------------------------------------- after the pipeline
    def attach(self, call: Call, reply: Reply, owner: str, previous: str | None) -> None:
        """Give the reply the call's Response id (and echo `previous_response_id`), and store
        the Response once the reply completes."""
        rid = response_id(call.request_id)
        keep = self.config.store and call.body.get("store", True) is not False
        if reply.error is not None and reply.body is None and reply.chunks is None:
            return
        if reply.deferred:  # answered later: stamp and keep the answer when it comes
            reply.on_done(lambda r: self._deferred_done(r, rid, owner, previous, call, keep))
            return
        if reply.chunks is not None:
            reply.chunks = self._stamp_stream(reply.chunks, rid, previous, call, owner, keep)
            return
        if isinstance(reply.body, dict):
            reply.body = {**reply.body, "id": rid, "previous_response_id": previous}
            if keep and reply.status == 200:
                body = reply.body
                reply.on_done(lambda r: self._save(rid, owner, call.body, body))

    def _deferred_done(
        self, reply: Reply, rid: str, owner: str, previous: str | None, call: Call, keep: bool
    ) -> None:
        if reply.status == 200 and isinstance(reply.body, dict):
            reply.body = {**reply.body, "id": rid, "previous_response_id": previous}
            if keep:
                self._save(rid, owner, call.body, reply.body)

    async def _stamp_stream(
        self,
        chunks: AsyncIterator[bytes],
        rid: str,
        previous: str | None,
        call: Call,
        owner: str,
        keep: bool,
    ) -> AsyncIterator[bytes]:
        try:
            async for chunk in chunks:
                if not _LIFECYCLE.match(chunk):
                    yield chunk
                    continue
                head, _, data = chunk.partition(b"\ndata: ")
                event = orjson.loads(data)
                response = event.get("response")
                if isinstance(response, dict):
                    response["id"] = rid
                    response["previous_response_id"] = previous
                    if keep and response.get("status") in ("completed", "incomplete"):
                        self._save(rid, owner, call.body, response)
                yield head + b"\ndata: " + orjson.dumps(event) + b"\n\n"
        finally:
            aclose = getattr(chunks, "aclose", None)
            if aclose is not None:
                await aclose()

    def _save(self, rid: str, owner: str, request: dict[str, Any], response: Any) -> None:
        if not isinstance(response, dict):
            return
        record = orjson.dumps({"input": request.get("input") or [], "response": response})
        if len(record) > self.config.max_stored_bytes:
            log.info("response %s not stored: %d bytes", rid, len(record))
            return
        ttl = self.config.ttl_days * 86400
        if self.config.recent:
            self._recent[rid] = (owner, record, time.time() + ttl)
            while len(self._recent) > self.config.recent:
                self._recent.popitem(last=False)
        self._pending.append((rid, owner, record, ttl))
        if not self._writing:
            self._writing = self._spawn(self._write())

    async def _write(self) -> None:
        try:
            # Gather what arrives in the next few milliseconds into the same transaction:
            # one thread hop and one commit per burst rather than per Response.
            await asyncio.sleep(WRITE_GATHER_S)
            while self._pending:
                rows, self._pending = self._pending, []
                try:
                    await asyncio.to_thread(self.store.put_many, KIND, rows)
                except Exception:
                    log.exception("storing %d responses failed", len(rows))
        finally:
            self._writing = False

    def _spawn(self, coro: Any) -> bool:
        try:
            task = asyncio.get_running_loop().create_task(self._guard(coro))
        except RuntimeError:
            coro.close()
            return False
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return True

    @staticmethod
    async def _guard(coro: Any) -> None:
        try:
            await coro
        except Exception:
            log.exception("storing a response failed")

    async def drain(self) -> None:
        """Wait for pending writes (graceful shutdown, tests)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    # -------------------------------------------------------------- reading
    async def _load(self, rid: str, owner: str) -> dict[str, Any] | None:
        recent = self._recent.get(rid)
        if recent is not None and recent[2] > time.time():
            return orjson.loads(recent[1]) if recent[0] == owner else None
        found = await asyncio.to_thread(self.store.get, KIND, rid)
        if found is None or found.owner != owner:
            return None
        value: dict[str, Any] = orjson.loads(found.value)
        return value

    async def get(self, rid: str, owner: str) -> dict[str, Any] | None:
        record = await self._load(rid, owner)
        if record is None:
            return None
        response: dict[str, Any] = record.get("response") or {}
        return response

    async def input_items(self, rid: str, owner: str) -> dict[str, Any] | None:
        record = await self._load(rid, owner)
        if record is None:
            return None
        items = []
        for i, item in enumerate(record.get("input") or ()):
            if not isinstance(item, dict):
                continue
            entry = dict(item)
            entry.setdefault("type", "message")
            entry.setdefault("id", f"msg_{rid.removeprefix('resp_')}_{i}")
            if entry["type"] == "message" and isinstance(entry.get("content"), str):
                role = entry.get("role")
                kind = "output_text" if role == "assistant" else "input_text"
                entry["content"] = [{"type": kind, "text": entry["content"]}]
            items.append(entry)
        items.reverse()  # OpenAI lists newest first by default
        return {
            "object": "list",
            "data": items,
            "first_id": items[0]["id"] if items else None,
            "last_id": items[-1]["id"] if items else None,
            "has_more": False,
        }

    async def delete(self, rid: str, owner: str) -> bool:
        if await self._load(rid, owner) is None:
            return False
        self._recent.pop(rid, None)
        await asyncio.to_thread(self.store.delete, KIND, rid)
        return True
