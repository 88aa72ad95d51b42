"""Validate our OpenAI-shaped output against OpenAI's published OpenAPI spec.

Why: hand-written expectations drift toward what our own code produces. Checking against the
spec OpenAI publishes catches a missing required field (``logprobs``, ``refusal``…) that an
SDK client, or a stricter one written next year, would trip over.

The spec says ``openapi: 3.1`` but still marks optional-null fields the 3.0 way
(``nullable: true``), which a Draft 2020-12 validator ignores — so ``null`` would be rejected
where OpenAI actually sends it. We rewrite those into type unions before validating.

Usage::

    from tests.openai_schema import assert_valid
    assert_valid("CreateChatCompletionResponse", body)
"""

from __future__ import annotations

import copy
import gzip
import os
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

__all__ = ["assert_valid", "errors_for", "spec_path", "validator_for"]

_SPEC_URI = "urn:spendgate:openai-openapi"
_SPEC_NAME = "specs/openai-openapi.yaml.gz"


def spec_path() -> Path:
    """Where the spec lives: ``$SPENDGATE_SHARED/specs`` or the ``shared`` dir beside the repo."""
    shared = os.environ.get("SPENDGATE_SHARED")
    base = Path(shared) if shared else Path(__file__).resolve().parents[1].parent / "shared"
    return base / _SPEC_NAME


def _nullable_to_union(node: Any) -> Any:
    """Rewrite OpenAPI 3.0 ``nullable: true`` into something Draft 2020-12 understands.

    ``type: X`` becomes ``type: [X, "null"]`` (and ``null`` joins any ``enum``); a schema
    without ``type`` (``$ref``/``anyOf``/``allOf``…) is wrapped in ``anyOf: [it, null]`` so the
    ``$ref`` target is not itself made nullable everywhere else it is used.
    """
    if isinstance(node, list):
        return [_nullable_to_union(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: _nullable_to_union(value) for key, value in node.items()}
    if out.pop("nullable", False) is not True:
        return out
    if "type" in out:
        types = out["type"] if isinstance(out["type"], list) else [out["type"]]
        if "null" not in types:
            out["type"] = [*types, "null"]
        if "enum" in out and None not in out["enum"]:
            out["enum"] = [*out["enum"], None]
        return out
    constraining = {"$ref", "anyOf", "oneOf", "allOf", "enum", "const", "not"}
    if not constraining & out.keys():
        return out  # no type and no constraint: null is already accepted
    annotations = {k: out.pop(k) for k in ("description", "title", "default") if k in out}
    return {**annotations, "anyOf": [out, {"type": "null"}]}


@cache
def _registry() -> Registry[Any]:
    path = spec_path()
    if not path.is_file():
        pytest.skip(f"OpenAI spec not found at {path} (set SPENDGATE_SHARED)")
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        spec = yaml.safe_load(fh)
    # Only components are referenced; keep the paths out of the resource to save memory.
    doc = {"components": {"schemas": _nullable_to_union(spec["components"]["schemas"])}}
    resource: Resource[Any] = Resource.from_contents(doc, default_specification=DRAFT202012)
    return Registry().with_resource(_SPEC_URI, resource)


def _schema_of(component: str) -> dict[str, Any]:
    schemas = _registry().contents(_SPEC_URI)["components"]["schemas"]
    if component not in schemas:
        raise KeyError(f"no component {component!r} in the OpenAI spec")
    return copy.deepcopy(schemas[component])


@cache
def validator_for(component: str) -> Draft202012Validator:
    """A Draft 2020-12 validator for ``#/components/schemas/<component>``, refs resolved."""
    _schema_of(component)  # fail early, with a readable KeyError, on a typo
    schema = {"$ref": f"{_SPEC_URI}#/components/schemas/{component}"}
    return Draft202012Validator(schema, registry=_registry())


def errors_for(component: str, instance: Any) -> list[str]:
    """Every violation as ``path: message`` (empty when valid) — for tests that expect failure."""
    errors = sorted(validator_for(component).iter_errors(instance), key=lambda e: list(e.path))
    lines: list[str] = []
    for error in errors:
        where = "/".join(str(p) for p in error.absolute_path) or "<root>"
        lines.append(f"{where}: {error.message}")
        # anyOf/oneOf failures hide the useful reason in their context; surface the best one.
        for sub in sorted(error.context or (), key=lambda e: len(list(e.path)), reverse=True)[:3]:
            sub_where = "/".join(str(p) for p in sub.absolute_path) or "<root>"
            lines.append(f"    {sub_where}: {sub.message}")
    return lines


def assert_valid(component: str, instance: Any) -> None:
    """Raise ``AssertionError`` listing every spec violation of ``instance``."""
    problems = errors_for(component, instance)
    if problems:
        raise AssertionError(
            f"not a valid OpenAI {component}:\n" + "\n".join(f"  - {p}" for p in problems)
        )
