"""Virtual keys (auth, team attribution) and tags (headers, body, validation, cardinality)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import anthropic
import httpx2
import openai
import pytest

from conftest import Harness, assert_priced, gateway_settings, sqlite_url, start_harness, unique
from spendgate.keys import KeyRecord, KeyStore
from spendgate.server.tags import OVERFLOW
from spendgate.simulated import SimulatedUpstream

CHAT_BODY: dict[str, Any] = {
    "model": "gpt-4o-mini",
    "messages": [{"role": "user", "content": "briefly: hello"}],
}


@pytest.fixture(scope="module")
def keyed(
    sim: SimulatedUpstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Harness, str, KeyRecord]]:
    """A gateway with `server.auth: auto` whose key store holds one key (team payments, a
    trusted backend that may name tenants)."""
    folder = tmp_path_factory.mktemp("keyed")
    store = KeyStore(sqlite_url(folder / "keys.db"))
    key, record = store.create(team="payments", feature="checkout", may_set_tenant=True)
    store.close()
    harness = start_harness(gateway_settings(sim, folder, server={"auth": "auto"}))
    assert harness.gateway.auth_required
    yield harness, key, record
    harness.close()


def test_no_key_is_401(keyed: tuple[Harness, str, KeyRecord], http: httpx2.Client) -> None:
    harness, _, _ = keyed
    r = http.post(harness.v1 + "/chat/completions", json=CHAT_BODY)
    assert r.status_code == 401
    err = r.json()["error"]
    assert err["type"] == "authentication_error" and err["code"] == "missing_api_key"
    event = harness.one(r.headers["x-spendgate-request-id"])
    assert event.status == 401 and event.cost_nanos == 0 and event.key_id is None


def test_wrong_key_is_401(keyed: tuple[Harness, str, KeyRecord], http: httpx2.Client) -> None:
    harness, _, _ = keyed
    for headers in ({"authorization": "Bearer sk-sg-not-a-key"}, {"x-api-key": "sk-sg-nope"}):
        r = http.post(harness.v1 + "/chat/completions", json=CHAT_BODY, headers=headers)
        assert r.status_code == 401
        assert r.json()["error"]["code"] == "invalid_api_key"
        assert harness.one(r.headers["x-spendgate-request-id"]).status == 401
    r = http.post(
        harness.url + "/v1/messages",
        json={**CHAT_BODY, "max_tokens": 10},
        headers={"x-api-key": "wrong"},
    )
    assert r.status_code == 401
    assert r.json()["type"] == "error"
    assert r.json()["error"]["type"] == "authentication_error"
    assert harness.one(r.headers["x-spendgate-request-id"]).status == 401


def test_openai_sdk_wrong_key_raises(keyed: tuple[Harness, str, KeyRecord]) -> None:
    harness, _, _ = keyed
    with (
        openai.OpenAI(base_url=harness.v1, api_key="sk-wrong", max_retries=0) as client,
        pytest.raises(openai.AuthenticationError),
    ):
        client.chat.completions.create(**CHAT_BODY)


def test_right_key_records_its_team(keyed: tuple[Harness, str, KeyRecord]) -> None:
    harness, key, record = keyed
    with openai.OpenAI(base_url=harness.v1, api_key=key, max_retries=0) as client:
        raw = client.chat.completions.with_raw_response.create(
            **CHAT_BODY,
            extra_headers={"x-spendgate-team": "marketing", "x-spendgate-tenant": "acme"},
        )
    assert raw.http_response.status_code == 200
    event = harness.one(raw.headers["x-spendgate-request-id"])
    assert event.team == "payments", "a key's team cannot be overridden by a header"
    assert event.key_id == record.id
    assert event.feature == "checkout", "key defaults fill tags the request left empty"
    assert event.tenant == "acme"
    assert_priced(event)


def test_right_key_anthropic_sdk(keyed: tuple[Harness, str, KeyRecord]) -> None:
    harness, key, record = keyed
    feature = unique("keyed-msg")
    with anthropic.Anthropic(base_url=harness.url, api_key=key, max_retries=0) as client:
        message = client.messages.create(
            model="claude-sonnet-4",
            max_tokens=50,
            messages=[{"role": "user", "content": "hello"}],
            extra_headers={"x-spendgate-feature": feature},
        )
    assert message.content
    event = harness.one_for(feature)
    assert event.team == "payments" and event.key_id == record.id
    assert_priced(event)


# ------------------------------------------------------------------ tags


def test_tags_from_headers(gw: Harness, http: httpx2.Client) -> None:
    feature = unique("tags-h")
    headers = {
        "x-spendgate-feature": feature,
        "x-spendgate-use-case": "summarization",
        "x-spendgate-team": "growth",
        "x-spendgate-tenant": "tenant-42",
        "x-spendgate-user": "user@example.com",
    }
    r = http.post(gw.v1 + "/chat/completions", json=CHAT_BODY, headers=headers)
    assert r.status_code == 200
    event = gw.one_for(feature)
    assert (event.use_case, event.team, event.tenant, event.user) == (
        "summarization",
        "growth",
        "tenant-42",
        "user@example.com",
    )


def test_tags_from_body(gw: Harness, http: httpx2.Client) -> None:
    feature = unique("tags-b")
    body = {
        **CHAT_BODY,
        "user": "end-user-7",
        "metadata": {"feature": feature, "tenant": "globex", "use_case": "chat"},
    }
    r = http.post(gw.v1 + "/chat/completions", json=body)
    assert r.status_code == 200
    event = gw.one_for(feature)
    assert (event.tenant, event.use_case, event.user) == ("globex", "chat", "end-user-7")


def test_header_tags_win_over_body(gw: Harness, http: httpx2.Client) -> None:
    feature = unique("tags-p")
    body = {**CHAT_BODY, "metadata": {"feature": "from-body", "tenant": "body-tenant"}}
    r = http.post(gw.v1 + "/chat/completions", json=body, headers={"x-spendgate-feature": feature})
    assert r.status_code == 200
    event = gw.one_for(feature)
    assert event.tenant == "body-tenant"


def test_anthropic_metadata_user_id(gw: Harness, http: httpx2.Client) -> None:
    feature = unique("tags-a")
    body = {
        "model": "claude-sonnet-4",
        "max_tokens": 30,
        "messages": [{"role": "user", "content": "hello"}],
        "metadata": {"user_id": "anthropic-user-1"},
    }
    r = http.post(gw.url + "/v1/messages", json=body, headers={"x-spendgate-feature": feature})
    assert r.status_code == 200, r.text
    assert gw.one_for(feature).user == "anthropic-user-1"


@pytest.mark.parametrize(
    ("where", "value"),
    [
        ("header", "semi;colon"),
        ("header", "x" * 129),
        ("metadata", "bad<tag>"),
        ("user", ["not", "a", "string"]),
    ],
)
def test_invalid_tag_is_400(gw: Harness, http: httpx2.Client, where: str, value: Any) -> None:
    body: dict[str, Any] = dict(CHAT_BODY)
    headers: dict[str, str] = {}
    if where == "header":
        headers["x-spendgate-feature"] = value
    elif where == "metadata":
        body["metadata"] = {"tenant": value}
    else:
        body["user"] = value
    r = http.post(gw.v1 + "/chat/completions", json=body, headers=headers)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    event = gw.one(r.headers["x-spendgate-request-id"])
    assert event.status == 400 and event.cost_nanos == 0


def test_tag_cardinality_guard(make_gateway: Callable[..., Harness], http: httpx2.Client) -> None:
    harness = make_gateway(tags={"max_values": {"tenant": 3}})
    tenants = ["t1", "t2", "t3", "t4", "t5", "t1"]
    ids = []
    for tenant in tenants:
        r = http.post(
            harness.v1 + "/chat/completions",
            json=CHAT_BODY,
            headers={"x-spendgate-tenant": tenant},
        )
        assert r.status_code == 200
        ids.append(r.headers["x-spendgate-request-id"])
    recorded = [harness.one(i).tenant for i in ids]
    assert recorded == ["t1", "t2", "t3", OVERFLOW, OVERFLOW, "t1"]
    assert OVERFLOW == "(other)"


def _status_within(url: str, key: str, wanted: int, seconds: float) -> list[int]:
    """Statuses of back-to-back calls until `wanted` comes or `seconds` pass (a measured
    bound, not a sleep)."""
    headers = {"authorization": f"Bearer {key}"}
    statuses: list[int] = []
    start = time.monotonic()
    while not statuses or (statuses[-1] != wanted and time.monotonic() - start < seconds):
        statuses.append(httpx2.post(url, json=CHAT_BODY, headers=headers, timeout=30).status_code)
    return statuses


def test_revocation_by_another_process_takes_effect_within_a_second(make_gateway: Any) -> None:
    """The CLI (another connection to the key file) revokes; the gateway's key cache had the
    key and must drop it within 1 s (the probe measured 31 s with a TTL-only cache)."""
    h = make_gateway(server={"auth": "required"})
    url = h.v1 + "/chat/completions"
    key, record = h.gateway.keys.create(team="ops")
    assert _status_within(url, key, 200, 0) == [200]
    cli = KeyStore(h.keys_url)
    assert cli.revoke(record.id)
    statuses = _status_within(url, key, 401, 1.0)
    assert statuses[-1] == 401, f"key still accepted 1 s after revocation: {statuses}"
    # A key made by another process works at once.
    fresh, _ = cli.create(team="ops")
    cli.close()
    assert _status_within(url, fresh, 200, 1.0)[-1] == 200


def test_seen_filter_holds_its_error_rate_at_capacity() -> None:
    from spendgate.server.tags import SeenFilter

    seen = SeenFilter(50_000)
    for i in range(50_000):
        seen.add(f"user-{i}")
    assert all(f"user-{i}" in seen for i in range(0, 50_000, 97))  # no false negatives
    false_positives = sum(f"other-{i}" in seen for i in range(20_000))
    assert false_positives / 20_000 <= 0.02
    assert 49_000 <= len(seen) <= 50_000  # a colliding add is not counted
    assert len(seen._array) < 80_000  # ~9.6 bits a value, not a set of strings


def test_a_large_cap_is_kept_by_a_filter_and_still_caps() -> None:
    from spendgate.call import Tags
    from spendgate.server.tags import EXACT_UP_TO, OVERFLOW, SeenFilter, TagGuard

    cap = EXACT_UP_TO * 2
    guard = TagGuard({"user": cap, "tenant": 3})
    assert isinstance(guard._seen["user"], SeenFilter)
    assert isinstance(guard._seen["tenant"], set)
    kept = [guard.admit(Tags(user=f"u{i}")).user for i in range(cap + 5_000)]
    over = kept.count(OVERFLOW)
    assert 5_000 * 0.97 <= over <= 5_000  # false positives let at most ~1 % more through
    assert guard.admit(Tags(user="u7")).user == "u7"  # a value seen before stays itself
