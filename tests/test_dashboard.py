"""The dashboard through a real gateway: its JSON view against the ledger's raw events, the
range and tag filters, access with the admin key (header, `?key=` → cookie, login form),
bad input, static assets, budgets and feature-economics panels, and the new /metrics
counters.

Expected figures are recomputed here from the stored events (integer nanos), never taken
from the code under test."""

from __future__ import annotations

import os
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx2
import pytest

from conftest import Harness, gateway_settings, start_harness
from dashboard_helpers import replay_demo, write_history
from spendgate.call import from_nanos
from spendgate.ledger import UsageEvent
from spendgate.simulated import SimulatedUpstream


def _env_key() -> tuple[str, str]:
    """A unique admin-key variable per gateway, so parallel tests never share one."""
    name = "SG_TEST_ADMIN_" + uuid.uuid4().hex[:8].upper()
    secret = "adm-" + uuid.uuid4().hex
    os.environ[name] = secret
    return name, secret


@pytest.fixture(scope="module")
def dash(
    sim: SimulatedUpstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Harness, str]]:
    env, secret = _env_key()
    settings = gateway_settings(
        sim,
        tmp_path_factory.mktemp("dash"),
        server={"admin_key_env": env},
        features={
            "support-chat": {"revenue_usd_per_month": 1000},
            "faq-answers": {"value_usd_per_month": "0.000001"},
        },
    )
    harness = start_harness(settings)
    write_history(harness.gateway.store, days=14, per_day=30)
    statuses = replay_demo(harness.url, 120)  # 120 prompts (or the bundled 40): ~150+ calls
    assert set(statuses) == {"200"} and sum(statuses.values()) >= 40
    harness.flush()
    yield harness, secret
    harness.close()
    os.environ.pop(env, None)


def _get(h: Harness, secret: str, **params: str) -> dict[str, Any]:
    r = httpx2.get(h.url + "/dashboard/api/summary", params=params,
                   headers={"authorization": f"Bearer {secret}"}, timeout=30)  # fmt: skip
    assert r.status_code == 200, r.text
    return r.json()


def _in_range(events: list[UsageEvent], since: datetime | None, **tags: str) -> list[UsageEvent]:
    lo = since.timestamp() if since else float("-inf")
    return [
        e
        for e in events
        if e.ts >= lo
        and all((e.model if k == "model" else getattr(e, k)) == v for k, v in tags.items())
    ]


def _usd(nanos: int) -> Decimal:
    return from_nanos(nanos)


# ------------------------------------------------------------------------ the view


@pytest.mark.parametrize("since,span", [("24h", timedelta(hours=24)), ("7d", timedelta(days=7)),
                                        ("all", None)])  # fmt: skip
def test_totals_and_top_lists_match_the_ledger(dash: tuple[Harness, str], since: str,
                                               span: timedelta | None) -> None:  # fmt: skip
    h, secret = dash
    before = datetime.now(UTC)
    view = _get(h, secret, since=since)
    events = _in_range(h.events(), before - span if span else None)
    # the range start is computed server-side a moment after `before`: nothing lands in between
    t = view["totals"]
    assert t["calls"] == len(events)
    assert Decimal(t["cost_usd"]) == _usd(sum(e.cost_nanos or 0 for e in events))
    assert t["active_users"] == len({e.user for e in events if e.user})
    assert t["errors"] == 0
    if since == "24h":
        assert view["range"]["unit"] == "hour"
        assert len(view["series"]["labels"]) in (24, 25)
    else:
        assert view["range"]["unit"] == "day"

    # The series adds up to the total, exactly.
    series_total = sum(Decimal(v) for vals in view["series"]["models"].values() for v in vals)
    assert series_total == Decimal(t["cost_usd"])

    # Top features: the ledger's ranking by cost.
    by_feature: Counter[str] = Counter()
    for e in events:
        by_feature[e.feature or "(none)"] += e.cost_nanos or 0
    expected = [name for name, _ in by_feature.most_common(10)]
    assert [r["name"] for r in view["top"]["feature"]] == expected
    first = view["top"]["feature"][0]
    n_first = sum(1 for e in events if e.feature == first["name"])
    assert first["calls"] == n_first
    assert Decimal(first["cost_usd"]) == _usd(by_feature[first["name"]])

    # Tiers come from list prices: gpt-4o and claude-sonnet-4 are frontier, gpt-4o-mini small.
    tiers = view["series"]["tiers"]
    assert tiers["gpt-4o"] == "frontier"
    assert tiers["gpt-4o-mini"] == "small"
    assert tiers["claude-sonnet-4-20250514"] == "frontier"

    # Nothing optimizes this gateway: the four techniques are listed at zero.
    assert [s["technique"] for s in view["savings"]][:4] == [
        "cache", "routing", "trimming", "prompt_caching"]  # fmt: skip
    assert all(Decimal(s["savings_usd"]) == 0 for s in view["savings"])
    assert t["routing_share"] == 0
    assert t["cache_hit_rate"] is None


def test_a_tag_filter_narrows_every_panel(dash: tuple[Harness, str]) -> None:
    h, secret = dash
    before = datetime.now(UTC)
    everything = _get(h, secret, since="7d")
    team = everything["options"]["team"][1]  # not the biggest, so it really narrows
    view = _get(h, secret, since="7d", team=team)
    events = _in_range(h.events(), before - timedelta(days=7), team=team)
    assert 0 < view["totals"]["calls"] == len(events) < everything["totals"]["calls"]
    assert Decimal(view["totals"]["cost_usd"]) == _usd(sum(e.cost_nanos or 0 for e in events))
    assert [r["name"] for r in view["top"]["team"]] == [team]
    assert set(view["options"]["team"]) == set(everything["options"]["team"])  # still offered
    assert view["filters"] == {"team": team}

    model = "gpt-4o-mini"
    view = _get(h, secret, since="7d", model=model)
    events = _in_range(h.events(), before - timedelta(days=7), model=model)
    assert view["totals"]["calls"] == len(events) > 0
    assert list(view["series"]["models"]) == [model]


def test_budgets_panel_says_none_without_budgets(dash: tuple[Harness, str]) -> None:
    h, secret = dash
    assert _get(h, secret)["budgets"] is None


def test_feature_economics_uses_the_features_section(dash: tuple[Harness, str]) -> None:
    h, secret = dash
    econ = _get(h, secret)["economics"]
    rows = {r["feature"]: r for r in econ["rows"]}
    assert rows["support-chat"]["verdict"] == "profitable"
    assert rows["faq-answers"]["verdict"] == "needs optimization or repricing"
    assert rows["support-chat"]["worth_usd_per_month"].startswith("1000")


# ------------------------------------------------------------------------ access


def test_api_needs_the_admin_key(dash: tuple[Harness, str]) -> None:
    h, _secret = dash
    r = httpx2.get(h.url + "/dashboard/api/summary")
    assert r.status_code == 401
    assert r.json()["error"]["type"] == "authentication_error"
    r = httpx2.get(h.url + "/dashboard/api/summary", headers={"authorization": "Bearer nope"})
    assert r.status_code == 401


def test_browser_login_by_query_key_sets_a_cookie(dash: tuple[Harness, str]) -> None:
    h, secret = dash
    with httpx2.Client(base_url=h.url, follow_redirects=False) as client:
        page = client.get("/dashboard")
        assert page.status_code == 401 and "<form" in page.text and "Admin key" in page.text
        wrong = client.get("/dashboard", params={"key": "wrong"})
        assert wrong.status_code == 401 and "not the admin key" in wrong.text
        r = client.get("/dashboard", params={"key": secret, "since": "24h"})
        assert r.status_code == 303
        assert r.headers["location"] == "/dashboard?since=24h"  # the key leaves the URL
        cookie = r.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie
        assert secret not in cookie  # a random session token, not the key itself
        page = client.get("/dashboard")
        assert page.status_code == 200
        assert "chart.umd.min.js" in page.text
        assert page.headers["content-security-policy"].startswith("default-src 'self'")
        assert client.get("/dashboard/api/summary").status_code == 200
        client.post("/dashboard/logout")
        assert client.get("/dashboard/api/summary").status_code == 401


def test_login_form(dash: tuple[Harness, str]) -> None:
    h, secret = dash
    with httpx2.Client(base_url=h.url, follow_redirects=False) as client:
        bad = client.post("/dashboard/login", data={"key": "guess"})
        assert bad.status_code == 401
        ok = client.post("/dashboard/login", data={"key": secret})
        assert ok.status_code == 303 and ok.headers["location"] == "/dashboard"
        assert client.get("/dashboard/api/summary").status_code == 200


def test_no_admin_key_means_closed_unless_auth_is_off(
    sim: SimulatedUpstream, tmp_path_factory: pytest.TempPathFactory
) -> None:
    missing = "SG_TEST_UNSET_" + uuid.uuid4().hex[:8].upper()
    closed = start_harness(gateway_settings(sim, tmp_path_factory.mktemp("closed"),
                                            server={"admin_key_env": missing}))  # fmt: skip
    try:
        r = httpx2.get(closed.url + "/dashboard/api/summary")
        assert r.status_code == 403 and missing in r.json()["error"]["message"]
        page = httpx2.get(closed.url + "/dashboard")
        # No login form asking for a key that doesn't exist: how to set one instead.
        assert page.status_code == 403 and "<form" not in page.text
        assert f"export {missing}=" in page.text and "restart" in page.text
    finally:
        closed.close()
    server = {"admin_key_env": missing, "auth": "off"}
    open_ = start_harness(gateway_settings(sim, tmp_path_factory.mktemp("open"), server=server))
    try:
        page = httpx2.get(open_.url + "/dashboard")
        assert page.status_code == 200 and "open to anyone" in page.text
        view = httpx2.get(open_.url + "/dashboard/api/summary").json()
        assert view["totals"]["calls"] == 0 and view["admin_key_required"] is False
    finally:
        open_.close()


# ------------------------------------------------------------------------ input + assets


@pytest.mark.parametrize("params,param", [
    ({"since": "yesterday-ish"}, "since"),
    ({"until": "2026-13-45"}, "until"),
    ({"since": "2026-11-02", "until": "2026-11-01"}, "since"),
    ({"feature": "x" * 300}, "feature"),
])  # fmt: skip
def test_bad_parameters_are_400s_naming_them(dash: tuple[Harness, str], params: dict[str, str],
                                             param: str) -> None:  # fmt: skip
    h, secret = dash
    r = httpx2.get(h.url + "/dashboard/api/summary", params=params,
                   headers={"authorization": f"Bearer {secret}"})  # fmt: skip
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == param


def test_static_assets_are_local(dash: tuple[Harness, str]) -> None:
    h, _ = dash
    js = httpx2.get(h.url + "/dashboard/static/chart.umd.min.js")
    assert js.status_code == 200 and "Chart.js v4" in js.text[:200]
    assert js.headers["content-type"].startswith("text/javascript")
    page_js = httpx2.get(h.url + "/dashboard/static/dashboard.js").text
    assert "http://" not in page_js and "https://" not in page_js  # no CDN, no beacons
    # Only the listed files are served; anything else under static/ is refused.
    assert httpx2.get(h.url + "/dashboard/static/..%2F__init__.py").status_code in (401, 404)
    assert httpx2.get(h.url + "/dashboard/static/data.py").status_code in (401, 404)


# ------------------------------------------------------------------------ budgets panel


def test_budgets_panel_shows_spend_against_each_limit(
    sim: SimulatedUpstream, tmp_path_factory: pytest.TempPathFactory
) -> None:
    pytest.importorskip("spendgate.budgets.stage")
    env, secret = _env_key()
    feature = "budget-dash-" + uuid.uuid4().hex[:6]
    h = start_harness(gateway_settings(
        sim, tmp_path_factory.mktemp("budgets"), server={"admin_key_env": env},
        budgets={"budgets": [
            {"name": "feat-month", "scope": {"feature": feature}, "limit_usd": "0.05",
             "mode": "soft"},
            {"name": "per-tenant", "scope": {"tenant": "*"}, "limit_usd": "1", "period": "day"},
        ]},
    ))  # fmt: skip
    try:
        for tenant in ("t-a", "t-b", "t-a"):
            r = httpx2.post(h.v1 + "/chat/completions", json={
                "model": "gpt-4o", "messages": [{"role": "user", "content": "hello there"}]},
                headers={"x-spendgate-feature": feature, "x-spendgate-tenant": tenant})  # fmt: skip
            assert r.status_code == 200, r.text
        h.flush()
        rows = _get(h, secret)["budgets"]
        events = h.events(feature=feature)
        by_name = {(b["name"], b["scope"]): b for b in rows}
        feat = by_name[("feat-month", f"feature={feature}")]
        spent = sum(e.cost_nanos or 0 for e in events)
        assert Decimal(feat["spent_usd"]) == _usd(spent)
        assert feat["used"] == pytest.approx(float(_usd(spent) / Decimal("0.05")), rel=1e-5)
        assert feat["hard"] is False
        t_a = by_name[("per-tenant", "tenant=t-a")]
        assert Decimal(t_a["spent_usd"]) == _usd(
            sum(e.cost_nanos or 0 for e in events if e.tenant == "t-a")
        )
        assert ("per-tenant", "tenant=t-b") in by_name
        assert [b["used"] for b in rows] == sorted((b["used"] for b in rows), reverse=True)
    finally:
        h.close()
        os.environ.pop(env, None)


# ------------------------------------------------------------------------ /metrics


def test_metrics_carry_route_outcomes_by_feature(dash: tuple[Harness, str]) -> None:
    h, _ = dash
    text = httpx2.get(h.url + "/metrics").text
    lines = [ln for ln in text.splitlines() if ln.startswith("spendgate_route_outcomes_total{")]
    kept = sum(float(ln.rsplit(" ", 1)[1]) for ln in lines if 'outcome="kept"' in ln)
    sent = [e for e in h.events() if not e.request_id.startswith("hist-")]
    assert kept == len(sent)  # every demo call was answered by the model it asked for
    assert any('feature="support-chat"' in ln for ln in lines)
    assert "spendgate_cache_outcomes_total" in text or "spendgate_cache_outcomes" in text


def test_grafana_dashboard_uses_only_metrics_the_gateway_exports(make_gateway: Any) -> None:
    import json
    import re
    from pathlib import Path

    dashboard = json.loads(
        (Path(__file__).resolve().parent.parent / "deploy" / "grafana-dashboard.json").read_text()
    )
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    exprs += [v["query"]["query"] for v in dashboard["templating"]["list"] if v["type"] == "query"]
    used = {re.sub(r"_(bucket|sum|count)$", "", m)
            for e in exprs for m in re.findall(r"\bspendgate_[a-z_]+", e)}  # fmt: skip
    # A gateway with alerts on (so its counter exists) after one call.
    h: Harness = make_gateway(alerts={"webhooks": [{"url": "http://127.0.0.1:9/unused"}],
                                      "check_interval_s": 3600})  # fmt: skip
    r = httpx2.post(h.v1 + "/chat/completions", json={
        "model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]},
        headers={"x-spendgate-feature": "grafana"})  # fmt: skip
    assert r.status_code == 200
    h.flush()
    exported = set(re.findall(r"^# TYPE (\S+) ", httpx2.get(h.url + "/metrics").text, re.M))
    exported |= {m + "_total" for m in exported}  # counters' TYPE lines omit _total
    assert used, "the dashboard queries nothing"
    assert used <= exported, f"not exported: {sorted(used - exported)}"
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])


def test_cache_and_routing_outcomes_and_savings_match_the_ledger(make_gateway: Any) -> None:
    """With the cache and route stages on, the hit rate, routed share and savings by
    technique shown are those the ledger's events carry."""
    pytest.importorskip("spendgate.cache.stage")
    pytest.importorskip("spendgate.routing.stage")
    env, secret = _env_key()
    feature = "optimized-" + uuid.uuid4().hex[:6]
    h: Harness = make_gateway(
        server={"admin_key_env": env},
        cache={"enabled": True, "backend": "memory"},
        routing={"enabled": True, "strong": "gpt-4o", "weak": "gpt-4o-mini",
                 "apply_to": ["o3-mini"]},
    )  # fmt: skip
    try:
        with httpx2.Client(timeout=30) as client:

            def ask(text: str, **headers: str) -> None:
                r = client.post(h.v1 + "/chat/completions", json={
                    "model": "gpt-4o", "messages": [{"role": "user", "content": text}]},
                    headers={"x-spendgate-feature": feature, **headers})  # fmt: skip
                assert r.status_code == 200, r.text

            for text in ("what is a budget?", "what is a budget?", "what is a cache?"):
                ask(text)
            ask("route me", **{"x-spendgate-route": "weak"})
        h.flush()
        events = h.events(feature=feature)
        view = _get(h, secret, since="24h", feature=feature)
        t = view["totals"]
        hits = sum(1 for e in events if e.cache and "hit" in e.cache)
        looked = sum(1 for e in events if e.cache and e.cache != "bypass")
        assert hits >= 1, [e.cache for e in events]
        assert t["cache_hit_rate"] == pytest.approx(hits / looked)
        routed = [e for e in events if e.route and e.route.get("served") != e.route.get(
            "requested", e.requested_model)]  # fmt: skip
        assert len(routed) == 1 and t["routed_calls"] == 1
        assert t["routing_share"] == pytest.approx(1 / len(events))
        by_technique: Counter[str] = Counter()
        for e in events:
            by_technique.update(e.savings)
        shown = {s["technique"]: Decimal(s["savings_usd"]) for s in view["savings"]}
        assert shown["cache"] == _usd(by_technique["cache"]) > 0
        assert shown["routing"] == _usd(by_technique["routing"]) > 0
        assert Decimal(t["savings_usd"]) == _usd(sum(by_technique.values()))

        # The same outcomes on /metrics, labelled by feature.
        metrics = [ln for ln in httpx2.get(h.url + "/metrics").text.splitlines()
                   if f'feature="{feature}"' in ln and not ln.startswith("#")]  # fmt: skip

        def total(name: str, outcome: str) -> float:
            return sum(float(ln.rsplit(" ", 1)[1]) for ln in metrics
                       if ln.startswith(name + "{") and f'outcome="{outcome}"' in ln)  # fmt: skip

        assert total("spendgate_cache_outcomes_total", "hit") == hits
        assert total("spendgate_route_outcomes_total", "routed") == 1
        saved = [ln for ln in metrics if ln.startswith("spendgate_savings_usd_total{")]
        assert any('technique="cache"' in ln for ln in saved)
    finally:
        os.environ.pop(env, None)


# ------------------------------------------------------------------------ system prompts


def _system_expected(events: list[UsageEvent]) -> dict[str, dict[str, Any]]:
    """Per feature, from the events' own `extra` (what accounting measured): calls, measured
    calls, system tokens, input spend and its system part (pro rata per call), and the
    system tokens long enough to cache that the call did not already read from cache, per
    served model."""
    out: dict[str, dict[str, Any]] = {}
    for e in events:
        row = out.setdefault(e.feature or "(none)", {
            "calls": 0, "measured": 0, "system": 0, "in_cost": 0, "sys_cost": 0,
            "cacheable": Counter()})  # fmt: skip
        row["calls"] += 1
        extra = e.extra or {}
        if extra.get("input_cost_nanos") is None or e.input_tokens <= 0:
            continue
        system = min(extra.get("system_tokens") or 0, e.input_tokens)
        row["measured"] += 1
        row["system"] += system
        row["in_cost"] += extra["input_cost_nanos"]
        row["sys_cost"] += extra["input_cost_nanos"] * system // e.input_tokens
        if system >= 1024:
            row["cacheable"][e.served_model or e.requested_model] += max(
                system - e.cache_read_tokens, 0
            )
    return out


def _caching_usd(cacheable: Counter[str]) -> Decimal:
    from spendgate.pricing import PriceCatalog

    catalog = PriceCatalog.default()
    total = Decimal(0)
    for model, tokens in cacheable.items():
        unit = catalog.unit_prices(model)
        inp = unit["input"]
        assert inp is not None, model
        read = unit["cache_read"]
        total += tokens * (inp - (inp if read is None else read)) / 10**6
    return total


def _check_system_panel(view: dict[str, Any], events: list[UsageEvent]) -> dict[str, Any]:
    panel = view["system_prompts"]
    expected = _system_expected(events)
    rows = {r["feature"]: r for r in panel["rows"]}
    shown = {f for f, x in expected.items() if x["system"] or x["measured"]}
    assert set(rows) == shown, (set(rows), shown)
    until = datetime.fromisoformat(view["range"]["until"])
    since = view["range"]["since"]
    # Projected from the days the range covers with data: a range drawn per hour counts in
    # full, a longer one from the first day (midnight UTC) with calls.
    first = min(e.ts for e in events)
    start = datetime.fromtimestamp(first, UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    if view["range"]["unit"] == "hour":
        start = datetime.fromisoformat(since)
    elif since is not None:
        start = max(start, datetime.fromisoformat(since))
    days = (until - start).total_seconds() / 86400
    assert panel["days"] == pytest.approx(days, abs=1e-5)
    scale = Decimal(30) / Decimal(str(panel["days"]))
    for feature, row in rows.items():
        x = expected[feature]
        assert row["calls"] == x["calls"]
        assert row["measured_calls"] == x["measured"]
        assert row["system_tokens"] == x["system"]
        assert row["avg_system_tokens"] == pytest.approx(x["system"] / x["measured"], abs=0.05)
        assert Decimal(row["system_input_cost_usd"]) == _usd(x["sys_cost"])
        assert row["system_input_cost_share"] == pytest.approx(x["sys_cost"] / x["in_cost"],
                                                               abs=1e-6)  # fmt: skip
        month = _usd(x["sys_cost"]) * scale
        assert Decimal(row["system_usd_month"]) == pytest.approx(month, abs=Decimal("1e-9"))
        saving = min(_caching_usd(x["cacheable"]), _usd(x["sys_cost"]))
        assert Decimal(row["caching_saving_usd"]) == pytest.approx(saving, abs=Decimal("1e-9"))
        assert Decimal(row["caching_saving_usd_month"]) == pytest.approx(
            saving * scale, abs=Decimal("1e-8"))  # fmt: skip
        assert row["too_short_to_cache"] == (0 < x["system"] / x["measured"] < 1024
                                             and not saving)  # fmt: skip
    assert panel["saving_basis"] == "prompt_caching" and panel["partial"] is False
    total_sys = sum(x["sys_cost"] for x in expected.values())
    assert Decimal(panel["totals"]["system_input_cost_usd"]) == _usd(total_sys)
    return panel


def test_system_prompt_panel_matches_the_ledger(dash: tuple[Harness, str]) -> None:
    """The demo's features send their system prompts (measured by accounting on the replayed
    calls; the synthetic history carries no measurement): tokens, share and spend per
    feature are the events' own. Support and code carry ~1.3k-token prompts, long enough to
    cache; the other three are too short, so no caching saving."""
    h, secret = dash
    before = datetime.now(UTC)
    view = _get(h, secret, since="7d")
    events = _in_range(h.events(), before - timedelta(days=7))
    panel = _check_system_panel(view, events)
    assert len(panel["rows"]) == 5
    long_prompts = {"support-chat", "code-assistant"}
    for r in panel["rows"]:
        long = r["feature"] in long_prompts
        assert (r["avg_system_tokens"] > 1024) == long, r
        assert r["too_short_to_cache"] == (not long), r
        if not long:
            assert Decimal(r["caching_saving_usd"]) == 0
    assert all(0 < r["system_input_cost_share"] < 1 for r in panel["rows"])
    # Most costly system prompt first, as /admin/system-prompt orders them.
    spends = [Decimal(r["system_input_cost_usd"]) for r in panel["rows"]]
    assert spends == sorted(spends, reverse=True)

    # The page and the admin API agree, over the same window.
    admin = httpx2.get(h.url + "/admin/system-prompt", params={
        "by": "feature", "since": view["range"]["since"], "until": view["range"]["until"]},
        headers={"authorization": f"Bearer {secret}"}, timeout=30).json()  # fmt: skip
    assert {r["feature"]: (Decimal(r["system_input_cost_usd"]), r["system_input_cost_share"])
            for r in admin["rows"] if r["system_tokens"]} == {
        r["feature"]: (Decimal(r["system_input_cost_usd"]), r["system_input_cost_share"])
        for r in panel["rows"]}  # fmt: skip

    # "All time" projects from the first day with calls; a filter narrows the panel.
    _check_system_panel(_get(h, secret, since="all"), h.events())
    team = view["options"]["team"][0]
    narrowed = _get(h, secret, since="7d", team=team)
    _check_system_panel(narrowed, [e for e in events if e.team == team])
    assert {r["feature"] for r in narrowed["system_prompts"]["rows"]} < set(
        r["feature"] for r in panel["rows"])  # fmt: skip


def test_system_prompt_panel_estimates_prompt_caching(make_gateway: Any) -> None:
    """A feature with a system prompt long enough to cache: the saving is the input minus
    cache-read price on its system tokens the provider did not already serve from cache."""
    env, secret = _env_key()
    h: Harness = make_gateway(server={"admin_key_env": env})
    long_prompt = " ".join(f"Rule {i}: answer politely and cite the policy section {i}."
                           for i in range(120))  # fmt: skip
    try:
        for i, (feature, system) in enumerate(
            [("long-prompt", long_prompt)] * 4 + [("short-prompt", "Be brief.")] * 2
        ):
            r = httpx2.post(h.v1 + "/chat/completions", json={
                "model": "gpt-4o", "messages": [{"role": "system", "content": system},
                                                {"role": "user", "content": f"question {i}"}]},
                headers={"x-spendgate-feature": feature}, timeout=30)  # fmt: skip
            assert r.status_code == 200, r.text
        h.flush()
        events = h.events()
        view = _get(h, secret, since="24h")
        panel = _check_system_panel(view, events)
        rows = {r["feature"]: r for r in panel["rows"]}
        long_row, short_row = rows["long-prompt"], rows["short-prompt"]
        assert long_row["avg_system_tokens"] >= 1024 and not long_row["too_short_to_cache"]
        assert Decimal(long_row["caching_saving_usd"]) > 0
        assert short_row["too_short_to_cache"] and Decimal(short_row["caching_saving_usd"]) == 0
        assert panel["days"] == pytest.approx(1.0)
        # Calls that already read the prompt from the provider's cache save nothing more.
        assert any(e.cache_read_tokens for e in events if e.feature == "long-prompt"), (
            "the simulated provider should cache the repeated long prefix"
        )
    finally:
        os.environ.pop(env, None)


def test_system_prompt_scan_sql_and_python_agree(dash: tuple[Harness, str]) -> None:
    """The SQLite fast path and the Python `events()` pass measure the same calls."""
    from spendgate.server.dashboard import data

    h, _ = dash
    store = h.reader()
    q = data.Query(since=None, until=datetime.now(UTC))
    fast = data._scan_recent(store, q)
    assert fast is not None and fast.system
    assert data._scan_events(store, q).system == fast.system


def test_parallel_reads_draw_the_same_view(dash: tuple[Harness, str]) -> None:
    """A file ledger answers a view's queries from several threads at once; the view is the
    one the same queries give in turn (a store that does not offer parallel reads)."""
    from spendgate.analytics.tiers import TierClassifier
    from spendgate.pricing import PriceCatalog
    from spendgate.server.dashboard import data

    h, _ = dash
    h.flush()  # nothing of earlier tests' requests still on its way to the ledger
    store = h.reader()
    assert store.parallel_reads

    class InTurn:  # the same store, its reads taken in turn
        parallel_reads = False

        def __getattr__(self, name: str) -> Any:
            return getattr(store, name)

    tiers = TierClassifier(PriceCatalog.default())
    until = datetime.now(UTC) + timedelta(minutes=1)
    for filters in ({}, {"feature": "support-chat"}):
        q = data.Query(since=until - timedelta(days=30), until=until, filters=filters)
        parallel = data.summary(store, tiers, q, now=until)
        in_turn = data.summary(InTurn(), tiers, q, now=until)  # type: ignore[arg-type]
        assert parallel == in_turn
        assert parallel["totals"]["calls"] > 0


def test_filters_narrow_budgets_economics_and_feature_savings(
    sim: SimulatedUpstream, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """A team or feature filter shows only the budgets that cover that traffic and only the
    filtered feature's economics (the probe saw other features listed under a filter)."""
    env, secret = _env_key()
    budgets = {"budgets": [
        {"name": "support-day", "scope": {"team": "support"}, "limit_usd": "5", "period": "day"},
        {"name": "growth-day", "scope": {"team": "growth"}, "limit_usd": "5", "period": "day"},
        {"name": "everything", "scope": {}, "limit_usd": "50", "period": "month"},
    ]}  # fmt: skip
    h = start_harness(gateway_settings(
        sim, tmp_path_factory.mktemp("filters"), server={"admin_key_env": env}, budgets=budgets,
        features={"support-chat": {"revenue_usd_per_month": 10},
                  "faq-answers": {"value_usd_per_month": 10}},
    ))  # fmt: skip
    try:
        statuses = replay_demo(h.url, 60)
        assert set(statuses) == {"200"}
        h.flush()
        whole = _get(h, secret, since="24h")
        assert {b["name"] for b in whole["budgets"]} == {"support-day", "growth-day", "everything"}
        assert {r["feature"] for r in whole["economics"]["rows"]} >= {"support-chat", "faq-answers"}
        team = _get(h, secret, since="24h", team="support")
        assert {b["name"] for b in team["budgets"]} == {"support-day", "everything"}
        feature = _get(h, secret, since="24h", feature="faq-answers")
        assert [r["feature"] for r in feature["economics"]["rows"]] == ["faq-answers"]
        assert [r["name"] for r in feature["savings_by_feature"]] == ["faq-answers"]
        spent = sum(Decimal(e.cost_nanos or 0) for e in h.events() if e.feature == "faq-answers")
        assert Decimal(feature["savings_by_feature"][0]["cost_usd"]) == spent / 10**9
    finally:
        h.close()
        os.environ.pop(env, None)
