"""The admin reports API through a real gateway (uvicorn on a socket, simulated upstream,
SQLite ledger): auth modes, spend / CSV / Parquet, unit economics, system-prompt share,
tier trends, savings and feature economics. Expected figures are recomputed here from the
ledger's events (or from the events the test wrote), never taken from the API's output."""

from __future__ import annotations

import csv
import io
import os
import uuid
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import bpe_openai
import httpx2
import pyarrow.parquet as pq
import pytest

from conftest import Harness, unique
from spendgate.call import NANOS_PER_USD
from spendgate.ledger import UsageEvent

SYSTEM = "You are a terse assistant for an online bookshop. Answer in one sentence. " * 8


def usd(nanos: int) -> str:
    return format((Decimal(nanos) / NANOS_PER_USD).quantize(Decimal("0.000000001")), "f")


@pytest.fixture
def admin_env() -> Iterator[tuple[str, str]]:
    """A unique env var holding a fresh admin key (tests run in parallel processes)."""
    name = "SG_TEST_ADMIN_" + uuid.uuid4().hex[:8].upper()
    key = "adm-" + uuid.uuid4().hex
    os.environ[name] = key
    yield name, key
    os.environ.pop(name, None)


def chat(
    h: Harness, model: str, feature: str, *, tenant: str, user: str, system: str | None = None
) -> httpx2.Response:
    messages = [{"role": "user", "content": f"Which book should {user} read next?"}]
    if system:
        messages.insert(0, {"role": "system", "content": system})
    r = httpx2.post(
        h.v1 + "/chat/completions",
        json={"model": model, "messages": messages, "max_tokens": 40},
        headers={
            "x-spendgate-feature": feature,
            "x-spendgate-tenant": tenant,
            "x-spendgate-user": user,
        },
        timeout=30,
    )
    assert r.status_code == 200, r.text
    return r


# ----------------------------------------------------------------------------- auth


def test_admin_key_required(make_gateway: Any, admin_env: tuple[str, str]) -> None:
    env, key = admin_env
    h = make_gateway(server={"admin_key_env": env})
    url = h.url + "/admin/spend"
    r = httpx2.get(url)
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "missing_admin_key"
    assert r.headers["www-authenticate"] == "Bearer"
    r = httpx2.get(url, headers={"authorization": "Bearer nope"})
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_admin_key"
    assert httpx2.get(url, headers={"authorization": f"Bearer {key}"}).status_code == 200
    # No cookie opens the admin API: not the key itself, not a dashboard session.
    assert httpx2.get(url, cookies={"spendgate_admin": key}).status_code == 401
    with httpx2.Client(base_url=h.url, follow_redirects=False) as browser:
        assert browser.post("/dashboard/login", data={"key": key}).status_code == 303
        session = browser.cookies["spendgate_dashboard"]
        assert browser.get("/dashboard/api/summary").status_code == 200
    assert httpx2.get(url, cookies={"spendgate_dashboard": session}).status_code == 401
    # The LLM routes are unaffected by the admin key.
    assert httpx2.get(h.v1 + "/models").status_code == 200


def test_sessions_are_random_revocable_and_bound_to_the_key(
    make_gateway: Any, admin_env: tuple[str, str]
) -> None:
    env, key = admin_env
    h = make_gateway(server={"admin_key_env": env})
    summary = h.url + "/dashboard/api/summary"

    def login() -> str:
        with httpx2.Client(base_url=h.url, follow_redirects=False) as browser:
            r = browser.post("/dashboard/login", data={"key": key})
            assert r.status_code == 303
            cookie = r.headers["set-cookie"]
            assert "Path=/dashboard" in cookie and "HttpOnly" in cookie
            return str(browser.cookies["spendgate_dashboard"])

    first, second = login(), login()
    assert first != second, "every login gets a new random session"
    assert key not in first and len(first) >= 40
    for token in (first, second):
        assert httpx2.get(summary, cookies={"spendgate_dashboard": token}).status_code == 200
    # Logout revokes on the server: a copy of the cookie replayed elsewhere is dead too.
    with httpx2.Client(base_url=h.url, follow_redirects=False) as browser:
        browser.cookies.set("spendgate_dashboard", first, path="/dashboard")
        assert browser.post("/dashboard/logout").status_code == 303
    assert httpx2.get(summary, cookies={"spendgate_dashboard": first}).status_code == 401
    assert httpx2.get(summary, cookies={"spendgate_dashboard": second}).status_code == 200
    # Rotating the admin key ends every session issued under the old one.
    os.environ[env] = key + "-rotated"
    assert httpx2.get(summary, cookies={"spendgate_dashboard": second}).status_code == 401
    os.environ[env] = key


def test_session_store_expires_and_revokes(tmp_path: Any) -> None:
    from spendgate.server.sessions import SessionStore

    url = f"sqlite:///{tmp_path / 'keys.db'}"
    store, replica = SessionStore(url), SessionStore(url)
    live = store.create("k")
    assert replica.check(live.token, "k") is not None, "replicas share sessions"
    assert replica.check(live.token, "other-key") is None
    assert replica.revoke(live.token) and store.check(live.token, "k") is None
    expired = SessionStore(url, lifetime=0).create("k")
    assert store.check(expired.token, "k") is None
    assert store.check("x" * 10_000, "k") is None and store.check(None, "k") is None
    store.close()
    replica.close()


def test_cross_site_writes_are_refused(make_gateway: Any, admin_env: tuple[str, str]) -> None:
    """The probe: a logged-in browser, a foreign page, `text/plain` → a $0.000001/day global
    hard budget. Now: no cookie opens admin writes, and writes take JSON only."""
    env, key = admin_env
    h = make_gateway(server={"admin_key_env": env}, budgets={})
    with httpx2.Client(base_url=h.url, follow_redirects=False) as browser:
        assert browser.post("/dashboard/login", data={"key": key}).status_code == 303
        rule = (
            '{"name": "dos", "scope": {}, "period": "day", "limit_usd": "0.000001", "mode": "hard"}'
        )
        forged = browser.post(
            "/admin/budgets/",
            content=rule,
            headers={"content-type": "text/plain", "origin": "https://evil.example"},
        )
        assert forged.status_code == 401
        # A foreign page can't log a browser in (or out) either.
        cross = browser.post(
            "/dashboard/login", data={"key": key}, headers={"origin": "https://evil.example"}
        )
        assert cross.status_code == 403 and cross.json()["error"]["code"] == "cross_site_request"
        fetch = browser.post("/dashboard/logout", headers={"sec-fetch-site": "cross-site"})
        assert fetch.status_code == 403
    auth = {"authorization": f"Bearer {key}"}
    as_text = httpx2.post(
        h.url + "/admin/budgets/", content=rule, headers={**auth, "content-type": "text/plain"}
    )
    assert as_text.status_code == 415
    listed = httpx2.get(h.url + "/admin/budgets/", headers=auth).json()["data"]
    assert [r for r in listed if r["name"] == "dos"] == []
    as_json = httpx2.post(
        h.url + "/admin/budgets/",
        content=rule,
        headers={**auth, "content-type": "application/json"},
    )
    assert as_json.status_code == 201, "the admin key with JSON still writes"


def test_no_admin_key_is_403_saying_how(make_gateway: Any) -> None:
    env = "SG_TEST_UNSET_" + uuid.uuid4().hex[:8].upper()
    h = make_gateway(server={"admin_key_env": env})
    r = httpx2.get(h.url + "/admin/spend", headers={"authorization": "Bearer anything"})
    assert r.status_code == 403
    err = r.json()["error"]
    assert env in err["message"] and err["code"] == "admin_key_not_configured"


def test_auth_off_opens_admin(make_gateway: Any) -> None:
    env = "SG_TEST_UNSET_" + uuid.uuid4().hex[:8].upper()
    h = make_gateway(server={"admin_key_env": env, "auth": "off"})
    assert httpx2.get(h.url + "/admin/spend").status_code == 200


def test_bad_input_is_openai_style(make_gateway: Any, admin_env: tuple[str, str]) -> None:
    env, key = admin_env
    h = make_gateway(server={"admin_key_env": env})
    auth = {"authorization": f"Bearer {key}"}
    cases = [
        ("/admin/spend?by=colour", 400, "by"),
        ("/admin/spend?since=yesterday-ish", 400, "since"),
        ("/admin/spend?format=xlsx", 400, "format"),
        ("/admin/spend?bogus=1", 400, "bogus"),
        ("/admin/spend?status=abc", 400, None),
        ("/admin/spend?since=2026-11-02&until=2026-11-01", 400, "since"),
        ("/admin/unit-economics?month=2026-13", 400, None),
        ("/admin/trends?bucket=fortnight", 400, None),
        ("/admin/nope", 404, None),
    ]
    for path, status, param in cases:
        r = httpx2.get(h.url + path, headers=auth)
        assert r.status_code == status, (path, r.text)
        err = r.json()["error"]
        assert err["message"] and err["type"]
        if param:
            assert err["param"] == param, path
    r = httpx2.post(h.url + "/admin/spend", headers=auth)
    assert r.status_code == 405 and "error" in r.json()


# ------------------------------------------------------------------- reports e2e


@pytest.fixture(scope="module")
def traffic(
    sim: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Harness, str, list[UsageEvent]]]:
    """One gateway, real traffic: 2 features × 2 models × 3 tenants, 5 users, some calls
    with a system prompt."""
    from conftest import gateway_settings, start_harness

    env = "SG_TEST_ADMIN_" + uuid.uuid4().hex[:8].upper()
    key = "adm-" + uuid.uuid4().hex
    os.environ[env] = key
    settings = gateway_settings(
        sim,
        tmp_path_factory.mktemp("admin"),
        server={"admin_key_env": env},
        features={"search": {"revenue_usd_per_month": 1000, "segment": "productivity"}},
    )
    h = start_harness(settings)
    tag = unique("t")
    for i in range(24):
        chat(
            h,
            ["gpt-4o", "gpt-4o-mini"][i % 2],
            ["search", "chat"][i % 3 == 0],
            tenant=f"{tag}-ten{i % 3}",
            user=f"{tag}-u{i % 5}",
            system=SYSTEM if i % 4 else None,
        )
    events = h.events()
    assert len(events) == 24
    yield h, key, events
    os.environ.pop(env, None)
    h.close()


def get(h: Harness, key: str, path: str) -> httpx2.Response:
    r = httpx2.get(h.url + path, headers={"authorization": f"Bearer {key}"}, timeout=30)
    assert r.status_code == 200, r.text
    return r


def test_spend_by_feature_model(traffic: Any) -> None:
    h, key, events = traffic
    doc = get(h, key, "/admin/spend?by=feature,model").json()
    want: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    for e in events:
        want[(e.feature, e.model)][0] += 1
        want[(e.feature, e.model)][1] += e.cost_nanos
    got = {(r["feature"], r["model"]): [r["calls"], r["cost_usd"]] for r in doc["rows"]}
    assert got == {k: [c, usd(n)] for k, (c, n) in want.items()}
    assert doc["totals"]["cost_usd"] == usd(sum(e.cost_nanos for e in events))
    for r in doc["rows"]:
        c, n = want[(r["feature"], r["model"])]
        assert Decimal(r["cost_per_request_usd"]) == (Decimal(n) / NANOS_PER_USD / c).quantize(
            Decimal("0.000000001")
        )
    # a tenant filter and a time window
    tenant = events[0].tenant
    doc = get(h, key, f"/admin/spend?by=model&tenant={tenant}&since=1d").json()
    assert sum(r["calls"] for r in doc["rows"]) == sum(e.tenant == tenant for e in events)
    doc = get(h, key, "/admin/spend?until=2020-01-01").json()
    assert doc["rows"] == []


def test_spend_csv_and_parquet(traffic: Any) -> None:
    h, key, events = traffic
    text = get(h, key, "/admin/spend?by=tenant&format=csv").text
    rows = list(csv.DictReader(io.StringIO(text)))
    assert {r["tenant"] for r in rows} == {e.tenant for e in events}
    assert (
        sum(Decimal(r["cost_usd"]) for r in rows)
        == Decimal(sum(e.cost_nanos for e in events)) / NANOS_PER_USD
    )
    r = get(h, key, "/admin/spend?by=tenant,model&format=parquet")
    table = pq.read_table(io.BytesIO(r.content))
    assert table.num_rows == len({(e.tenant, e.model) for e in events})
    assert str(table.schema.field("cost_usd").type) == "decimal128(38, 9)"
    total = sum(table.column("cost_usd").to_pylist())
    assert total == Decimal(sum(e.cost_nanos for e in events)) / NANOS_PER_USD


def test_system_prompt_share(traffic: Any) -> None:
    h, key, events = traffic
    enc = bpe_openai.get_encoding("o200k_base")
    system_tokens = len(enc.encode_ordinary(SYSTEM))
    with_system = [e for e in events if e.extra and e.extra.get("system_tokens")]
    assert len(with_system) == 18  # 3 of every 4 calls sent one
    measured = {e.extra["system_tokens"] for e in with_system}
    assert len(measured) == 1  # the same prompt is measured the same way every time
    estimate = measured.pop()  # from the text's size: no tokenizer tables on the request path
    assert abs(estimate - system_tokens) <= 0.1 * system_tokens
    for e in with_system:
        assert e.input_tokens > estimate
    doc = get(h, key, "/admin/system-prompt?by=feature").json()
    tot = doc["totals"]
    assert tot["system_tokens"] == estimate * 18
    assert tot["input_tokens"] == sum(e.input_tokens for e in events)
    want_sys = sum(
        e.extra["input_cost_nanos"] * e.extra["system_tokens"] // e.input_tokens
        for e in with_system
    )
    assert tot["system_input_cost_usd"] == usd(want_sys)
    want_in = sum(e.extra["input_cost_nanos"] for e in events)
    assert tot["input_cost_usd"] == usd(want_in)
    assert tot["system_input_cost_share"] == round(want_sys / want_in, 6)
    assert 0.5 < tot["system_input_cost_share"] < 1  # the long system prompt dominates


def test_unit_economics(traffic: Any) -> None:
    h, key, events = traffic
    month = datetime.fromtimestamp(events[0].ts, UTC).strftime("%Y-%m")
    doc = get(h, key, f"/admin/unit-economics?month={month}").json()
    rows = {r["feature"]: r for r in doc["rows"]}
    for feature, row in rows.items():
        mine = [e for e in events if e.feature == feature]
        users = {e.user for e in mine}
        cost = Decimal(sum(e.cost_nanos for e in mine)) / NANOS_PER_USD
        assert row["active_users"] == len(users)
        assert Decimal(row["cost_per_active_user_usd"]) == (cost / len(users)).quantize(
            Decimal("0.000000001")
        )
    # search is declared a productivity tool; a few test calls cost far below $0.50/user
    assert rows["search"]["segment"] == "productivity"
    assert rows["search"]["band_position"] == "below"
    assert rows["chat"]["segment"] is None and rows["chat"]["band_position"] is None
    assert doc["bands"]["agentic"] == {"low_usd": "10", "high_usd": "50"}
    assert doc["totals"]["active_users"] == len({e.user for e in events})


def test_tier_trends(traffic: Any) -> None:
    h, key, events = traffic
    doc = get(h, key, "/admin/trends?bucket=day").json()
    assert doc["models"] == {"gpt-4o": "frontier", "gpt-4o-mini": "small"}
    by_tier: dict[str, int] = defaultdict(int)
    for e in events:
        by_tier["frontier" if e.model == "gpt-4o" else "small"] += e.cost_nanos
    got: dict[str, Decimal] = defaultdict(Decimal)
    for r in doc["rows"]:
        got[r["tier"]] += Decimal(r["cost_usd"])
    assert got == {t: Decimal(n) / NANOS_PER_USD for t, n in by_tier.items()}


def test_feature_economics_current_month(traffic: Any) -> None:
    h, key, _ = traffic
    doc = get(h, key, "/admin/features/economics").json()
    rows = {r["feature"]: r for r in doc["rows"]}
    assert rows["search"]["verdict"] == "profitable"  # $1,000/month vs cents of spend
    assert rows["search"]["worth_kind"] == "revenue"
    assert rows["chat"]["verdict"] == "no value configured"


# --------------------------------------------- seeded ledgers: economics and savings


def _seed(h: Harness, costs: dict[str, int], ts: float, savings: dict[str, int] | None = None,
          n: int = 10) -> list[UsageEvent]:  # fmt: skip
    """Write events straight into the gateway's own ledger: `costs[feature]` USD in total,
    spread over `n` calls each (money exact in nanos)."""
    events = []
    for feature, dollars in costs.items():
        total = dollars * NANOS_PER_USD
        for i in range(n):
            part = total // n + (total % n if i == 0 else 0)
            events.append(
                UsageEvent(
                    request_id=unique("seed"),
                    ts=ts + i * 3600,
                    endpoint="chat",
                    api="openai",
                    requested_model="gpt-4o",
                    served_model="gpt-4o",
                    status=200,
                    latency_ms=1.0,
                    feature=feature,
                    user=f"user-{i}",
                    input_tokens=1000,
                    output_tokens=100,
                    cost_nanos=part,
                    baseline_nanos=part + sum((savings or {}).values()),
                    savings=dict(savings or {}),
                )
            )
    h.gateway.store.write_batch(events)
    return events


def test_feature_economics_seed_example(make_gateway: Any, admin_env: tuple[str, str]) -> None:
    """The seed's example: X costs $8,000/month and earns $15,000; Y costs $22,000 and earns
    $18,000 → Y needs optimization or repricing."""
    env, key = admin_env
    h = make_gateway(
        server={"admin_key_env": env},
        features={
            "X": {"revenue_usd_per_month": 15000},
            "Y": {"revenue_usd_per_month": 18000, "segment": "agentic"},
            "Z": {"value_usd_per_month": 500},
        },
    )
    _seed(h, {"X": 8000, "Y": 22000}, datetime(2026, 10, 3, tzinfo=UTC).timestamp())
    _seed(h, {"X": 99}, datetime(2026, 11, 3, tzinfo=UTC).timestamp())  # another month
    doc = get(h, key, "/admin/features/economics?month=2026-10").json()
    assert doc["month_complete"] is True
    rows = {r["feature"]: r for r in doc["rows"]}
    assert rows["X"]["cost_usd"] == "8000.000000000"
    assert rows["X"]["margin_usd"] == "7000.000000000"
    assert rows["X"]["verdict"] == "profitable"
    assert rows["Y"]["cost_usd"] == "22000.000000000"
    assert rows["Y"]["margin_usd"] == "-4000.000000000"
    assert rows["Y"]["verdict"] == "needs optimization or repricing"
    assert rows["Z"]["calls"] == 0 and rows["Z"]["worth_kind"] == "value"
    assert doc["needs_attention"] == ["Y"]
    assert doc["rows"][0]["feature"] == "Y"  # what needs attention comes first
    # Y is agentic: $22,000 over 10 users is $2,200/user/month, above the $10–50 band
    ue = get(h, key, "/admin/unit-economics?month=2026-10").json()
    y = next(r for r in ue["rows"] if r["feature"] == "Y")
    assert y["cost_per_active_user_usd"] == "2200.000000000"
    assert y["band_position"] == "above"
    text = get(h, key, "/admin/features/economics?month=2026-10&format=csv").text
    assert "needs optimization or repricing" in text


def test_savings_by_technique(make_gateway: Any, admin_env: tuple[str, str]) -> None:
    env, key = admin_env
    h = make_gateway(server={"admin_key_env": env})
    ts = datetime(2026, 10, 5, 7, 30, tzinfo=UTC).timestamp()
    a = _seed(h, {"search": 10}, ts, {"cache": 2 * NANOS_PER_USD, "routing": 5})
    b = _seed(h, {"chat": 3}, ts, {"trim": 7}, n=4)
    doc = get(h, key, "/admin/savings?by=feature").json()
    assert doc["by_technique"] == {
        "cache": {"calls": len(a), "saved_usd": usd(2 * NANOS_PER_USD * len(a))},
        "routing": {"calls": len(a), "saved_usd": usd(5 * len(a))},
        "trim": {"calls": len(b), "saved_usd": usd(7 * len(b))},
    }
    assert doc["totals"]["saved_usd"] == usd(sum(e.savings_nanos for e in a + b))
    # a ragged window (starts mid-hour) still counts exactly
    since = datetime.fromtimestamp(ts + 3 * 3600 + 60, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    doc = get(h, key, f"/admin/savings?since={since}").json()
    later = [e for e in a + b if e.ts >= ts + 3 * 3600 + 60]
    assert doc["by_technique"]["cache"]["calls"] == sum("cache" in e.savings for e in later)


def test_system_prompt_pieces_in_both_dialects() -> None:
    from spendgate.analytics.system_prompt import system_texts, system_tokens
    from spendgate.call import Call

    anthropic_call = Call(
        endpoint="messages",
        api="anthropic",
        requested_model="claude-sonnet-4",
        body={
            "system": [{"type": "text", "text": "Be brief."}, {"type": "text", "text": "Cite."}],
            "messages": [{"role": "user", "content": "hi"}],
        },
    )
    assert system_texts(anthropic_call) == ["Be brief.", "Cite."]
    assert system_tokens(anthropic_call) > 0
    openai_call = Call(
        endpoint="chat",
        api="openai",
        requested_model="gpt-4o",
        body={
            "messages": [
                {"role": "developer", "content": [{"type": "text", "text": "Rules."}]},
                {"role": "system", "content": "More rules."},
                {"role": "user", "content": "hi"},
            ]
        },
    )
    assert system_texts(openai_call) == ["Rules.", "More rules."]
    enc = bpe_openai.get_encoding("o200k_base")
    assert system_tokens(openai_call) == len(enc.encode_ordinary("Rules.")) + len(
        enc.encode_ordinary("More rules.")
    )
    embed = Call(endpoint="embeddings", api="openai", requested_model="x", body={"input": "a"})
    assert system_tokens(embed) == 0


def test_mounted_budgets_and_dashboard_are_behind_the_key(
    make_gateway: Any, admin_env: tuple[str, str]
) -> None:
    """Other packages' routes live inside this app: budgets under /admin/budgets (admin
    key required), the dashboard at the root (its own public paths excepted)."""
    import importlib.util

    env, key = admin_env
    h = make_gateway(server={"admin_key_env": env})
    if importlib.util.find_spec("spendgate.budgets.admin") is not None:
        assert httpx2.get(h.url + "/admin/budgets/").status_code == 401
        r = httpx2.get(h.url + "/admin/budgets/", headers={"authorization": f"Bearer {key}"})
        # Past the key, the budgets package answers (here: budgets are not configured).
        assert r.status_code != 401, r.text
        assert r.json().get("error", {}).get("code") != "unknown_url"
    if importlib.util.find_spec("spendgate.server.dashboard") is not None:
        from spendgate.server import dashboard

        public = set(getattr(dashboard, "public_paths", ()))
        for path in sorted(public)[:3]:
            r = httpx2.get(h.url + path, follow_redirects=False)
            # The dashboard decides about its own public paths (login page, its own auth);
            # this app's refusals ("The admin API …") never answer them.
            assert "The admin API" not in r.text, (path, r.text)


def test_csv_export_escapes_formulas(make_gateway: Any, admin_env: tuple[str, str]) -> None:
    """Tags are client-supplied: `=1+2` must reach a spreadsheet as text, not a formula."""
    env, key = admin_env
    h = make_gateway(server={"admin_key_env": env})
    hostile = ["=1+2", "+1", "-2+3", "@SUM"]
    for feature in hostile:
        r = httpx2.post(
            h.v1 + "/chat/completions",
            json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]},
            headers={"x-spendgate-feature": feature},
            timeout=30,
        )
        assert r.status_code == 200, r.text
    h.flush()
    text = get(h, key, "/admin/spend?by=feature&format=csv").text
    cells = {row["feature"] for row in csv.DictReader(io.StringIO(text))}
    assert cells == {"'" + f for f in hostile}
    for line in text.splitlines()[1:]:
        assert line[0] not in "=+-@", line
    from spendgate.ledger import render_report

    rows = h.reader().spend(["feature"])
    cli = render_report(rows, ["feature"], "csv")
    assert {r["feature"] for r in csv.DictReader(io.StringIO(cli))} == cells
    # Money stays numeric, negative savings included.
    from spendgate.ledger.report import csv_text

    assert (
        csv_text([{"saved": "-0.25", "tag": "-x"}], ["saved", "tag"]).splitlines()[1] == "-0.25,'-x"
    )
