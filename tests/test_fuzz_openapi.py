"""Schemathesis over the gateway's own OpenAPI document, small enough for every run
(`bench/fuzz_openapi.py` and `bench/faults.py` run it large): no 5xx that isn't an upstream
fault, no dropped connection, one ledger row per request id."""

from __future__ import annotations

import sys
from pathlib import Path

import httpx2
import pytest

pytest.importorskip("schemathesis")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

from conftest import Harness
from fuzz_openapi import run_against_fresh_gateway


def test_the_document_is_served_and_names_the_models(gw: Harness) -> None:
    doc = httpx2.get(gw.url + "/openapi.json", timeout=10).json()
    assert doc["openapi"].startswith("3.")
    chat = doc["paths"]["/v1/chat/completions"]["post"]["requestBody"]
    model = chat["content"]["application/json"]["schema"]["properties"]["model"]
    assert sorted(model["enum"]) == gw.gateway.table.models()


def test_fuzz_from_the_openapi_document() -> None:
    report = run_against_fresh_gateway(examples=25, seed=20261205)
    assert report["tried"] >= 100
    assert report["server_errors"] == [] and report["dropped"] == []
    assert report["lost_rows"] == 0 and report["duplicate_rows"] == 0
    assert int(report["statuses"].get("200", 0)) > 0 and int(report["statuses"].get("400", 0)) > 0
