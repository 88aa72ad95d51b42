"""Regression tests for what a hostile-input probe found: every request gets a proper HTTP
answer (never a plain-text 500 or a dropped connection) and exactly one ledger row.

Each test names the finding it pins. A seeded random-body fuzz closes the file.
"""

from __future__ import annotations

import contextlib
import json
import random
import socket
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import orjson
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

from conftest import Harness, gateway_settings, start_harness
from hostile_bodies import random_body
from spendgate.server.app import header_value
from spendgate.simulated import SimulatedUpstream

CHAT = "/v1/chat/completions"
MESSAGES = "/v1/messages"
HEADER_LIMIT = 16 * 1024


@pytest.fixture(scope="module")
def edge(sim: SimulatedUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    settings = gateway_settings(
        sim, tmp_path_factory.mktemp("hostile"), server={"max_header_bytes": HEADER_LIMIT}
    )
    harness = start_harness(settings)
    yield harness
    harness.close()


def _post(h: Harness, path: str, body: Any, **headers: str) -> httpx2.Response:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()  # orjson stops at 254
    return httpx2.post(
        h.url + path,
        content=raw,
        headers={"content-type": "application/json", **headers},
        timeout=30,
    )


def _refused(h: Harness, r: httpx2.Response, status: int = 400) -> dict[str, Any]:
    """A JSON refusal with `status`, and its one ledger row."""
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    event = h.one(r.headers["x-spendgate-request-id"])
    assert event.status == status and event.cost_nanos == 0
    body: dict[str, Any] = r.json()
    return body


@pytest.mark.parametrize("role", [["user"], {"r": "user"}, 7, None, True])
def test_non_string_role_is_a_400_with_its_row(edge: Harness, role: Any) -> None:
    """Finding: a non-string role was a plain-text 500 and left no ledger row."""
    r = _post(edge, CHAT, {"model": "gpt-4o", "messages": [{"role": role, "content": "hi"}]})
    assert _refused(edge, r)["error"]["param"] == "messages[0].role"
    body = {
        "model": "claude-sonnet-4",
        "max_tokens": 9,
        "messages": [{"role": role, "content": "x"}],
    }
    _refused(edge, _post(edge, MESSAGES, body))


@pytest.mark.parametrize("model", ["gpt-4o\x00", "gpt\r\nx-injected: 1", "gpt-4o\x7f", "m" * 300])
def test_model_names_with_control_characters_are_refused(edge: Harness, model: str) -> None:
    """Finding: a control character in the model was echoed into `x-spendgate-model` and the
    server dropped the connection without a response."""
    r = _post(edge, CHAT, {"model": model, "messages": [{"role": "user", "content": "hi"}]})
    assert _refused(edge, r)["error"]["param"] == "model"
    assert "x-injected" not in r.headers


def test_echoed_header_values_are_always_valid() -> None:
    assert header_value("gpt-4o-mini") == b"gpt-4o-mini"
    for hostile in ("a\r\nb", "a\x00b", "modèle", "a\tb"):
        value = header_value(hostile)
        assert all(0x20 <= c < 0x7F for c in value), value


@pytest.mark.parametrize("depth", [100, 300, 1000])
def test_deeply_nested_json_is_refused(edge: Harness, depth: int) -> None:
    """Finding: JSON nested 254–1,023 deep parsed, then failed to re-encode: a 500, and the
    row was lost when the nesting sat inside a message's content."""
    nested = b"[" * depth + b'"x"' + b"]" * depth
    inside = b'{"model": "gpt-4o", "messages": [{"role": "user", "content": [%s]}]}' % nested
    error = _refused(edge, _post(edge, CHAT, inside))["error"]
    assert error["code"] in ("invalid_json", "invalid_type")
    deep = b'{"k": ' * depth + b"{}" + b"}" * depth
    top = b'{"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], "metadata": %s}'
    _refused(edge, _post(edge, CHAT, top % deep))


def test_wide_but_shallow_bodies_still_pass(edge: Harness) -> None:
    """The depth check must not refuse a long chat (many brackets, little nesting)."""
    messages = [{"role": "user" if i % 2 == 0 else "assistant", "content": [{"type": "text",
                 "text": f"turn {i}"}]} for i in range(201)]  # fmt: skip
    r = _post(edge, CHAT, {"model": "gpt-4o-mini", "messages": messages})
    assert r.status_code == 200, r.text


@pytest.mark.parametrize(
    ("path", "body"),
    [
        (CHAT, {"model": "claude-sonnet-4", "messages": [
            {"role": "user", "content": [{"type": "image_url", "image_url": 5}]}]}),
        (CHAT, {"model": "claude-sonnet-4",
                "messages": [{"role": "user", "content": ["text"]}]}),
        (CHAT, {"model": "claude-sonnet-4", "messages": [
            {"role": "assistant", "content": "hi", "tool_calls": True},
            {"role": "user", "content": "go"}]}),
        (MESSAGES, {"model": "gpt-4o-mini", "max_tokens": 9, "messages": [
            {"role": "user", "content": [{"type": "tool_use", "input": 1}]}]}),
        (MESSAGES, {"model": "gpt-4o-mini", "max_tokens": 9, "system": [{"x": 1}],
                    "messages": [{"role": "user", "content": "hi"}]}),
        (MESSAGES, {"model": "gpt-4o-mini", "max_tokens": 9, "messages": [
            {"role": "user", "content": [{"type": "text", "text": 3}]}]}),
    ],
)  # fmt: skip
def test_malformed_blocks_on_a_cross_format_call_are_400(
    edge: Harness, path: str, body: dict[str, Any]
) -> None:
    """Finding: malformed content blocks on a call translated to the other wire format were
    a 500 instead of a 400."""
    r = _post(edge, path, body)
    if path == MESSAGES:
        assert r.json()["type"] == "error"
    _refused(edge, r)


def test_embedding_dimensions_are_bounded(edge: Harness) -> None:
    """Finding: `dimensions` was unbounded; the simulated upstream grew to 5.7 GB."""
    body = {"model": "text-embedding-3-small", "input": "hi", "dimensions": 10**9}
    assert _refused(edge, _post(edge, "/v1/embeddings", body))["error"]["param"] == "dimensions"
    direct = httpx2.post(edge.gateway.table.serving("text-embedding-3-small")[0].base_url
                         + "/embeddings", json=body, timeout=30)  # fmt: skip
    assert direct.status_code == 400


@pytest.mark.parametrize("value", ["feature\n", "a\tb", "x\x00"])
def test_tag_values_reject_control_characters(edge: Harness, value: str) -> None:
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}],
            "metadata": {"feature": value}}  # fmt: skip
    assert _refused(edge, _post(edge, CHAT, body))["error"]["code"] == "invalid_tag"


def _raw_request(h: Harness, head: bytes, timeout: float = 10) -> bytes:
    with socket.create_connection((h.server.host, h.server.port), timeout=timeout) as s:
        # The server may answer and close before we finish sending: then read its answer.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            s.sendall(head)
        chunks = []
        while True:
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            chunks.append(chunk)
    return b"".join(chunks)


def test_header_block_over_the_limit_is_431_with_its_row(edge: Harness) -> None:
    """Finding: no header size limit; 8 × 50 MB headers took RSS from 238 to 618 MB."""
    head = (b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\n"
            + b"x-big: " + b"a" * (4 * HEADER_LIMIT) + b"\r\n\r\n")  # fmt: skip
    answer = _raw_request(edge, head)
    status_line, _, rest = answer.partition(b"\r\n")
    assert status_line == b"HTTP/1.1 431 Request Header Fields Too Large"
    head_text, _, body = rest.partition(b"\r\n\r\n")
    assert orjson.loads(body)["error"]["code"] == "request_header_fields_too_large"
    request_id = next(
        line.split(b": ", 1)[1].decode()
        for line in head_text.split(b"\r\n")
        if line.lower().startswith(b"x-spendgate-request-id")
    )
    event = edge.one(request_id)
    assert event.status == 431 and event.endpoint == "other"
    # Many small headers add up the same way; a request under the limit is served.
    many = b"".join(b"x-h%d: %s\r\n" % (i, b"v" * 100) for i in range(400))
    answer = _raw_request(edge, b"GET /v1/models HTTP/1.1\r\nhost: x\r\n" + many + b"\r\n")
    assert answer.startswith(b"HTTP/1.1 431")
    ok = _raw_request(edge, b"GET /v1/models HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
    assert ok.startswith(b"HTTP/1.1 200")


def test_unknown_routes_get_a_404_and_a_row(edge: Harness) -> None:
    r = httpx2.post(edge.url + "/v1/nothing-here", json={}, timeout=10)
    assert r.status_code == 404 and r.json()["error"]["code"] == "unknown_url"
    event = edge.one(r.headers["x-spendgate-request-id"])
    assert event.status == 404 and event.endpoint == "other"


# ------------------------------------------------------------------------------ fuzz


def test_random_bodies_never_500_and_each_has_one_row(edge: Harness) -> None:
    """400 seeded random bodies over both endpoints and both directions of translation
    (before the fixes: 72 of 800 were 500s and 45 had no response id)."""
    rnd = random.Random(20261205)
    statuses: Counter[int] = Counter()
    ids = []
    for _ in range(400):
        path, body = random_body(rnd)
        r = _post(edge, path, body)
        statuses[r.status_code] += 1
        assert r.status_code < 500, (path, body, r.text)
        ids.append(r.headers["x-spendgate-request-id"])
    rows = Counter(e.request_id for e in edge.events())
    assert [i for i in ids if rows[i] != 1] == []
    assert statuses[200] > 0 and statuses[400] > 0, statuses  # the fuzz reaches both sides
