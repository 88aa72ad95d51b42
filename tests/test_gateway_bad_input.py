"""Bad input and upstream faults over raw HTTP: the right 4xx/5xx in the client's dialect,
never a 500, and one ledger row per call with its status."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx2
import orjson
import pytest

from conftest import Harness, gateway_settings, start_harness
from spendgate.simulated import SimulatedUpstream

MAX_BODY = 4096
UPSTREAM_TIMEOUT_S = 2.0  # generous: a cold first request on a loaded CI box must not trip it
CHAT = "/v1/chat/completions"
MESSAGES = "/v1/messages"
OK_CHAT: dict[str, Any] = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
OK_MESSAGES: dict[str, Any] = {
    "model": "claude-sonnet-4",
    "max_tokens": 50,
    "messages": [{"role": "user", "content": "hi"}],
}


@pytest.fixture(scope="module")
def edge(sim: SimulatedUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    """A gateway with a small body limit and a short upstream read timeout."""
    settings = gateway_settings(
        sim,
        tmp_path_factory.mktemp("bad-input"),
        server={"max_body_bytes": MAX_BODY},
        deployment_overrides={"timeout_s": UPSTREAM_TIMEOUT_S},
    )
    harness = start_harness(settings)
    yield harness
    harness.close()


def _assert_openai_error(body: Any, *, param: str | None = "", code: str | None = "") -> None:
    assert set(body) == {"error"}, body
    err = body["error"]
    assert set(err) == {"message", "type", "param", "code"}, err
    assert isinstance(err["message"], str) and err["message"]
    assert isinstance(err["type"], str) and err["type"]
    if param != "":
        assert err["param"] == param, err
    if code != "":
        assert err["code"] == code, err


def _assert_anthropic_error(body: Any, kind: str | None = None) -> None:
    assert body["type"] == "error", body
    assert set(body["error"]) >= {"type", "message"}
    assert body["error"]["message"]
    if kind is not None:
        assert body["error"]["type"] == kind, body


def _row_for(edge: Harness, response: httpx2.Response, status: int) -> Any:
    request_id = response.headers.get("x-spendgate-request-id")
    assert request_id, "every call answer carries its request id"
    event = edge.one(request_id)
    assert event.status == status
    assert event.error_type
    return event


def _post(http: httpx2.Client, edge: Harness, path: str, content: bytes) -> httpx2.Response:
    return http.post(edge.url + path, content=content, headers={"content-type": "application/json"})


# (id, path, raw body, status, param, code)
BAD_CHAT: list[tuple[str, bytes, int, str | None, str | None]] = [
    ("malformed-json", b'{"model": "gpt-4o", "messages": [', 400, None, "invalid_json"),
    ("json-array", b'[{"model": "gpt-4o"}]', 400, None, "invalid_json"),
    ("json-string", b'"hello"', 400, None, "invalid_json"),
    ("empty-body", b"", 400, None, "invalid_json"),
    (
        "messages-string",
        orjson.dumps({"model": "gpt-4o", "messages": "hi"}),
        400, "messages", "invalid_type",
    ),
    (
        "max-tokens-string",
        orjson.dumps({**OK_CHAT, "max_tokens": "ten"}),
        400, "max_tokens", "invalid_type",
    ),
    (
        "temperature-5",
        orjson.dumps({**OK_CHAT, "temperature": 5}),
        400, "temperature", "invalid_value",
    ),
    (
        "missing-messages",
        orjson.dumps({"model": "gpt-4o"}),
        400, "messages", "missing_required_parameter",
    ),
    (
        "missing-model",
        orjson.dumps({"messages": OK_CHAT["messages"]}),
        400, "model", "missing_required_parameter",
    ),
    (
        "unknown-parameter",
        orjson.dumps({**OK_CHAT, "temprature": 0.5}),
        400, "temprature", "unknown_parameter",
    ),
    (
        "bad-role",
        orjson.dumps({"model": "gpt-4o", "messages": [{"role": "robot", "content": "x"}]}),
        400, "messages[0].role", "invalid_value",
    ),
    (
        "unknown-model",
        orjson.dumps({**OK_CHAT, "model": "gpt-9-ultra"}),
        404, "model", "model_not_found",
    ),
    (
        "oversize",
        orjson.dumps({**OK_CHAT, "messages": [{"role": "user", "content": "x" * MAX_BODY}]}),
        413, None, "request_too_large",
    ),
]  # fmt: skip


@pytest.mark.parametrize(
    ("body", "status", "param", "code"),
    [case[1:] for case in BAD_CHAT],
    ids=[case[0] for case in BAD_CHAT],
)
def test_bad_chat_request(
    edge: Harness, http: httpx2.Client, body: bytes, status: int, param: str | None, code: str
) -> None:
    r = _post(http, edge, CHAT, body)
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    _assert_openai_error(r.json(), param=param, code=code)
    event = _row_for(edge, r, status)
    assert event.cost_nanos == 0 and event.baseline_nanos == 0
    assert event.input_tokens == event.output_tokens == 0
    assert event.endpoint == "chat"


def test_oversize_without_content_length(edge: Harness, http: httpx2.Client) -> None:
    """A chunked upload has no Content-Length: the limit is enforced while reading."""
    payload = orjson.dumps(
        {**OK_CHAT, "messages": [{"role": "user", "content": "y" * (3 * MAX_BODY)}]}
    )
    chunks = [payload[i : i + 1000] for i in range(0, len(payload), 1000)]
    r = http.post(
        edge.url + CHAT, content=iter(chunks), headers={"content-type": "application/json"}
    )
    assert r.status_code == 413
    _assert_openai_error(r.json(), code="request_too_large")
    _row_for(edge, r, 413)


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
def test_wrong_method(edge: Harness, http: httpx2.Client, method: str) -> None:
    r = http.request(method, edge.url + CHAT)
    assert r.status_code == 405
    assert r.headers["allow"] == "POST"
    _assert_openai_error(r.json(), code="method_not_allowed")
    event = _row_for(edge, r, 405)
    assert event.cost_nanos == 0


def test_unknown_route_is_404_not_500(edge: Harness, http: httpx2.Client) -> None:
    r = http.post(edge.url + "/v1/completion", json=OK_CHAT)
    assert r.status_code == 404
    _assert_openai_error(r.json(), code="unknown_url")


BAD_MESSAGES: list[tuple[str, bytes, int, str]] = [
    ("no-max-tokens", orjson.dumps({k: v for k, v in OK_MESSAGES.items() if k != "max_tokens"}),
     400, "invalid_request_error"),
    ("malformed-json", b'{"model": ', 400, "invalid_request_error"),
    ("json-array", b"[]", 400, "invalid_request_error"),
    ("messages-string", orjson.dumps({**OK_MESSAGES, "messages": "hi"}),
     400, "invalid_request_error"),
    ("temperature-2", orjson.dumps({**OK_MESSAGES, "temperature": 2}),
     400, "invalid_request_error"),
    ("unknown-model", orjson.dumps({**OK_MESSAGES, "model": "claude-9"}), 404, "not_found_error"),
    ("oversize", orjson.dumps({**OK_MESSAGES, "system": "z" * MAX_BODY}),
     413, "request_too_large"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("body", "status", "kind"),
    [case[1:] for case in BAD_MESSAGES],
    ids=[case[0] for case in BAD_MESSAGES],
)
def test_bad_messages_request(
    edge: Harness, http: httpx2.Client, body: bytes, status: int, kind: str
) -> None:
    r = _post(http, edge, MESSAGES, body)
    assert r.status_code == status, r.text
    _assert_anthropic_error(r.json(), kind)
    event = _row_for(edge, r, status)
    assert event.endpoint == "messages" and event.api == "anthropic"
    assert event.cost_nanos == 0


def test_bad_embeddings_request(edge: Harness, http: httpx2.Client) -> None:
    r = http.post(edge.url + "/v1/embeddings", json={"model": "text-embedding-3-small"})
    assert r.status_code == 400
    _assert_openai_error(r.json(), param="input")
    assert _row_for(edge, r, 400).endpoint == "embeddings"


# ------------------------------------------------------------------ upstream faults

SERVED = {"gpt-4o": "gpt-4o", "claude-sonnet-4": "claude-sonnet-4-20250514"}

# (id, fault, client status, error code)
FAULTS: list[tuple[str, dict[str, Any], int, str]] = [
    ("upstream-400", {"kind": "status", "status": 400, "message": "bad thing"}, 400,
     "upstream_400"),
    ("upstream-429", {"kind": "status", "status": 429, "retry_after": 7}, 429, "upstream_429"),
    ("upstream-500", {"kind": "status", "status": 500}, 502, "upstream_500"),
    ("upstream-503", {"kind": "status", "status": 503}, 502, "upstream_503"),
    ("garbage", {"kind": "garbage"}, 502, "upstream_bad_response"),
    ("timeout", {"kind": "timeout", "seconds": 10}, 504, "upstream_timeout"),
]  # fmt: skip


@pytest.mark.parametrize("path", [CHAT, MESSAGES])
@pytest.mark.parametrize("model", ["gpt-4o", "claude-sonnet-4"])
@pytest.mark.parametrize(
    ("fault", "status", "code"), [f[1:] for f in FAULTS], ids=[f[0] for f in FAULTS]
)
def test_upstream_fault(
    edge: Harness,
    http: httpx2.Client,
    faults: Callable[..., None],
    fault: dict[str, Any],
    status: int,
    code: str,
    model: str,
    path: str,
) -> None:
    faults({**fault, "model": SERVED[model]})
    body = {**(OK_CHAT if path == CHAT else OK_MESSAGES), "model": model}
    r = http.post(edge.url + path, json=body)
    assert r.status_code == status, r.text
    if path == CHAT:
        _assert_openai_error(r.json())
    else:
        _assert_anthropic_error(r.json())
    if status == 429:
        assert r.headers["retry-after"] == "7"
    message = r.json()["error"]["message"]
    if status == 400:
        assert "bad thing" in message
    if status == 504:
        assert f"{UPSTREAM_TIMEOUT_S:g}s" in message, message
    event = _row_for(edge, r, status)
    assert event.error_type == code
    assert event.cost_nanos == 0, "a failed call without usage costs a known 0, not None"
    assert event.baseline_nanos == 0
    assert event.input_tokens == event.output_tokens == 0
    assert event.requested_model == model
    assert len(event.attempts) == 1
    assert event.attempts[0]["deployment"] in ("sim-openai", "sim-anthropic")


def test_upstream_429_on_stream_request(
    edge: Harness, http: httpx2.Client, faults: Callable[..., None]
) -> None:
    """An upstream refusal before the first byte is a plain error, not a 200 stream."""
    faults({"kind": "status", "status": 429, "retry_after": 3, "model": "gpt-4o"})
    r = http.post(edge.url + CHAT, json={**OK_CHAT, "stream": True})
    assert r.status_code == 429
    assert r.headers["retry-after"] == "3"
    _assert_openai_error(r.json())
    event = _row_for(edge, r, 429)
    assert event.stream and event.cost_nanos == 0


def test_gateway_still_serves_after_bad_input(edge: Harness, http: httpx2.Client) -> None:
    r = http.post(edge.url + CHAT, json=OK_CHAT)
    assert r.status_code == 200
    assert edge.one(r.headers["x-spendgate-request-id"]).status == 200
