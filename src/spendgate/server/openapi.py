"""spendgate's own OpenAPI document: the routes a client calls, the shapes the edge accepts,
the attribution headers, and the error body every refusal uses.

It is served at `GET /openapi.json` and is what the fault bench fuzzes (schemathesis
generates valid and invalid requests from it; no answer may be a 5xx that isn't an upstream
fault, and no connection may drop). It describes what spendgate itself checks, which is a
subset of the providers' own specs: fields the gateway passes through unread are left open.
"""

from __future__ import annotations

from typing import Any

__all__ = ["openapi_document"]

_STR = {"type": "string"}
_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type"],
            "properties": {
                "message": _STR,
                "type": _STR,
                "param": {"type": ["string", "null"]},
                "code": {"type": ["string", "null"]},
            },
        }
    },
}
_ANTHROPIC_ERROR = {
    "type": "object",
    "required": ["type", "error"],
    "properties": {
        "type": {"const": "error"},
        "error": {
            "type": "object",
            "required": ["type", "message"],
            "properties": {"type": _STR, "message": _STR},
        },
    },
}
_TAG = {"type": "string", "pattern": r"^[\w.:@/+\-= ]{1,128}$"}
_TAG_HEADERS = [
    {"name": f"x-spendgate-{name}", "in": "header", "required": False, "schema": _TAG}
    for name in ("feature", "use-case", "team", "tenant", "user")
]
_CHAT_PART = {
    "oneOf": [
        {
            "type": "object",
            "required": ["type", "text"],
            "properties": {"type": {"const": "text"}, "text": _STR},
        },
        {
            "type": "object",
            "required": ["type", "image_url"],
            "properties": {
                "type": {"const": "image_url"},
                "image_url": {"type": "object", "required": ["url"], "properties": {"url": _STR}},
            },
        },
    ]
}
_CHAT_MESSAGE = {
    "type": "object",
    "required": ["role", "content"],
    "properties": {
        "role": {"enum": ["system", "developer", "user", "assistant"]},
        "content": {"oneOf": [_STR, {"type": "array", "items": _CHAT_PART}]},
        "name": _STR,
    },
}
_CHAT_REQUEST = {
    "type": "object",
    "required": ["model", "messages"],
    "properties": {
        "model": {"type": "string", "minLength": 1, "maxLength": 256},
        "messages": {"type": "array", "minItems": 1, "items": _CHAT_MESSAGE},
        "max_tokens": {"type": "integer", "minimum": 1, "maximum": 4096},
        "max_completion_tokens": {"type": "integer", "minimum": 1, "maximum": 4096},
        "temperature": {"type": "number", "minimum": 0, "maximum": 2},
        "top_p": {"type": "number", "minimum": 0, "maximum": 1},
        "n": {"type": "integer", "minimum": 1, "maximum": 4},
        "stream": {"type": "boolean"},
        "stop": {"oneOf": [_STR, {"type": "array", "items": _STR, "maxItems": 4}]},
        "user": _STR,
        "seed": {"type": "integer"},
        "metadata": {"type": "object", "additionalProperties": _STR},
        "response_format": {
            "type": "object",
            "required": ["type"],
            "properties": {"type": {"enum": ["text", "json_object"]}},
        },
        "service_tier": {"enum": ["auto", "default", "flex", "priority"]},
    },
    "additionalProperties": False,
}
_ANTHROPIC_BLOCK = {
    "type": "object",
    "required": ["type", "text"],
    "properties": {"type": {"const": "text"}, "text": _STR},
}
_MESSAGES_REQUEST = {
    "type": "object",
    "required": ["model", "max_tokens", "messages"],
    "properties": {
        "model": {"type": "string", "minLength": 1, "maxLength": 256},
        "max_tokens": {"type": "integer", "minimum": 1, "maximum": 4096},
        "messages": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["role", "content"],
                "properties": {
                    "role": {"enum": ["user", "assistant"]},
                    "content": {"oneOf": [_STR, {"type": "array", "items": _ANTHROPIC_BLOCK}]},
                },
            },
        },
        "system": {"oneOf": [_STR, {"type": "array", "items": _ANTHROPIC_BLOCK}]},
        "temperature": {"type": "number", "minimum": 0, "maximum": 1},
        "top_p": {"type": "number", "minimum": 0, "maximum": 1},
        "top_k": {"type": "integer", "minimum": 0},
        "stop_sequences": {"type": "array", "items": _STR},
        "stream": {"type": "boolean"},
        "metadata": {"type": "object", "additionalProperties": _STR},
    },
    "additionalProperties": False,
}
_EMBEDDINGS_REQUEST = {
    "type": "object",
    "required": ["model", "input"],
    "properties": {
        "model": {"type": "string", "minLength": 1, "maxLength": 256},
        "input": {
            "oneOf": [
                {"type": "string", "minLength": 1},
                {"type": "array", "minItems": 1, "maxItems": 64, "items": _STR},
            ]
        },
        "dimensions": {"type": "integer", "minimum": 1, "maximum": 4096},
        "encoding_format": {"enum": ["float", "base64"]},
        "user": _STR,
    },
    "additionalProperties": False,
}
_RESPONSES_ITEM = {
    "type": "object",
    "required": ["type"],
    "properties": {"type": _STR, "role": _STR},
}
_RESPONSES_REQUEST = {
    "type": "object",
    "required": ["model", "input"],
    "properties": {
        "model": {"type": "string", "minLength": 1, "maxLength": 256},
        "input": {"oneOf": [_STR, {"type": "array", "items": _RESPONSES_ITEM}]},
        "instructions": _STR,
        "max_output_tokens": {"type": "integer", "minimum": 1, "maximum": 4096},
        "previous_response_id": _STR,
        "store": {"type": "boolean"},
        "stream": {"type": "boolean"},
        "temperature": {"type": "number", "minimum": 0, "maximum": 2},
        "metadata": {"type": "object", "additionalProperties": _STR},
    },
}
_COUNT_TOKENS_REQUEST = {
    "type": "object",
    "required": ["model", "messages"],
    "properties": {
        "model": {"type": "string", "minLength": 1, "maxLength": 256},
        "messages": _MESSAGES_REQUEST["properties"]["messages"],  # type: ignore[index]
        "system": _MESSAGES_REQUEST["properties"]["system"],  # type: ignore[index]
    },
}
_COST_HEADER = {
    "x-spendgate-cost-usd": {
        "description": "Exact cost in USD, or `unknown` when the price is unknown.",
        "schema": _STR,
    },
    "x-spendgate-request-id": {"schema": _STR},
}


def _responses(ok: dict[str, Any], error: dict[str, Any]) -> dict[str, Any]:
    failure = {"content": {"application/json": {"schema": error}}, "headers": _COST_HEADER}
    out: dict[str, Any] = {
        "200": {
            "description": "The answer (a JSON body, or SSE when `stream` is true).",
            "headers": _COST_HEADER,
            "content": {"application/json": {"schema": ok}, "text/event-stream": {"schema": _STR}},
        }
    }
    for status in ("400", "401", "403", "404", "413", "429", "502", "503", "504"):
        out[status] = {"description": "A refusal or an upstream fault.", **failure}
    return out


def _call(summary: str, request: dict[str, Any], error: dict[str, Any]) -> dict[str, Any]:
    return {
        "post": {
            "summary": summary,
            "parameters": _TAG_HEADERS,
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": request}},
            },
            "responses": _responses({"type": "object"}, error),
        }
    }


def _stored_response() -> dict[str, Any]:
    """GET and DELETE of a stored response: only the key (and tenant) that made it sees it."""
    param = [{"name": "response_id", "in": "path", "required": True, "schema": _STR}]
    found = {
        "description": "The stored response.",
        "content": {"application/json": {"schema": {"type": "object"}}},
    }
    missing = {
        "description": "No such response for this key.",
        "content": {"application/json": {"schema": _ERROR}},
    }
    return {
        verb: {
            "summary": f"{verb.upper()} a stored response",
            "parameters": param,
            "responses": {"200": found, "404": missing},
        }
        for verb in ("get", "delete")
    }


def _with_models(request: dict[str, Any], models: list[str] | None) -> dict[str, Any]:
    if not models:
        return request
    return {**request, "properties": {**request["properties"], "model": {"enum": models}}}


def openapi_document(models: list[str] | None = None) -> dict[str, Any]:
    """The document; with `models`, the `model` fields list exactly the ones served here."""
    chat = _with_models(_CHAT_REQUEST, models)
    messages = _with_models(_MESSAGES_REQUEST, models)
    embeddings = _with_models(_EMBEDDINGS_REQUEST, models)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "spendgate",
            "version": "1",
            "description": "An OpenAI- and Anthropic-compatible LLM gateway that records and "
            "cuts spend. Every call answers with its cost and request id.",
        },
        "paths": {
            "/v1/chat/completions": _call("OpenAI Chat Completions", chat, _ERROR),
            "/v1/messages": _call("Anthropic Messages", messages, _ANTHROPIC_ERROR),
            "/v1/embeddings": _call("OpenAI Embeddings", embeddings, _ERROR),
            "/v1/responses": _call(
                "OpenAI Responses", _with_models(_RESPONSES_REQUEST, models), _ERROR
            ),
            "/v1/responses/{response_id}": _stored_response(),
            "/v1/messages/count_tokens": {
                "post": {
                    **_call("Anthropic token count", _COUNT_TOKENS_REQUEST, _ANTHROPIC_ERROR)[
                        "post"
                    ],
                    "summary": "Anthropic token count (answered locally unless a key is set)",
                }
            },
            "/v1/models": {
                "get": {
                    "summary": "The models this gateway serves",
                    "responses": {
                        "200": {
                            "description": "A list of models.",
                            "content": {
                                "application/json": {
                                    "schema": {
                                        "type": "object",
                                        "required": ["object", "data"],
                                        "properties": {"data": {"type": "array"}},
                                    }
                                }
                            },
                        }
                    },
                }
            },
            "/healthz": {
                "get": {
                    "summary": "Liveness and the ledger writer's state",
                    "responses": {
                        "200": {
                            "description": "Ready.",
                            "content": {"application/json": {"schema": {"type": "object"}}},
                        },
                        "503": {
                            "description": "Starting or stopping.",
                            "content": {"application/json": {"schema": {"type": "object"}}},
                        },
                    },
                }
            },
        },
    }
