"""Batch APIs passed through the gateway, and every result line recorded in the ledger.

OpenAI: a batch input file is read on upload — each line must call an endpoint the gateway
records (chat, responses, embeddings) with a model one batch-capable deployment serves — and
its models are renamed to the deployment's names before it is uploaded there. The file and
the batch keep the provider's ids; the gateway keeps who owns them (tenant, else virtual
key), which deployment holds them, the tags the batch was created with, and each line's
public model.

Anthropic: `POST /v1/messages/batches` likewise (one deployment per batch), and
`results_url` is rewritten to point at the gateway.

When a batch ends — seen by the poller, or by a client fetching its status — its results are
read once (a compare-and-set on the batch record picks one replica) and each line becomes
one ledger event: the line's usage priced at the deployment's batch rate (`service_tier:
batch`, half price at both providers), attributed to the batch's tags, with
`extra.batch = {id, custom_id, api}`. Each line's request id is derived from the batch id and
its custom_id, so a replica that records a batch again after a crash adds no rows.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson

from spendgate.accounting import Accountant
from spendgate.batches.config import BatchesConfig
from spendgate.batches.lines import OPENAI_BATCH_URLS, batch_capable, usage_of
from spendgate.batches.multipart import parse_multipart
from spendgate.batches.upstream import Upstream
from spendgate.call import API, Call, Endpoint, Tags
from spendgate.dispatch.table import ModelTable
from spendgate.errors import GatewayError
from spendgate.providers.base import Deployment
from spendgate.reply import Reply
from spendgate.state import Record, StateStore

__all__ = ["KIND_BATCH", "KIND_FILE", "BatchService", "Line", "line_request_id"]

log = logging.getLogger("spendgate.batches")

KIND_FILE = "file"
KIND_BATCH = "batch"
_OPENAI_DONE = frozenset({"completed", "failed", "expired", "cancelled"})


def line_request_id(batch_id: str, custom_id: str) -> str:
    """A result line's request id: the same every time the batch is recorded."""
    digest = hashlib.blake2b(f"{batch_id}\0{custom_id}".encode(), digest_size=16).hexdigest()
    return "sg-" + digest


@dataclass(slots=True)
class Line:
    custom_id: str
    status: int
    body: dict[str, Any] | None
    """The provider's answer (a chat completion, a message…) when it succeeded."""
    error: str | None = None
    code: str | None = None


def _bad(message: str, param: str | None = None, code: str = "invalid_batch") -> GatewayError:
    return GatewayError(400, message, param=param, code=code)


def not_found(what: str, id: str) -> GatewayError:
    return GatewayError(404, f"No such {what}: '{id}'", code=f"{what.replace(' ', '_')}_not_found")


@dataclass(kw_only=True, eq=False)
class BatchService:
    """Files and batches of one gateway process; shared with replicas through the store."""

    config: BatchesConfig
    state: StateStore
    table: ModelTable
    upstream: Upstream
    accountant: Accountant
    lane: Any = None
    _task: asyncio.Task[None] | None = field(default=None, init=False, repr=False)
    _next_sweep: float = field(default=0.0, init=False, repr=False)

    # ------------------------------------------------------------------ records
    async def _get(self, kind: str, id: str) -> Record | None:
        return await asyncio.to_thread(self.state.get, kind, id)

    async def _owned(self, kind: str, id: str, owner: str, what: str) -> tuple[Record, Any]:
        record = await self._get(kind, id)
        if record is None or record.owner != owner:
            raise not_found(what, id)
        return record, orjson.loads(record.value)

    async def _put(self, kind: str, id: str, owner: str, value: Any, status: str = "") -> None:
        await asyncio.to_thread(
            self.state.put, kind, id, owner, orjson.dumps(value), status=status,
            ttl_s=30 * 86400,
        )  # fmt: skip

    def _deployment(self, name: str) -> Deployment:
        dep = self.table.deployments.get(name)
        if dep is None:
            raise GatewayError(
                410, f"the deployment {name!r} that holds this no longer exists", code="gone"
            )
        return dep

    def _serving(self, model: Any, wire: str, where: str) -> Deployment:
        if not isinstance(model, str) or not model:
            raise _bad(f"{where}.model is required", f"{where}.model")
        for dep in self.table.serving(model):
            if dep.api_for(model) == wire and batch_capable(dep):
                return dep
        raise _bad(
            f"{where}: model {model!r} is not served by a deployment with "
            + ("OpenAI's" if wire == "openai" else "Anthropic's")
            + " Batch API here",
            f"{where}.model",
            "model_not_found",
        )

    # ------------------------------------------------------------------ OpenAI files
    async def upload_file(self, owner: str, content_type: str, raw: bytes) -> dict[str, Any]:
        if len(raw) > self.config.max_file_bytes:
            raise GatewayError(413, f"batch files are limited to {self.config.max_file_bytes} "
                               "bytes (batches.max_file_bytes)", code="file_too_large")  # fmt: skip
        try:
            form = parse_multipart(content_type, raw)
        except ValueError as exc:
            raise _bad(f"upload a file as multipart/form-data: {exc}", "file") from None
        purpose = form.get("purpose")
        file = form.get("file")
        if file is None or purpose is None:
            raise _bad("'file' and 'purpose' are required", "file", "missing_required_parameter")
        if purpose.data != b"batch":
            raise _bad(
                "only purpose 'batch' files pass through this gateway", "purpose", "invalid_value"
            )
        dep, lines, jsonl = self._read_openai_file(file.data)
        sent = aiohttp.FormData()
        sent.add_field("purpose", "batch")
        sent.add_field("file", jsonl, filename=file.filename or "batch.jsonl",
                       content_type="application/jsonl")  # fmt: skip
        obj = (await self.upstream.ok(dep, "POST", "/files", form=sent)).json()
        await self._put(KIND_FILE, str(obj["id"]), owner,
                        {"deployment": dep.name, "object": obj, "lines": lines})  # fmt: skip
        return dict(obj)

    def _read_openai_file(self, data: bytes) -> tuple[Deployment, dict[str, list[str]], bytes]:
        """(the deployment, custom_id → [public model, url], the file as uploaded)."""
        dep: Deployment | None = None
        lines: dict[str, list[str]] = {}
        out: list[bytes] = []
        for n, raw in enumerate(data.splitlines(), start=1):
            if not raw.strip():
                continue
            where = f"line {n}"
            try:
                line = orjson.loads(raw)
            except orjson.JSONDecodeError:
                raise _bad(f"{where} is not JSON", "file") from None
            if not isinstance(line, dict):
                raise _bad(f"{where} must be a JSON object", "file")
            cid, url, body = line.get("custom_id"), line.get("url"), line.get("body")
            if not isinstance(cid, str) or not cid or cid in lines:
                raise _bad(f"{where}: custom_id must be a unique non-empty string", "file")
            if line.get("method", "POST") != "POST" or url not in OPENAI_BATCH_URLS:
                raise _bad(f"{where}: url must be one of {sorted(OPENAI_BATCH_URLS)} (POST)",
                           "file")  # fmt: skip
            if not isinstance(body, dict):
                raise _bad(f"{where}: body must be an object", "file")
            model = body.get("model")
            this = self._serving(model, "openai", where)
            if dep is not None and this.name != dep.name:
                raise _bad(f"{where}: every line of a batch must go to one deployment "
                           f"({dep.name!r}, not {this.name!r})", "file")  # fmt: skip
            dep = this
            assert isinstance(model, str)
            if url == "/v1/responses" and not dep.serves_responses(model):
                raise _bad(f"{where}: deployment {dep.name!r} has no Responses API", "file")
            lines[cid] = [model, str(url)]
            renamed = {**line, "body": {**body, "model": dep.upstream_model(model)}}
            out.append(orjson.dumps(renamed))
        if dep is None:
            raise _bad("the batch file has no requests", "file")
        return dep, lines, b"\n".join(out) + b"\n"

    async def file(self, owner: str, fid: str) -> dict[str, Any]:
        _, value = await self._owned(KIND_FILE, fid, owner, "file")
        dep = self._deployment(value["deployment"])
        obj = (await self.upstream.ok(dep, "GET", f"/files/{fid}")).json()
        return dict(obj)

    async def file_content(self, owner: str, fid: str) -> bytes:
        _, value = await self._owned(KIND_FILE, fid, owner, "file")
        dep = self._deployment(value["deployment"])
        return (await self.upstream.ok(dep, "GET", f"/files/{fid}/content")).body

    async def delete_file(self, owner: str, fid: str) -> dict[str, Any]:
        _, value = await self._owned(KIND_FILE, fid, owner, "file")
        dep = self._deployment(value["deployment"])
        obj = (await self.upstream.ok(dep, "DELETE", f"/files/{fid}")).json()
        await asyncio.to_thread(self.state.delete, KIND_FILE, fid)
        return dict(obj)

    async def files(self, owner: str) -> dict[str, Any]:
        records = await asyncio.to_thread(self.state.list, KIND_FILE, owner=owner)
        data = [orjson.loads(r.value)["object"] for r in reversed(records)]
        return {"object": "list", "data": data, "has_more": False}

    # ------------------------------------------------------------------ OpenAI batches
    async def create_batch(
        self, owner: str, tags: Tags, body: dict[str, Any], *, lane: dict[str, str] | None = None
    ) -> dict[str, Any]:
        fid = body.get("input_file_id")
        if not isinstance(fid, str):
            raise _bad("input_file_id is required", "input_file_id", "missing_required_parameter")
        _, file = await self._owned(KIND_FILE, fid, owner, "file")
        urls = {url for _, url in file["lines"].values()}
        if body.get("endpoint") not in urls or len(urls) != 1:
            raise _bad(f"endpoint must be the url every line of the file calls ({sorted(urls)})",
                       "endpoint")  # fmt: skip
        dep = self._deployment(file["deployment"])
        obj = (await self.upstream.ok(dep, "POST", "/batches", json=body)).json()
        record = {
            "api": "openai",
            "deployment": dep.name,
            "tags": tags.as_dict(),
            "lines": file["lines"],
            "object": obj,
            "lane": lane,
        }
        await self._put(KIND_BATCH, str(obj["id"]), owner, record, "pending")
        return dict(obj)

    async def batch(self, owner: str, bid: str) -> dict[str, Any]:
        record, value = await self._owned(KIND_BATCH, bid, owner, "batch")
        return await self._refresh(record, value)

    async def cancel_batch(self, owner: str, bid: str) -> dict[str, Any]:
        record, value = await self._owned(KIND_BATCH, bid, owner, "batch")
        dep = self._deployment(value["deployment"])
        path = f"/batches/{bid}/cancel"
        anthropic = value["api"] == "anthropic"
        if anthropic:
            path = f"/messages/batches/{bid}/cancel"
        obj = (await self.upstream.ok(dep, "POST", path, anthropic=anthropic)).json()
        return await self._observe(record, value, obj)

    async def batches(self, owner: str, api: str) -> list[dict[str, Any]]:
        records = await asyncio.to_thread(self.state.list, KIND_BATCH, owner=owner)
        values = [orjson.loads(r.value) for r in reversed(records)]
        return [v["object"] for v in values if v["api"] == api]

    async def _refresh(self, record: Record, value: dict[str, Any]) -> dict[str, Any]:
        dep = self._deployment(value["deployment"])
        if value["api"] == "anthropic":
            answer = await self.upstream.ok(
                dep, "GET", f"/messages/batches/{record.id}", anthropic=True
            )
        else:
            answer = await self.upstream.ok(dep, "GET", f"/batches/{record.id}")
        return await self._observe(record, value, answer.json())

    async def _observe(
        self, record: Record, value: dict[str, Any], obj: dict[str, Any]
    ) -> dict[str, Any]:
        """Keep the latest status; register output files as the owner's; record the results
        once the batch has ended."""
        value["object"] = obj
        ended = (
            obj.get("processing_status") == "ended"
            if value["api"] == "anthropic"
            else obj.get("status") in _OPENAI_DONE
        )
        if value["api"] == "openai":
            for key in ("output_file_id", "error_file_id"):
                fid = obj.get(key)
                if isinstance(fid, str) and fid and await self._get(KIND_FILE, fid) is None:
                    await self._put(KIND_FILE, fid, record.owner,
                                    {"deployment": value["deployment"], "object": {"id": fid},
                                     "lines": {}})  # fmt: skip
        await asyncio.to_thread(self.state.update, KIND_BATCH, record.id, orjson.dumps(value))
        if ended and record.status in ("pending", "recording"):
            await self.record(record.id)
        return obj

    # ------------------------------------------------------------------ Anthropic batches
    async def create_message_batch(
        self, owner: str, tags: Tags, body: dict[str, Any], *, lane: dict[str, str] | None = None
    ) -> dict[str, Any]:
        from spendgate.server.validate import validate_messages

        requests = body.get("requests")
        if not isinstance(requests, list) or not requests:
            raise _bad("requests: a non-empty array is required", "requests")
        dep: Deployment | None = None
        lines: dict[str, list[str]] = {}
        sent: list[dict[str, Any]] = []
        for i, request in enumerate(requests):
            where = f"requests.{i}"
            if not isinstance(request, dict) or not isinstance(request.get("params"), dict):
                raise _bad(f"{where}: needs custom_id and params", where)
            cid = request.get("custom_id")
            if not isinstance(cid, str) or not cid or cid in lines:
                raise _bad(f"{where}.custom_id must be a unique non-empty string", where)
            params = request["params"]
            try:
                model = validate_messages(params)
            except GatewayError as exc:
                raise _bad(f"{where}.params: {exc.message}", f"{where}.params") from None
            if params.get("stream"):
                raise _bad(f"{where}.params: batched requests cannot stream", where)
            this = self._serving(model, "anthropic", where)
            if dep is not None and this.name != dep.name:
                raise _bad(f"{where}: every request of a batch must go to one deployment", where)
            dep = this
            lines[cid] = [model, "/v1/messages"]
            sent.append({**request, "params": {**params, "model": dep.upstream_model(model)}})
        assert dep is not None
        obj = (
            await self.upstream.ok(
                dep, "POST", "/messages/batches", anthropic=True, json={"requests": sent}
            )
        ).json()
        record = {
            "api": "anthropic",
            "deployment": dep.name,
            "tags": tags.as_dict(),
            "lines": lines,
            "object": obj,
            "lane": lane,
        }
        await self._put(KIND_BATCH, str(obj["id"]), owner, record, "pending")
        return dict(obj)

    async def message_results(self, owner: str, bid: str) -> bytes:
        _, value = await self._owned(KIND_BATCH, bid, owner, "message batch")
        dep = self._deployment(value["deployment"])
        path = f"/messages/batches/{bid}/results"
        return (await self.upstream.ok(dep, "GET", path, anthropic=True)).body

    async def delete_message_batch(self, owner: str, bid: str) -> dict[str, Any]:
        _, value = await self._owned(KIND_BATCH, bid, owner, "message batch")
        dep = self._deployment(value["deployment"])
        path = f"/messages/batches/{bid}"
        obj = (await self.upstream.ok(dep, "DELETE", path, anthropic=True)).json()
        return dict(obj)

    # ------------------------------------------------------------------ recording results
    async def record(self, bid: str) -> int:
        """Record an ended batch's result lines once; returns how many this call recorded
        (0 when another caller holds or finished it)."""
        stale = time.time() - self.config.stale_claim_s
        claimed = await asyncio.to_thread(
            self.state.advance, KIND_BATCH, bid, ["pending"], "recording"
        ) or await asyncio.to_thread(
            self.state.advance, KIND_BATCH, bid, ["recording"], "recording", older_than=stale
        )
        if not claimed:
            return 0
        record = await self._get(KIND_BATCH, bid)
        if record is None:
            return 0
        value = orjson.loads(record.value)
        try:
            lines = await self._results(bid, value)
            for line in lines:
                await self._record_line(bid, value, line)
        except Exception:
            log.exception("recording batch %s failed; it will be retried", bid)
            await asyncio.to_thread(self.state.advance, KIND_BATCH, bid, ["recording"], "pending")
            return 0
        value["recorded_lines"] = len(lines)
        await asyncio.to_thread(
            self.state.advance, KIND_BATCH, bid, ["recording"], "recorded",
            value=orjson.dumps(value),
        )  # fmt: skip
        log.info("batch %s: %d result lines recorded", bid, len(lines))
        return len(lines)

    async def _results(self, bid: str, value: dict[str, Any]) -> list[Line]:
        dep = self._deployment(value["deployment"])
        obj = value["object"]
        lines: list[Line] = []
        if value["api"] == "anthropic":
            path = f"/messages/batches/{bid}/results"
            raw = (await self.upstream.ok(dep, "GET", path, anthropic=True)).body
            for text in raw.splitlines():
                if text.strip():
                    lines.append(_anthropic_line(orjson.loads(text)))
            return lines
        for key in ("output_file_id", "error_file_id"):
            fid = obj.get(key)
            if not fid:
                continue
            raw = (await self.upstream.ok(dep, "GET", f"/files/{fid}/content")).body
            for text in raw.splitlines():
                if text.strip():
                    lines.append(_openai_line(orjson.loads(text)))
        return lines

    async def _record_line(self, bid: str, value: dict[str, Any], line: Line) -> None:
        lane = value.get("lane")
        if lane is not None and self.lane is not None:
            deferred = lane.get(line.custom_id)
            if deferred is not None:
                await self.lane.complete(deferred, value, line)
                return
        model, url = value["lines"].get(line.custom_id, [None, None])
        endpoint, api = _kind(value["api"], url)
        served = (line.body or {}).get("model") if line.body else None
        public = model or served or "(unknown)"
        call = Call(
            endpoint=endpoint,
            api=api,
            body={"model": public},
            requested_model=public,
            tags=Tags(**value["tags"]),
            request_id=line_request_id(bid, line.custom_id),
        )
        reply = Reply(
            status=line.status,
            usage=usage_of(value["api"], line.body) if line.body else None,
            served_model=str(served) if served else None,
            deployment=value["deployment"],
            service_tier="batch",
        )
        if line.body is not None:
            reply.finish_reason = _finish(line.body)
        if line.error is not None:
            reply.error = GatewayError(line.status, line.error, code=line.code)
        reply.extra["batch"] = {"id": bid, "custom_id": line.custom_id, "api": value["api"]}
        reply.on_done(lambda r: self.accountant.record(call, r))
        reply.finish()

    # ------------------------------------------------------------------ polling
    async def tick(self) -> None:
        """Ask providers about unfinished batches; record ended ones; flush the lane; once
        an hour, delete expired state (stored Responses, old batch records)."""
        if time.monotonic() >= self._next_sweep:
            self._next_sweep = time.monotonic() + 3600
            try:
                swept = await asyncio.to_thread(self.state.sweep)
                if swept:
                    log.info("state: %d expired records deleted", swept)
            except Exception:
                log.exception("sweeping expired state failed")
        records = await asyncio.to_thread(
            self.state.list, KIND_BATCH, statuses=["pending", "recording"]
        )
        for record in records:
            try:
                value = orjson.loads(record.value)
                if record.status == "recording":
                    await self.record(record.id)  # a stale claim is taken over
                else:
                    await self._refresh(record, value)
            except GatewayError as exc:
                log.warning("polling batch %s: %s", record.id, exc.message)
            except Exception:
                log.exception("polling batch %s failed", record.id)
        if self.lane is not None:
            try:
                await self.lane.flush(self)
            except Exception:
                log.exception("flushing the deferral lane failed")

    async def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        interval = self.config.poll_interval_s
        if self.lane is not None:
            interval = min(interval, max(self.lane.config.flush_interval_s, 0.05))
        while True:
            await asyncio.sleep(interval)
            await self.tick()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None


def _kind(batch_api: str, url: str | None) -> tuple[Endpoint, API]:
    if batch_api == "anthropic":
        return "messages", "anthropic"
    return OPENAI_BATCH_URLS.get(url or "", ("chat", "openai"))


def _finish(body: dict[str, Any]) -> str | None:
    if body.get("object") == "response":
        from spendgate.providers.responses import finish_reason_of

        return finish_reason_of(body)
    choices = body.get("choices")
    if isinstance(choices, list) and choices and isinstance(choices[0], dict):
        return choices[0].get("finish_reason")
    stop = body.get("stop_reason")
    return stop if isinstance(stop, str) else None


def _openai_line(data: dict[str, Any]) -> Line:
    cid = str(data.get("custom_id") or "")
    response = data.get("response") if isinstance(data.get("response"), dict) else None
    error = data.get("error") if isinstance(data.get("error"), dict) else None
    if response is not None:
        status = int(response.get("status_code") or 500)
        body = response.get("body") if isinstance(response.get("body"), dict) else None
        if status == 200 and body is not None:
            return Line(cid, 200, body)
        message = ((body or {}).get("error") or {}).get("message") or f"line failed ({status})"
        return Line(cid, status, None, str(message), "batch_line_failed")
    message = (error or {}).get("message") or "the batch did not run this request"
    return Line(cid, 504, None, str(message), str((error or {}).get("code") or "batch_expired"))


def _anthropic_line(data: dict[str, Any]) -> Line:
    cid = str(data.get("custom_id") or "")
    raw = data.get("result")
    result: dict[str, Any] = raw if isinstance(raw, dict) else {}
    kind = result.get("type")
    if kind == "succeeded" and isinstance(result.get("message"), dict):
        return Line(cid, 200, result["message"])
    if kind == "errored":
        error = (result.get("error") or {}).get("error") or result.get("error") or {}
        return Line(cid, 400, None, str(error.get("message") or "errored"), "batch_line_failed")
    return Line(cid, 504, None, f"the batch did not run this request ({kind})", f"batch_{kind}")
