"""The deferral lane: calls that can wait are sent as batches, at half price.

Which calls: a request with `x-spendgate-defer: 24h` (or any duration of at least 24 h —
a batch may take that long), or any non-streaming call of a feature marked
`batchable: true`. The `defer` stage, last before the dispatcher, takes them after budgets,
cache, trimming and routing have had their say (a cache hit is answered at once; a routed
call is batched on the model routing chose).

The client contract, and why: the call is answered `202 Accepted` at once with a deferred
object (`id`, `status`, `result_url: /v1/deferred/{id}`); `GET /v1/deferred/{id}` answers
202 with the status while the batch runs and, once it has ended, exactly what the live call
would have returned (same status, same body in the client's wire format, with
`x-spendgate-cost-usd`). `?wait=N` holds the GET up to N seconds for the answer. A request
held open for the whole batch instead would not survive the 24 h a batch may take: load
balancers cut idle connections after minutes, a restart would lose every waiter, and each
would hold a socket; a 202 and a URL survive all three.

The call's `Reply` stays open in this process until its result comes back: its budget
reservation is held until then and settled to the batch cost, the answer is stored in the
cache like a live one, and the one ledger row is written with the real usage — priced at the
batch rate, with `savings.batch` = what the same usage costs at the standard rate minus that.
If the process that accepted the call is gone by then (a restart, another replica adopting
its calls), the result is recorded from the stored call instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
import uuid
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import orjson

from spendgate.accounting import Accountant, cost_header
from spendgate.batches.config import DeferConfig
from spendgate.batches.lines import batch_capable, plan_line, to_client, usage_of
from spendgate.call import Call, Decisions, Tags, Usage
from spendgate.errors import GatewayError
from spendgate.pricing import Pricer
from spendgate.providers.base import Deployment
from spendgate.providers.dialects import dialect_for
from spendgate.providers.responses_adapter import response_id
from spendgate.reply import Reply
from spendgate.routing.saving import credit_routing
from spendgate.state import Record, StateStore, owner_of

if TYPE_CHECKING:
    from spendgate.batches.service import BatchService, Line

__all__ = ["DEFER_HEADER", "DeferLane", "deferred_id"]

log = logging.getLogger("spendgate.batches.lane")

_DEFERRED_OBJECT = "spendgate" + ".deferred"
"""The `object` of a deferred call's status (docs/responses.md). Spelt in two parts only so
import-graph tools do not read it as a module path of the top package."""

KIND = "deferred"
DEFER_HEADER = "x-spendgate-defer"
MIN_WINDOW_S = 24 * 3600
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)\s*$", re.I)
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_PATHS = {
    "chat": "/v1/chat/completions",
    "messages": "/v1/messages",
    "responses": "/v1/responses",
    "embeddings": "/v1/embeddings",
}


def deferred_id(request_id: str) -> str:
    return "dfr_" + request_id.removeprefix("sg-")


def _window(value: str) -> float | None:
    """The header's duration in seconds; None for off/0/false."""
    if value.strip().lower() in ("", "0", "off", "false", "no"):
        return None
    match = _DURATION.match(value)
    if match is None:
        raise GatewayError(
            400,
            f"Invalid {DEFER_HEADER} header {value!r}: a duration such as 24h (batches "
            "complete within 24 hours), or off",
            param=DEFER_HEADER,
            code="invalid_defer_header",
        )
    seconds = float(match.group(1)) * _UNIT[match.group(2).lower()]
    if seconds < MIN_WINDOW_S:
        raise GatewayError(
            400,
            f"{DEFER_HEADER}: {value} is shorter than a batch may take (24h); send the call "
            "live instead",
            param=DEFER_HEADER,
            code="invalid_defer_header",
        )
    return seconds


@dataclass(slots=True)
class _Live:
    call: Call
    reply: Reply
    done: asyncio.Event


class DeferLane:
    def __init__(
        self,
        *,
        state: StateStore,
        config: DeferConfig,
        pricer: Pricer,
        features: Any = None,
    ) -> None:
        self.state = state
        self.config = config
        self.pricer = pricer
        self.features = features
        self.node = uuid.uuid4().hex
        """This process: a replica flushes the calls it accepted (and adopts stale ones)."""
        self.accountant: Accountant | None = None
        """Set by the batch service: records a result whose reply is not held here."""
        self._live: dict[str, _Live] = {}

    # ------------------------------------------------------------------ deciding
    def wants(self, call: Call) -> str | None:
        """Why this call is deferred ("header" / "feature"), or None to serve it live."""
        if not self.config.enabled or call.endpoint not in _PATHS:
            return None
        header = call.headers.get(DEFER_HEADER)
        if header is not None:
            if _window(header) is None:
                return None
            if call.stream:
                raise GatewayError(
                    400,
                    f"a deferred call cannot stream; drop {DEFER_HEADER} or stream",
                    param=DEFER_HEADER,
                    code="invalid_defer_header",
                )
            return "header"
        feature = call.tags.feature
        entry = self.features.get(feature) if self.features is not None and feature else None
        if entry is not None and getattr(entry, "batchable", False) and not call.stream:
            return "feature"
        return None

    # ------------------------------------------------------------------ accepting
    async def enqueue(self, call: Call, dep: Deployment, reason: str) -> Reply:
        """Queue the call; its reply answers 202 now and completes with the batch."""
        if not batch_capable(dep):
            raise GatewayError(
                400,
                f"deployment {dep.name!r} serving {call.model!r} has no Batch API; this call "
                "cannot be deferred",
                param=DEFER_HEADER,
                code="defer_unsupported",
            )
        plan = plan_line(call.api, call.endpoint, call.body, dep, call.model)  # 400s early
        did = deferred_id(call.request_id)
        now = time.time()
        record = {
            "request_id": call.request_id,
            "received_at": call.received_at,
            "endpoint": call.endpoint,
            "api": call.api,
            "model": call.model,
            "requested_model": call.requested_model,
            "body": call.body,
            "tags": call.tags.as_dict(),
            "decisions": call.decisions.as_json(),
            "savings": {k: str(v) for k, v in call.savings.items()},
            "deployment": dep.name,
            "batch_api": plan.batch_api,
            "url": plan.url,
            "node": self.node,
            "reason": reason,
            "batch_id": None,
            "result": None,
        }
        ttl = self.config.result_ttl_days * 86400 + MIN_WINDOW_S
        await asyncio.to_thread(
            self.state.put, KIND, did, owner_of(call.tags), orjson.dumps(record), ttl_s=ttl,
            status="queued",
        )  # fmt: skip
        obj = self.view(did, record, "queued", now)
        reply = Reply(status=202, body=obj, served_model=call.model, deployment=dep.name)
        reply.deferred = True
        self._live[did] = _Live(call, reply, asyncio.Event())
        reply.on_done(lambda r: self._live.pop(did, None))
        return reply

    @staticmethod
    def view(did: str, record: dict[str, Any], status: str, created: float) -> dict[str, Any]:
        return {
            "id": did,
            "object": _DEFERRED_OBJECT,
            "status": status,
            "request_id": record["request_id"],
            "endpoint": _PATHS[record["endpoint"]],
            "model": record["model"],
            "batch_id": record.get("batch_id"),
            "created_at": int(created),
            "expires_at": int(created + MIN_WINDOW_S),
            "result_url": f"/v1/deferred/{did}",
        }

    # ------------------------------------------------------------------ sending
    async def flush(self, service: BatchService) -> int:
        """Send queued calls as batches, one per (deployment, batch API, endpoint)."""
        records = await asyncio.to_thread(
            self.state.list, KIND, statuses=["queued"], limit=self.config.max_batch_requests * 4
        )
        now = time.time()
        groups: dict[tuple[str, str, str], list[tuple[Record, dict[str, Any]]]] = {}
        for record in records:
            value = orjson.loads(record.value)
            if value.get("node") != self.node:
                # Another replica's call: taken over only once it made no progress for long.
                stale = now - self.config.adopt_after_s
                if record.updated > stale or not await asyncio.to_thread(
                    self.state.advance, KIND, record.id, ["queued"], "queued", older_than=stale
                ):
                    continue
            elif now - record.created < self.config.flush_interval_s:
                continue
            key = (value["deployment"], value["batch_api"], value["url"])
            groups.setdefault(key, []).append((record, value))
        sent = 0
        for (dep_name, batch_api, url), items in groups.items():
            for start in range(0, len(items), self.config.max_batch_requests):
                chunk = items[start : start + self.config.max_batch_requests]
                try:
                    await self._submit(service, dep_name, batch_api, url, chunk)
                    sent += len(chunk)
                except Exception:
                    log.exception("sending %d deferred calls to %s failed", len(chunk), dep_name)
        return sent

    async def _submit(
        self,
        service: BatchService,
        dep_name: str,
        batch_api: str,
        url: str,
        items: list[tuple[Record, dict[str, Any]]],
    ) -> None:
        dep = service.table.deployments[dep_name]
        owner = "spendgate:lane"
        lane = {value["request_id"]: record.id for record, value in items}
        tags = Tags(feature="(deferral lane)")
        if batch_api == "anthropic":
            requests = []
            for _, value in items:
                plan = plan_line(value["api"], value["endpoint"], value["body"], dep,
                                 value["model"])  # fmt: skip
                params = {**plan.body, "model": value["model"]}
                requests.append({"custom_id": value["request_id"], "params": params})
            obj = await service.create_message_batch(owner, tags, {"requests": requests},
                                                     lane=lane)  # fmt: skip
        else:
            lines = []
            for _, value in items:
                plan = plan_line(value["api"], value["endpoint"], value["body"], dep,
                                 value["model"])  # fmt: skip
                body = {**plan.body, "model": value["model"]}
                lines.append(orjson.dumps({"custom_id": value["request_id"], "method": "POST",
                                           "url": url, "body": body}))  # fmt: skip
            jsonl = b"\n".join(lines) + b"\n"
            boundary = "spendgate-" + uuid.uuid4().hex
            raw = (
                (
                    f'--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\n'
                    f'batch\r\n--{boundary}\r\nContent-Disposition: form-data; name="file"; '
                    f'filename="deferred.jsonl"\r\nContent-Type: application/jsonl\r\n\r\n'
                ).encode()
                + jsonl
                + f"\r\n--{boundary}--\r\n".encode()
            )
            file = await service.upload_file(
                owner, f"multipart/form-data; boundary={boundary}", raw
            )
            obj = await service.create_batch(
                owner, tags,
                {"input_file_id": file["id"], "endpoint": url, "completion_window": "24h"},
                lane=lane,
            )  # fmt: skip
        for record, value in items:
            value["batch_id"] = obj["id"]
            await asyncio.to_thread(
                self.state.advance, KIND, record.id, ["queued"], "submitted",
                value=orjson.dumps(value),
            )  # fmt: skip
        log.info("deferral lane: %d calls sent to %s as batch %s", len(items), dep_name, obj["id"])

    # ------------------------------------------------------------------ completing
    async def complete(self, did: str, batch: dict[str, Any], line: Line) -> None:
        """A deferred call's result came back: finish its reply here, or record it."""
        record = await asyncio.to_thread(self.state.get, KIND, did)
        if record is None or record.status == "done":
            return
        value = orjson.loads(record.value)
        dep = batch["deployment"]
        usage = usage_of(value["batch_api"], line.body) if line.body else None
        served = str((line.body or {}).get("model") or "") or None
        body: dict[str, Any] | None = None
        if line.body is not None:
            body = to_client(
                value["api"], value["url"], value["batch_api"], line.body, value["body"],
                response_id=response_id(value["request_id"]), model=served or value["model"],
            )  # fmt: skip
        saving = self._saving(value["model"], usage, dep, served)
        live = self._live.get(did)
        if live is not None:
            call, reply = live.call, live.reply
        else:
            call = _call_of(value)
            reply = Reply(deployment=dep)
        reply.status = line.status
        reply.body = body
        reply.usage = usage
        reply.served_model = served or value["model"]
        reply.deployment = dep
        reply.service_tier = "batch"
        reply.extra["batch"] = {"id": batch["object"]["id"], "custom_id": value["request_id"],
                                "api": value["batch_api"], "deferred": did}  # fmt: skip
        if line.error is not None:
            reply.error = GatewayError(line.status, line.error, code=line.code)
        if saving:
            call.savings["batch"] = saving
        if live is None and self.accountant is not None:
            accountant = self.accountant  # restored after a restart: no stage callbacks left
            reply.on_done(lambda r: credit_routing(accountant, call, r))
            reply.on_done(lambda r: accountant.record(call, r))
        reply.finish()  # prices the reply (innermost callback first), settles, records
        value["result"] = {
            "status": line.status,
            "body": body if body is not None else _error_body(value["api"], reply.error),
            "cost": cost_header(reply.cost),
        }
        await asyncio.to_thread(
            self.state.advance, KIND, did, ["queued", "submitted"], "done",
            value=orjson.dumps(value),
        )  # fmt: skip
        if live is not None:
            live.done.set()

    def _saving(
        self, model: str, usage: Usage | None, deployment: str, served: str | None
    ) -> Decimal | None:
        """The standard price of the usage minus its batch price (both by the pricer)."""
        if usage is None:
            return None
        standard = self.pricer.total(model, usage, deployment=deployment, served_as=served)
        batch = self.pricer.total(
            model, usage, deployment=deployment, served_as=served, service_tier="batch"
        )
        if standard is None or batch is None:
            return None
        return standard - batch

    # ------------------------------------------------------------------ fetching
    async def fetch(self, did: str, owner: str, wait_s: float) -> tuple[int, Any, dict[str, str]]:
        """(status, body, headers) of `GET /v1/deferred/{id}`."""
        deadline = time.monotonic() + min(max(wait_s, 0.0), self.config.max_wait_s)
        while True:
            record = await asyncio.to_thread(self.state.get, KIND, did)
            if record is None or record.owner != owner:
                raise GatewayError(404, f"No deferred call with id '{did}'.",
                                   code="deferred_not_found")  # fmt: skip
            value = orjson.loads(record.value)
            result = value.get("result")
            if result is not None:
                headers = {
                    "x-spendgate-request-id": value["request_id"],
                    "x-spendgate-cost-usd": result.get("cost") or "unknown",
                    "x-spendgate-deferred": did,
                }
                return int(result["status"]), result["body"], headers
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                view = self.view(did, value, record.status, record.created)
                return 202, view, {"x-spendgate-request-id": value["request_id"]}
            live = self._live.get(did)
            if live is not None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(live.done.wait(), min(remaining, 1.0))
            else:  # held by another replica: look again shortly
                await asyncio.sleep(min(remaining, 0.5))


def _call_of(value: dict[str, Any]) -> Call:
    call = Call(
        endpoint=value["endpoint"],
        api=value["api"],
        body=value["body"],
        requested_model=value["requested_model"],
        tags=Tags(**value["tags"]),
        request_id=value["request_id"],
        received_at=float(value["received_at"]),
        model=value["model"],
    )
    call.decisions = Decisions.from_json(value.get("decisions"))
    call.savings = {k: Decimal(v) for k, v in (value.get("savings") or {}).items()}
    return call


def _error_body(api: str, error: GatewayError | None) -> dict[str, Any]:
    error = error or GatewayError(502, "the batch returned no answer for this call")
    return dialect_for(api).error_body(error)
