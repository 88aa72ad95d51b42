"""Token counting endpoints: Anthropic's `POST /v1/messages/count_tokens` and OpenAI's
`POST /v1/responses/input_tokens`.

Why answer locally: counting is free at the providers but costs a round trip, and most
deployments here (the simulated upstream, OpenAI-compatible servers) have no such endpoint.
The project's tokenizers give the count (ctok for Claude when installed, else o200k as an
approximation; bpe-openai for OpenAI models) and the reply says so in
`x-spendgate-token-count: estimate` plus `x-spendgate-tokenizer`. A Claude model served by
an Anthropic deployment with a real key is forwarded instead, and the reply says
`x-spendgate-token-count: provider`.
"""

from __future__ import annotations

from typing import Any

import orjson

from spendgate.dispatch.table import ModelTable
from spendgate.errors import GatewayError
from spendgate.providers import responses as responses_dialect
from spendgate.providers.anthropic import ANTHROPIC_VERSION
from spendgate.providers.base import (
    Deployment,
    UpstreamError,
    UpstreamHTTP,
    parse_json_body,
    read_body,
    upstream_failure,
)
from spendgate.server.validate import validate_messages
from spendgate.tokens import count_anthropic_request, family, has_ctok

__all__ = ["count_message_tokens", "count_response_tokens"]

_COUNT_PARAMS = frozenset(
    {"model", "messages", "system", "tools", "tool_choice", "thinking", "mcp_servers",
     "context_management"}
)  # fmt: skip

Answer = tuple[dict[str, Any], dict[str, str]]


def _served(table: ModelTable, model: str) -> Deployment:
    deps = table.serving(model)
    if not deps:
        raise GatewayError(
            404,
            f"The model `{model}` does not exist or is not served by this gateway; "
            "GET /v1/models lists the ones that are.",
            param="model",
            code="model_not_found",
        )
    return deps[0]


def _tokenizer(model: str) -> str:
    fam = family(model)
    if fam == "claude":
        return "ctok" if has_ctok() else "o200k (approximation)"
    return fam


async def count_message_tokens(
    body: dict[str, Any], headers: dict[str, str], table: ModelTable, http: UpstreamHTTP
) -> Answer:
    """`{"input_tokens": N}` for a Messages body (no `max_tokens` needed, as upstream)."""
    for key in body:
        if key not in _COUNT_PARAMS:
            raise GatewayError(400, f"{key}: Extra inputs are not permitted", param=key)
    model = validate_messages({**body, "max_tokens": 1})
    dep = _served(table, model)
    upstream = dep.upstream_model(model)
    if dep.provider == "anthropic" and dep.api_key:
        return await _forward(body, headers, dep, upstream, http)
    count = count_anthropic_request(upstream, body)
    return {"input_tokens": count}, {
        "x-spendgate-token-count": "estimate",
        "x-spendgate-tokenizer": _tokenizer(upstream),
    }


async def _forward(
    body: dict[str, Any], headers: dict[str, str], dep: Deployment, model: str, http: UpstreamHTTP
) -> Answer:
    sent = {
        "content-type": "application/json",
        "anthropic-version": headers.get("anthropic-version", ANTHROPIC_VERSION),
        **dep.extra_headers,
        "x-api-key": dep.api_key or "",
    }
    if "anthropic-beta" in headers:
        sent["anthropic-beta"] = headers["anthropic-beta"]
    url = dep.base_url.rstrip("/") + "/messages/count_tokens"
    try:
        resp = await http.open(url, {**body, "model": model}, sent, dep)
        raw = await read_body(resp, dep)
        if resp.status != 200:
            raise UpstreamError(upstream_failure(resp.status, raw, dep, resp.headers))
        data = parse_json_body(raw, dep)
    except UpstreamError as exc:
        raise exc.error from None
    return data, {"x-spendgate-token-count": "provider"}


async def count_response_tokens(
    body: dict[str, Any], headers: dict[str, str], table: ModelTable
) -> Answer:
    """`{"object": "response.input_tokens", "input_tokens": N}` for a Responses body
    (`headers` unused: the same signature as `count_message_tokens`)."""
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise GatewayError(400, "you must provide a model parameter", param="model",
                           code="missing_required_parameter")  # fmt: skip
    dep = _served(table, model)
    upstream = dep.upstream_model(model)
    if dep.api_for(model) == "anthropic":
        from spendgate.providers.translate import openai_to_anthropic_request

        chat = responses_dialect.to_chat_request(body)
        count = count_anthropic_request(upstream, openai_to_anthropic_request(chat))
    else:
        count = responses_dialect.count_input_tokens(upstream, body)
    return {"object": "response.input_tokens", "input_tokens": count}, {
        "x-spendgate-token-count": "estimate",
        "x-spendgate-tokenizer": _tokenizer(upstream),
    }


def dumps(payload: dict[str, Any]) -> bytes:
    return orjson.dumps(payload)
