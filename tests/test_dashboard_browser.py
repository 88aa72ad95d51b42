"""The dashboard in a real headless browser (Debian's chromium, driven by Playwright).

A gateway with a demo replay plus two weeks of history in its ledger; the browser logs in
with `?key=`, the charts must render with the ledger's data, and changing a filter must
change what is shown. Skips when chromium or Playwright is missing.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx2
import pytest

from conftest import Harness, gateway_settings, start_harness
from dashboard_helpers import replay_demo, write_history
from spendgate.simulated import SimulatedUpstream

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
if not os.path.exists(CHROMIUM):
    pytest.skip("chromium is not installed (apt-get install chromium)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api")

ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]  # fmt: skip


@pytest.fixture(scope="module")
def site(
    sim: SimulatedUpstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Harness, str]]:
    env = "SG_TEST_ADMIN_" + uuid.uuid4().hex[:8].upper()
    secret = "adm-" + uuid.uuid4().hex
    os.environ[env] = secret
    h = start_harness(gateway_settings(sim, tmp_path_factory.mktemp("browser"),
                                       server={"admin_key_env": env}))  # fmt: skip
    write_history(h.gateway.store, days=14, per_day=30)
    statuses = replay_demo(h.url, 100)
    assert set(statuses) == {"200"} and sum(statuses.values()) >= 40
    h.flush()
    yield h, secret
    h.close()
    os.environ.pop(env, None)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


def _chart(page: Any, canvas_id: str) -> dict[str, Any]:
    """What Chart.js holds for a canvas: labels, datasets' sums, and the canvas size."""
    result: dict[str, Any] = page.evaluate(
        """id => {
            const c = Chart.getChart(id);
            if (!c) return null;
            return {
              labels: c.data.labels,
              datasets: c.data.datasets.map(d => ({label: d.label,
                 sum: d.data.reduce((a, b) => a + (b || 0), 0), n: d.data.length})),
              width: c.canvas.width, height: c.canvas.height,
            };
        }""",
        canvas_id,
    )
    return result


def _wait_loaded(page: Any, after: int) -> int:
    page.wait_for_function("n => Number(document.body.dataset.loads || 0) > n", arg=after,
                           timeout=20_000)  # fmt: skip
    assert page.evaluate("document.body.dataset.state") == "ready"
    return int(page.evaluate("document.body.dataset.loads"))


def _api(h: Harness, secret: str, **params: str) -> dict[str, Any]:
    r = httpx2.get(h.url + "/dashboard/api/summary", params=params,
                   headers={"authorization": f"Bearer {secret}"}, timeout=30)  # fmt: skip
    assert r.status_code == 200
    return r.json()


def test_dashboard_renders_and_filters(site: tuple[Harness, str], browser: Any) -> None:
    h, secret = site
    context = browser.new_context(viewport={"width": 1600, "height": 1100})
    page = context.new_page()
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    try:
        page.goto(f"{h.url}/dashboard?key={secret}&since=30d")
        assert page.url == f"{h.url}/dashboard?since=30d"  # the key left the URL
        loads = _wait_loaded(page, 0)

        ledger = h.events()
        since = datetime.now(UTC) - timedelta(days=30)
        in_range = [e for e in ledger if e.ts >= since.timestamp()]
        assert page.inner_text("#k-calls b") == f"{len(in_range):,}"

        # Spend over time: stacked by tier, one bar per day, adding up to the ledger's spend.
        time_chart = _chart(page, "chart-time")
        assert time_chart["width"] > 300 and time_chart["height"] > 100
        assert {d["label"] for d in time_chart["datasets"]} <= {"frontier", "mid", "small",
                                                               "unknown"}  # fmt: skip
        assert len(time_chart["labels"]) >= 14
        drawn = sum(d["sum"] for d in time_chart["datasets"])
        cost = float(sum(Decimal(e.cost_nanos or 0) for e in in_range) / 10**9)
        assert drawn == pytest.approx(cost, rel=1e-9)

        # Top lists: the features chart shows the ledger's features, most costly first.
        features = _chart(page, "chart-feature")
        totals: dict[str, int] = {}
        for e in in_range:
            name = e.feature or "(none)"
            totals[name] = totals.get(name, 0) + (e.cost_nanos or 0)
        assert features["labels"] == sorted(totals, key=lambda k: -totals[k])
        for dim in ("team", "tenant", "user", "savings"):
            assert _chart(page, f"chart-{dim}") is not None
        assert page.locator("#t-models tbody tr").count() == len({e.model for e in in_range})
        assert page.inner_text("#budgets") == "no budgets"

        # Filter on a team through its <select>: every panel narrows to it.
        team = _api(h, secret, since="30d")["options"]["team"][-1]
        page.select_option("#f-team", team)
        loads = _wait_loaded(page, loads)
        assert f"team={team}" in page.url
        narrowed = [e for e in in_range if e.team == team]
        assert page.inner_text("#k-calls b") == f"{len(narrowed):,}"
        assert _chart(page, "chart-team")["labels"] == [team]
        assert sum(d["sum"] for d in _chart(page, "chart-time")["datasets"]) == pytest.approx(
            float(sum(Decimal(e.cost_nanos or 0) for e in narrowed) / 10**9), rel=1e-9
        )

        # Range: the last 24 hours are drawn per hour and hold only today's demo calls.
        page.select_option("#f-since", "24h")
        loads = _wait_loaded(page, loads)
        hourly = _chart(page, "chart-time")
        assert len(hourly["labels"]) in (24, 25)
        recent = [
            e for e in narrowed if e.ts >= (datetime.now(UTC) - timedelta(hours=24)).timestamp()
        ]
        assert page.inner_text("#k-calls b") == f"{len(recent):,}"

        # Clicking a bar in "Top features" filters on that feature.
        page.click("#f-clear")
        loads = _wait_loaded(page, loads)
        top = _chart(page, "chart-feature")["labels"][0]
        box = page.locator("#chart-feature").bounding_box()
        page.mouse.click(box["x"] + box["width"] * 0.5, box["y"] + 20)
        loads = _wait_loaded(page, loads)
        assert page.input_value("#f-feature") == top

        assert errors == []
        assert all(u.startswith(h.url) for u in requests), "the page fetched from elsewhere"
    finally:
        context.close()


def _pct(x: float) -> str:
    return f"{100 * x:.{1 if 0 < x < 0.1 else 0}f}%"


def test_system_prompts_panel_renders(site: tuple[Harness, str], browser: Any) -> None:
    """The panel lists each feature whose system prompt accounting measured, with its
    tokens per call and share of input spend as the ledger's events give them."""
    h, secret = site
    context = browser.new_context(viewport={"width": 1600, "height": 1100})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    try:
        page.goto(f"{h.url}/dashboard?key={secret}&since=7d")
        loads = _wait_loaded(page, 0)
        since = (datetime.now(UTC) - timedelta(days=7)).timestamp()
        per: dict[str, list[int]] = {}
        for e in h.events():
            extra = e.extra or {}
            if e.ts < since or extra.get("input_cost_nanos") is None or e.input_tokens <= 0:
                continue
            system = min(extra.get("system_tokens") or 0, e.input_tokens)
            acc = per.setdefault(e.feature or "(none)", [0, 0, 0, 0])
            acc[0] += 1
            acc[1] += system
            acc[2] += extra["input_cost_nanos"] * system // e.input_tokens
            acc[3] += extra["input_cost_nanos"]
        assert len(per) == 5  # the demo's five features, each with its own system prompt
        rows = page.locator("#t-system tbody tr")
        assert rows.count() == len(per)
        order = sorted(per, key=lambda f: -per[f][2])
        for i, feature in enumerate(order):
            cells = rows.nth(i).locator("td").all_inner_texts()
            n, system, sys_cost, in_cost = per[feature]
            assert cells[0] == feature
            assert cells[1] == f"{round(system / n):,}"
            assert cells[2].split()[-1] == _pct(sys_cost / in_cost)
            assert cells[3].startswith("$") and cells[3] != "$0"
            long = feature in ("support-chat", "code-assistant")  # ~1.3k-token prompts
            assert (cells[4] == "too short") == (not long), cells
        assert page.locator("#t-system tfoot tr").count() == 1
        note = page.inner_text("#system-note")
        assert "per month" in note and "prompt cache" in note
        box = page.locator("#system-card").bounding_box()
        assert box["width"] > 800 and box["height"] > 150

        # The panel follows the filters.
        page.select_option("#f-feature", order[-1])
        _wait_loaded(page, loads)
        assert page.locator("#t-system tbody tr").count() == 1
        assert page.locator("#t-system tbody td").first.inner_text() == order[-1]
        assert errors == []
    finally:
        context.close()


def test_unauthenticated_browser_gets_the_login_form(site: tuple[Harness, str],
                                                     browser: Any) -> None:  # fmt: skip
    h, secret = site
    context = browser.new_context()
    page = context.new_page()
    try:
        page.goto(f"{h.url}/dashboard")
        assert page.locator("input[name=key]").count() == 1
        page.fill("input[name=key]", secret)
        page.click("button[type=submit]")
        _wait_loaded(page, 0)
        assert page.locator("#chart-time").count() == 1
    finally:
        context.close()


@pytest.mark.parametrize("width", [1280, 1440])
def test_nothing_overflows_at_laptop_widths(
    site: tuple[Harness, str], browser: Any, width: int, tmp_path: Any
) -> None:
    """The probe saw the Models, Budgets and Feature-economics tables clipped at 1440 px and
    the cost/request tile cut. Every table must fit its panel, every tile its number, and the
    page must not scroll sideways."""
    h, secret = site
    context = browser.new_context(viewport={"width": width, "height": 900})
    page = context.new_page()
    try:
        page.goto(f"{h.url}/dashboard?key={secret}&since=30d")
        _wait_loaded(page, 0)
        page.screenshot(path=str(tmp_path / f"dashboard-{width}.png"), full_page=True)
        overflow = page.evaluate(
            """() => {
              const bad = [];
              for (const t of document.querySelectorAll("table")) {
                const card = t.closest(".card");
                const a = t.getBoundingClientRect(), b = card.getBoundingClientRect();
                if (a.right > b.right + 0.5 || a.left < b.left - 0.5)
                  bad.push(`${card.id}: table ${a.width}px in ${b.width}px`);
              }
              for (const k of document.querySelectorAll(".kpi b")) {
                if (k.scrollWidth > k.clientWidth + 0.5 ||
                    k.getBoundingClientRect().right > k.parentElement.getBoundingClientRect().right)
                  bad.push(`tile ${k.parentElement.id}: ${k.textContent}`);
              }
              if (document.documentElement.scrollWidth > window.innerWidth)
                bad.push(`page ${document.documentElement.scrollWidth}px wide`);
              return bad;
            }"""
        )
        assert overflow == [], overflow
        assert page.locator("#t-feature-savings tbody tr").count() > 0
    finally:
        context.close()
