"""A tenant is a security boundary: cached answers and spend never cross it by a header.

Adversarial: a key bound to tenant B names tenant A (header or `metadata.tenant`) to read
A's cached answers (exact and semantic) and to book its spend to A. Both the in-process and
the Redis cache backends.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import httpx2
import openai
import pytest

from conftest import Harness, unique
from spendgate.cache.stage import CacheStage
from spendgate.keys import KeyRecord
from test_cache_semantic import ASKED, RETYPED

REDIS = "redis://127.0.0.1:6379/0"


def _cache(backend: str, prefix: str) -> dict[str, Any]:
    semantic: dict[str, Any] = {"enabled": True, "verify_rate": 0.0}  # no sampled re-asks
    if backend != "memory":
        semantic |= {"store": backend, "sync_interval_s": 0.001}
    return {"enabled": True, "backend": backend, "key_prefix": prefix, "semantic": semantic}


@pytest.fixture(params=["memory", REDIS])
def keyed(request: pytest.FixtureRequest, make_gateway: Any) -> Iterator[Harness]:
    backend = request.param
    prefix = f"sgtenant:{uuid.uuid4().hex[:8]}:"
    if backend != "memory":
        redis = pytest.importorskip("redis")
        client = redis.Redis.from_url(backend)
        try:
            client.ping()
        except redis.exceptions.ConnectionError:
            pytest.skip("Redis is not running on 127.0.0.1:6379")
    yield make_gateway(server={"auth": "required"}, cache=_cache(backend, prefix))
    if backend != "memory":
        keys = list(client.scan_iter(prefix + "*"))
        if keys:
            client.delete(*keys)
        client.close()


def _key(h: Harness, **policy: Any) -> tuple[str, KeyRecord]:
    return h.gateway.keys.create(**policy)


def _ask(h: Harness, key: str, content: str, **extra: Any) -> httpx2.Response:
    headers = extra.pop("headers", {})
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": content}], **extra}
    return httpx2.post(
        h.v1 + "/chat/completions",
        json=body,
        headers={"authorization": f"Bearer {key}", **headers},
        timeout=30,
    )


def _drain(h: Harness) -> None:
    stage = h.gateway.pipeline.find(CacheStage)
    assert stage is not None
    stage.drain_threadsafe()


def test_bound_key_cannot_read_or_bill_another_tenant(keyed: Harness) -> None:
    tenant_a, tenant_b = unique("ta"), unique("tb")
    key_a, _ = _key(keyed, tenant=tenant_a)
    key_b, record_b = _key(keyed, tenant=tenant_b)
    for naming in (
        {"headers": {"x-spendgate-tenant": tenant_a}},
        {"metadata": {"tenant": tenant_a}},
    ):
        question = f"What is the boiling point of water at sea level? {uuid.uuid4().hex}"
        first = _ask(keyed, key_a, question)
        assert first.status_code == 200 and first.headers["x-spendgate-cache"] == "miss"
        assert _ask(keyed, key_a, question).headers["x-spendgate-cache"] == "hit"
        _drain(keyed)
        attempt = _ask(keyed, key_b, question, **naming)
        assert attempt.status_code == 200, attempt.text
        assert attempt.headers["x-spendgate-cache"] == "miss", "tenant A's answer leaked to B"
        event = keyed.one(attempt.headers["x-spendgate-request-id"])
        assert event.tenant == tenant_b, "a bound key's spend is booked to its own tenant"
        assert event.key_id == record_b.id and event.cost_nanos and event.cost_nanos > 0


def test_bound_key_cannot_read_another_tenants_semantic_entries(keyed: Harness) -> None:
    tenant_a, tenant_b = unique("sa"), unique("sb")
    key_a, _ = _key(keyed, tenant=tenant_a)
    key_b, _ = _key(keyed, tenant=tenant_b)
    assert _ask(keyed, key_a, ASKED).headers["x-spendgate-cache"] == "miss"
    _drain(keyed)
    # The same tenant's retyped question is a semantic hit: the tier is on and working …
    assert _ask(keyed, key_a, RETYPED).headers["x-spendgate-cache"] == "semantic-hit"
    # … and tenant B naming tenant A still misses.
    stolen = _ask(keyed, key_b, RETYPED, headers={"x-spendgate-tenant": tenant_a})
    assert stolen.status_code == 200 and stolen.headers["x-spendgate-cache"] == "miss"


def test_unbound_key_may_not_name_a_tenant(keyed: Harness) -> None:
    key, record = _key(keyed, team="search")
    question = f"Name a prime number {uuid.uuid4().hex}"
    for extra in ({"headers": {"x-spendgate-tenant": "acme"}}, {"metadata": {"tenant": "acme"}}):
        r = _ask(keyed, key, question, **extra)
        assert r.status_code == 403, r.text
        err = r.json()["error"]
        assert err["code"] == "tenant_not_allowed" and err["type"] == "permission_error"
        assert "--may-set-tenant" in err["message"]
        event = keyed.one(r.headers["x-spendgate-request-id"])
        assert event.status == 403 and event.cost_nanos == 0 and event.key_id == record.id
    # Without a tenant the same key is served, attributed to no tenant.
    ok = _ask(keyed, key, question)
    assert ok.status_code == 200
    assert keyed.one(ok.headers["x-spendgate-request-id"]).tenant is None


def test_trusted_backend_key_names_tenants(keyed: Harness) -> None:
    tenant = unique("tc")
    backend, record = _key(keyed, may_set_tenant=True)
    bound, _ = _key(keyed, tenant=tenant)
    question = f"Spell 'necessary' {uuid.uuid4().hex}"
    assert _ask(keyed, bound, question).headers["x-spendgate-cache"] == "miss"
    _drain(keyed)
    r = _ask(keyed, backend, question, headers={"x-spendgate-tenant": tenant})
    assert r.status_code == 200
    assert r.headers["x-spendgate-cache"] == "hit", "the operator trusted this key with tenants"
    event = keyed.one(r.headers["x-spendgate-request-id"])
    assert event.tenant == tenant and event.key_id == record.id


def test_openai_sdk_sees_the_refusal(keyed: Harness) -> None:
    key, _ = _key(keyed)
    with (
        openai.OpenAI(base_url=keyed.v1, api_key=key, max_retries=0) as client,
        pytest.raises(openai.PermissionDeniedError, match="tenant"),
    ):
        client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "hi"}],
            extra_headers={"x-spendgate-tenant": "acme"},
        )


def test_key_policy_is_validated() -> None:
    from spendgate.config import KeyConfig

    with pytest.raises(ValueError, match="may_set_tenant"):
        KeyConfig(name="k", hash="sha256:" + "0" * 64, tenant="a", may_set_tenant=True)
