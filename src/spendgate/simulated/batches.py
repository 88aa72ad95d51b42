"""The simulated upstream's Batch APIs: OpenAI's `/v1/files` + `/v1/batches` and Anthropic's
`/v1/messages/batches`.

A batch is answered by the simulator's own synchronous handlers, one line at a time, in a
task started when the batch is created: with `latency="none"` it completes in milliseconds,
so a test can run a batch end to end by polling its status as a client would. Usage in the
results is what the synchronous call reports (Anthropic's carries `service_tier: "batch"`,
as the real API's does); what a batch costs is the gateway's to work out.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable
from typing import Any

import orjson

from spendgate.simulated.endpoints import ENDPOINTS, Endpoint
from spendgate.simulated.state import UpstreamState
from spendgate.simulated.wire import Exchange, Message, Send, send_error, send_json

__all__ = ["SimBatches"]

_OPENAI_URLS = {
    "/v1/chat/completions": "/chat/completions",
    "/v1/responses": "/responses",
    "/v1/embeddings": "/embeddings",
}


def _id(prefix: str) -> str:
    return prefix + uuid.uuid4().hex[:24]


class SimBatches:
    """Files and batches of one simulated upstream (in memory, per process)."""

    def __init__(self, state: UpstreamState) -> None:
        self.state = state
        self.files: dict[str, dict[str, Any]] = {}
        self.contents: dict[str, bytes] = {}
        self.batches: dict[str, dict[str, Any]] = {}
        self.message_batches: dict[str, dict[str, Any]] = {}
        self.message_results: dict[str, bytes] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    @staticmethod
    def handles(path: str) -> bool:
        return path.startswith(("/files", "/batches", "/messages/batches"))

    async def handle(
        self, method: str, path: str, headers: dict[bytes, bytes], raw: bytes, send: Send
    ) -> None:
        parts = [p for p in path.split("/") if p]
        try:
            if parts[0] == "files":
                await self._files(method, parts[1:], headers, raw, send)
            elif parts[0] == "batches":
                await self._openai_batches(method, parts[1:], raw, send)
            else:
                await self._anthropic_batches(method, parts[2:], raw, send)
        except (KeyError, ValueError, TypeError, IndexError, AttributeError) as exc:
            api = "anthropic" if parts[0] == "messages" else "openai"
            await send_error(send, api, 400, f"Invalid request ({type(exc).__name__}).")

    async def _send(self, send: Send, payload: Any, ctype: bytes = b"") -> None:
        await send_json(send, payload, 200, [(b"content-type", ctype)] if ctype else None)

    async def _missing(self, send: Send, api: str, what: str, id: str) -> None:
        await send_error(send, api, 404, f"No such {what}: '{id}'")

    # ------------------------------------------------------------------ OpenAI files
    async def _files(
        self, method: str, rest: list[str], headers: dict[bytes, bytes], raw: bytes, send: Send
    ) -> None:
        from spendgate.batches.multipart import parse_multipart

        if not rest and method == "POST":
            ctype = headers.get(b"content-type", b"").decode("latin-1")
            form = parse_multipart(ctype, raw)
            file = form["file"]
            purpose = form["purpose"].data.decode()
            fid = _id("file-")
            meta = {
                "id": fid,
                "object": "file",
                "bytes": len(file.data),
                "created_at": int(time.time()),
                "filename": file.filename or "upload.jsonl",
                "purpose": purpose,
                "status": "processed",
                "expires_at": None,
                "status_details": None,
            }
            self.files[fid] = meta
            self.contents[fid] = file.data
            await self._send(send, meta)
            return
        if not rest and method == "GET":
            data = list(self.files.values())
            await self._send(send, {"object": "list", "data": data, "has_more": False})
            return
        fid = rest[0]
        if fid not in self.files:
            await self._missing(send, "openai", "file", fid)
            return
        if len(rest) == 2 and rest[1] == "content" and method == "GET":
            await self._send(send, self.contents[fid], ctype=b"application/octet-stream")
        elif len(rest) == 1 and method == "GET":
            await self._send(send, self.files[fid])
        elif len(rest) == 1 and method == "DELETE":
            self.files.pop(fid)
            self.contents.pop(fid, None)
            await self._send(send, {"id": fid, "object": "file", "deleted": True})
        else:
            await send_error(send, "openai", 404, f"Unknown route {method} /files/{fid}")

    def _store_file(self, data: bytes, purpose: str, name: str) -> str:
        fid = _id("file-")
        self.files[fid] = {
            "id": fid, "object": "file", "bytes": len(data), "created_at": int(time.time()),
            "filename": name, "purpose": purpose, "status": "processed", "expires_at": None,
            "status_details": None,
        }  # fmt: skip
        self.contents[fid] = data
        return fid

    # ------------------------------------------------------------------ OpenAI batches
    async def _openai_batches(self, method: str, rest: list[str], raw: bytes, send: Send) -> None:
        if not rest and method == "POST":
            body = orjson.loads(raw)
            fid = body["input_file_id"]
            if fid not in self.files:
                await self._missing(send, "openai", "file", fid)
                return
            if body.get("endpoint") not in _OPENAI_URLS:
                await send_error(send, "openai", 400, "Unsupported batch endpoint.")
                return
            now = int(time.time())
            batch: dict[str, Any] = {
                "id": _id("batch_"), "object": "batch", "endpoint": body["endpoint"],
                "errors": None, "input_file_id": fid,
                "completion_window": body.get("completion_window", "24h"),
                "status": "validating", "output_file_id": None, "error_file_id": None,
                "created_at": now, "in_progress_at": None, "expires_at": now + 86400,
                "finalizing_at": None, "completed_at": None, "failed_at": None,
                "expired_at": None, "cancelling_at": None, "cancelled_at": None,
                "request_counts": {"total": 0, "completed": 0, "failed": 0},
                "metadata": body.get("metadata"),
            }  # fmt: skip
            self.batches[batch["id"]] = batch
            self._spawn(self._run_openai(batch))
            await self._send(send, batch)
            return
        if not rest and method == "GET":
            data = list(self.batches.values())
            await self._send(send, {"object": "list", "data": data, "has_more": False})
            return
        found = self.batches.get(rest[0])
        if found is None:
            await self._missing(send, "openai", "batch", rest[0])
            return
        batch = found
        if len(rest) == 2 and rest[1] == "cancel" and method == "POST":
            if batch["status"] not in ("completed", "failed", "expired"):
                batch.update(status="cancelled", cancelled_at=int(time.time()))
            await self._send(send, batch)
        elif len(rest) == 1 and method == "GET":
            await self._send(send, batch)
        else:
            await send_error(send, "openai", 404, f"Unknown route {method} /batches")

    async def _run_openai(self, batch: dict[str, Any]) -> None:
        batch.update(status="in_progress", in_progress_at=int(time.time()))
        lines = [ln for ln in self.contents[batch["input_file_id"]].splitlines() if ln.strip()]
        handler = self._handler(_OPENAI_URLS[batch["endpoint"]])
        out: list[bytes] = []
        errors: list[bytes] = []
        for raw in lines:
            if batch["status"] == "cancelled":
                break
            line = orjson.loads(raw)
            status, body = await self._call(handler, line.get("body") or {})
            entry = {
                "id": _id("batch_req_"),
                "custom_id": line.get("custom_id"),
                "response": {"status_code": status, "request_id": _id("req_"), "body": body},
                "error": None,
            }
            (out if status == 200 else errors).append(orjson.dumps(entry))
        counts = {"total": len(lines), "completed": len(out), "failed": len(errors)}
        now = int(time.time())
        batch["request_counts"] = counts
        if out:
            batch["output_file_id"] = self._store_file(
                b"\n".join(out) + b"\n", "batch_output", f"{batch['id']}_output.jsonl"
            )
        if errors:
            batch["error_file_id"] = self._store_file(
                b"\n".join(errors) + b"\n", "batch_output", f"{batch['id']}_error.jsonl"
            )
        if batch["status"] != "cancelled":
            batch.update(status="completed", finalizing_at=now, completed_at=now)

    # ------------------------------------------------------------------ Anthropic batches
    async def _anthropic_batches(
        self, method: str, rest: list[str], raw: bytes, send: Send
    ) -> None:
        if not rest and method == "POST":
            body = orjson.loads(raw)
            requests = body["requests"]
            if not isinstance(requests, list) or not requests:
                await send_error(send, "anthropic", 400, "requests: must not be empty")
                return
            now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            batch: dict[str, Any] = {
                "id": _id("msgbatch_"), "type": "message_batch",
                "processing_status": "in_progress",
                "request_counts": {"processing": len(requests), "succeeded": 0, "errored": 0,
                                   "canceled": 0, "expired": 0},
                "ended_at": None, "created_at": now,
                "expires_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time()
                                                                              + 86400)),
                "archived_at": None, "cancel_initiated_at": None, "results_url": None,
            }  # fmt: skip
            self.message_batches[batch["id"]] = batch
            self._spawn(self._run_anthropic(batch, requests))
            await self._send(send, batch)
            return
        if not rest and method == "GET":
            data = list(self.message_batches.values())
            await self._send(send, {"data": data, "has_more": False,
                                    "first_id": None, "last_id": None})  # fmt: skip
            return
        found = self.message_batches.get(rest[0])
        if found is None:
            await self._missing(send, "anthropic", "message batch", rest[0])
            return
        batch = found
        if len(rest) == 2 and rest[1] == "results" and method == "GET":
            if batch["processing_status"] != "ended":
                await send_error(send, "anthropic", 400, "Batch has not ended yet.")
                return
            await self._send(send, self.message_results[batch["id"]], ctype=b"application/x-jsonl")
        elif len(rest) == 2 and rest[1] == "cancel" and method == "POST":
            if batch["processing_status"] != "ended":
                batch["processing_status"] = "canceling"
                batch["cancel_initiated_at"] = batch["created_at"]
            await self._send(send, batch)
        elif len(rest) == 1 and method == "GET":
            await self._send(send, batch)
        elif len(rest) == 1 and method == "DELETE":
            self.message_batches.pop(batch["id"])
            self.message_results.pop(batch["id"], None)
            await self._send(send, {"id": batch["id"], "type": "message_batch_deleted"})
        else:
            await send_error(send, "anthropic", 404, f"Unknown route {method} batches")

    async def _run_anthropic(self, batch: dict[str, Any], requests: list[Any]) -> None:
        handler = self._handler("/messages")
        lines: list[bytes] = []
        counts = batch["request_counts"]
        for request in requests:
            cid = request.get("custom_id")
            if batch["processing_status"] == "canceling":
                result: dict[str, Any] = {"type": "canceled"}
                counts["canceled"] += 1
            else:
                status, body = await self._call(handler, request.get("params") or {})
                if status == 200:
                    usage = body.get("usage")
                    if isinstance(usage, dict):
                        usage["service_tier"] = "batch"
                    result = {"type": "succeeded", "message": body}
                    counts["succeeded"] += 1
                else:
                    result = {"type": "errored", "error": body}
                    counts["errored"] += 1
            counts["processing"] -= 1
            lines.append(orjson.dumps({"custom_id": cid, "result": result}))
        self.message_results[batch["id"]] = b"\n".join(lines) + b"\n"
        batch.update(
            processing_status="ended",
            ended_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            results_url=f"{self.app_url()}/v1/messages/batches/{batch['id']}/results",
        )

    def app_url(self) -> str:
        return self.state.public_url or "http://simulated"

    # ------------------------------------------------------------------ running lines
    def _handler(self, path: str) -> Endpoint:
        return ENDPOINTS[path]

    async def _call(self, handler: Endpoint, body: dict[str, Any]) -> tuple[int, Any]:
        """One request through a synchronous handler, its answer captured."""
        captured: dict[str, Any] = {"status": 500, "body": b""}

        async def send(message: Message) -> None:
            if message["type"] == "http.response.start":
                captured["status"] = message["status"]
            else:
                captured["body"] += message.get("body", b"")

        body = {k: v for k, v in body.items() if k != "stream"}
        try:
            await handler(self.state, Exchange(body, str(body.get("model") or ""), {}, send))
        except (TypeError, KeyError, AttributeError, ValueError, IndexError) as exc:
            return 400, {"error": {"message": f"Invalid request ({type(exc).__name__}).",
                                   "type": "invalid_request_error"}}  # fmt: skip
        return captured["status"], orjson.loads(captured["body"] or b"{}")

    def _spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
