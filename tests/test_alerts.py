"""Alerts against a real local webhook receiver (aiohttp on a loopback port).

Anomalies and error spikes come from a real gateway's ledger (history written directly for
the past hours, the spike sent through the gateway); budget crossings come from the budgets
stage through the gateway; de-duplication is checked per process and across processes with
a real Redis. Every expected figure is recomputed from the ledger's events.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx2
import pytest
from aiohttp import web

from conftest import Harness, gateway_settings
from spendgate.alerts import AlertsConfig, AlertService, payload
from spendgate.alerts.detect import floor_hour
from spendgate.alerts.webhook import Alert
from spendgate.call import from_nanos
from spendgate.config import ConfigError, parse_settings
from spendgate.ledger import UsageEvent, open_ledger
from spendgate.serve import free_port
from spendgate.simulated import SimulatedUpstream


class Receiver:
    """Collects webhook posts. `/ok/<name>` answers 200; `/flaky/<name>` answers 500 to its
    first `fail_first` posts, then 200."""

    def __init__(self, fail_first: int = 0) -> None:
        self.port = free_port()
        self.posts: queue.Queue[tuple[str, dict[str, Any]]] = queue.Queue()
        self.fail_first = fail_first
        self.attempts = 0
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        self._ready.wait(10)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def _run(self) -> None:
        async def ok(request: web.Request) -> web.Response:
            self.posts.put((request.match_info["name"], await request.json()))
            return web.json_response({"ok": True})

        async def flaky(request: web.Request) -> web.Response:
            self.attempts += 1
            if self.attempts <= self.fail_first:
                return web.Response(status=500, text="down")
            return await ok(request)

        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            app = web.Application()
            app.router.add_post("/ok/{name}", ok)
            app.router.add_post("/flaky/{name}", flaky)
            runner = web.AppRunner(app)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", self.port).start()
            self._ready.set()
            await self._stop.wait()
            await runner.cleanup()

        asyncio.run(main())

    def drain(self) -> list[tuple[str, dict[str, Any]]]:
        out = []
        while True:
            try:
                out.append(self.posts.get_nowait())
            except queue.Empty:
                return out

    def close(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def _hooks(receiver: Receiver, **extra: Any) -> list[dict[str, Any]]:
    return [
        {"url": receiver.url("/ok/slack"), "format": "slack", **extra},
        {"url": receiver.url("/ok/json"), "format": "json", **extra},
    ]


def _check(h: Harness, now: datetime | None = None) -> list[Alert]:
    """Run one alert check on the gateway's own loop, as its periodic task would."""
    service = h.gateway.stage_context.alerts
    assert service is not None
    h.flush()
    result: list[Alert] = asyncio.run_coroutine_threadsafe(
        service.check(now), service.loop).result(30)  # fmt: skip
    return result


def _event(feature: str, ts: float, nanos: int, **kw: Any) -> UsageEvent:
    return UsageEvent(request_id="hist-" + uuid.uuid4().hex, ts=ts, endpoint="chat",
                      api="openai", requested_model="gpt-4o", served_model="gpt-4o",
                      provider="simulated", status=kw.pop("status", 200), latency_ms=100.0,
                      feature=feature, cost_nanos=nanos, baseline_nanos=nanos, **kw)  # fmt: skip


def _chat(h: Harness, feature: str, n: int, model: str = "gpt-4o") -> list[int]:
    statuses = []
    with httpx2.Client(timeout=30) as client:
        for i in range(n):
            r = client.post(h.v1 + "/chat/completions", json={
                "model": model, "max_tokens": 400,
                "messages": [{"role": "user", "content": f"write a long story number {i}"}]},
                headers={"x-spendgate-feature": feature})  # fmt: skip
            statuses.append(r.status_code)
    return statuses


# ---------------------------------------------------------------------------- anomalies


def test_spend_anomaly_alerts_once_per_hour(
    sim: SimulatedUpstream, make_gateway: Any, receiver: Receiver
) -> None:
    spiky, steady = "spiky-" + uuid.uuid4().hex[:6], "steady-" + uuid.uuid4().hex[:6]
    h: Harness = make_gateway(alerts={
        "webhooks": _hooks(receiver), "check_interval_s": 3600,
        "anomaly": {"scopes": ["feature"], "factor": 3, "trailing_hours": 24,
                    "min_spend_usd": "0.0005"},
    })  # fmt: skip
    now = datetime.now(UTC)
    hour = floor_hour(now)
    # 24 quiet hours: $0.0001/hour for `spiky`; `steady` spends $1 every hour.
    history = []
    for i in range(1, 25):
        ts = (hour - timedelta(hours=i) + timedelta(minutes=30)).timestamp()
        history += [_event(spiky, ts, 100_000), _event(steady, ts, 10**9)]
    h.gateway.store.write_batch(history)
    # This hour: real calls through the gateway for `spiky`; `steady` stays at $1.
    assert _chat(h, spiky, 6) == [200] * 6
    h.gateway.store.write_batch([_event(steady, now.timestamp() - 1, 10**9)])

    sent = _check(h)
    assert [(a.kind, a.scope) for a in sent] == [("anomaly", {"feature": spiky})]
    alert = sent[0]
    judged = datetime.fromisoformat(alert.figures["hour_start"])
    spent = sum(e.cost_nanos or 0 for e in h.events(feature=spiky)
                if judged.timestamp() <= e.ts < judged.timestamp() + 3600)  # fmt: skip
    assert Decimal(alert.figures["spend_usd"]) == from_nanos(spent)
    assert Decimal(alert.figures["median_usd"]) == Decimal("0.0001")
    assert spent > 3 * 100_000

    posts = dict(receiver.drain())
    assert set(posts) == {"slack", "json"}
    assert set(posts["slack"]) == {"text"} and spiky in posts["slack"]["text"]
    assert posts["json"]["kind"] == "anomaly"
    assert posts["json"]["scope"] == {"feature": spiky}
    assert posts["json"]["period"] == judged.strftime("%Y-%m-%dT%H")
    assert posts["json"]["figures"]["spend_usd"] == alert.figures["spend_usd"]

    # Same hour, same scope: de-duplicated, nothing more is posted.
    assert _check(h) == []
    assert receiver.drain() == []


def test_a_quiet_ledger_raises_nothing(make_gateway: Any, receiver: Receiver) -> None:
    h: Harness = make_gateway(alerts={"webhooks": _hooks(receiver)})
    assert _chat(h, "quiet-" + uuid.uuid4().hex[:6], 2) == [200, 200]
    # Default floor: an hour must reach $1 before it can alert; two calls don't.
    assert _check(h) == []
    assert receiver.drain() == []


# ---------------------------------------------------------------------------- error spikes


def test_provider_error_spike(make_gateway: Any, faults: Any, receiver: Receiver) -> None:
    h: Harness = make_gateway(alerts={
        "webhooks": [{"url": receiver.url("/ok/json"), "kinds": ["error_spike"]}],
        "anomaly": {"enabled": False},
        "error_spike": {"window_s": 600, "min_calls": 8, "error_rate": 0.5},
    })  # fmt: skip
    feature = "flaky-" + uuid.uuid4().hex[:6]
    assert _chat(h, feature, 4) == [200] * 4
    assert _check(h) == []  # 0 errors in 4 calls: below min_calls and threshold
    faults({"kind": "status", "status": 500, "times": 6})
    statuses = _chat(h, feature, 6)
    assert statuses == [502] * 6  # upstream 5xx → 502 to the client
    sent = _check(h)
    assert [a.kind for a in sent] == ["error_spike"]
    events = h.events(feature=feature)
    failed = [e for e in events if e.status >= 500]
    assert sent[0].figures["calls"] == len(events) == 10
    assert sent[0].figures["errors"] == len(failed) == 6
    assert sent[0].scope == {"provider": failed[0].provider}
    _name, body = receiver.posts.get(timeout=5)
    assert body["kind"] == "error_spike" and "6 of 10" in body["text"]
    assert _check(h) == []  # once per period


# ---------------------------------------------------------------------------- budgets


def test_budget_thresholds_alert_once_each(make_gateway: Any, receiver: Receiver) -> None:
    pytest.importorskip("spendgate.budgets.stage")
    feature = "budgeted-" + uuid.uuid4().hex[:6]
    limit = Decimal("0.004")
    h: Harness = make_gateway(
        budgets={"budgets": [{"name": "tiny", "scope": {"feature": feature},
                              "limit_usd": str(limit), "mode": "soft"}]},
        alerts={"webhooks": [{"url": receiver.url("/ok/json"), "kinds": ["budget"]}]},
    )  # fmt: skip
    got: list[dict[str, Any]] = []
    with httpx2.Client(timeout=30) as client:
        for i in range(60):
            r = client.post(h.v1 + "/chat/completions", json={
                "model": "gpt-4o", "messages": [{"role": "user", "content": f"story {i}"}]},
                headers={"x-spendgate-feature": feature})  # fmt: skip
            assert r.status_code == 200  # soft: never refused
            h.flush()
            spent = sum(e.cost_nanos or 0 for e in h.events(feature=feature))
            if from_nanos(spent) >= limit * Decimal("1.2"):
                break
    # Three crossings, each delivered once, in order; wait on the receiver (no sleeps).
    for _ in range(3):
        got.append(receiver.posts.get(timeout=10)[1])
    assert [b["level"] for b in got] == ["0.5", "0.8", "1"]
    assert all(b["kind"] == "budget" and b["scope"]["budget"] == "tiny" for b in got)
    assert all(b["scope"]["feature"] == feature for b in got)
    for b in got:
        assert Decimal(b["figures"]["spent_usd"]) >= limit * Decimal(str(b["figures"]["threshold"]))
    assert len({b["period"] for b in got}) == 1
    assert receiver.drain() == []


# ---------------------------------------------------------------------------- delivery


def test_a_failed_delivery_is_retried_on_the_next_check(make_gateway: Any) -> None:
    receiver = Receiver(fail_first=2)  # 1 attempt + 1 retry fail, the next check succeeds
    try:
        feature = "burst-" + uuid.uuid4().hex[:6]
        h: Harness = make_gateway(alerts={
            "webhooks": [{"url": receiver.url("/flaky/json"), "retries": 1}],
            "anomaly": {"scopes": ["feature"], "min_spend_usd": "0.0001"},
        })  # fmt: skip
        assert _chat(h, feature, 2) == [200, 200]
        assert _check(h) == []
        assert receiver.attempts == 2
        metrics = httpx2.get(h.url + "/metrics").text
        assert 'spendgate_alerts_sent_total{kind="anomaly",outcome="failed"} 1.0' in metrics
        sent = _check(h)
        assert [a.scope for a in sent] == [{"feature": feature}]
        assert receiver.posts.get(timeout=5)[1]["scope"] == {"feature": feature}
        service = h.gateway.stage_context.alerts
        assert service is not None
        view = service.recent_json()
        assert view[0]["scope"] == {"feature": feature}
    finally:
        receiver.close()


def test_the_gateway_runs_checks_by_itself(make_gateway: Any, receiver: Receiver) -> None:
    feature = "periodic-" + uuid.uuid4().hex[:6]
    h: Harness = make_gateway(alerts={
        "webhooks": [{"url": receiver.url("/ok/json")}], "check_interval_s": 1,
        "anomaly": {"scopes": ["feature"], "min_spend_usd": "0.0001"},
    })  # fmt: skip
    assert _chat(h, feature, 2) == [200, 200]
    h.flush()
    _name, body = receiver.posts.get(timeout=20)  # the periodic task's own check
    assert body["scope"] == {"feature": feature}


def test_redis_dedup_sends_once_across_replicas(tmp_path: Any, receiver: Receiver) -> None:
    redis = pytest.importorskip("redis")
    try:
        redis.Redis(host="127.0.0.1", port=6379).ping()
    except Exception:
        pytest.skip("no Redis on 127.0.0.1:6379")
    prefix = f"sgtest:{uuid.uuid4().hex[:8]}:"
    feature = "fleet-" + uuid.uuid4().hex[:6]
    store = open_ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    store.write_batch([_event(feature, datetime.now(UTC).timestamp() - 5, 10**9)])
    config = AlertsConfig.model_validate({
        "webhooks": [{"url": receiver.url("/ok/json")}], "dedup": "redis://127.0.0.1:6379/0",
        "dedup_prefix": prefix, "anomaly": {"scopes": ["feature"]},
    })  # fmt: skip

    async def run() -> list[list[Alert]]:
        replicas = [AlertService(config, store) for _ in range(3)]
        try:
            return list(await asyncio.gather(*(r.check() for r in replicas)))
        finally:
            for r in replicas:
                await r.stop()

    try:
        results = asyncio.run(run())
        assert sorted(len(r) for r in results) == [0, 0, 1]
        assert [b["scope"] for _, b in receiver.drain()] == [{"feature": feature}]
    finally:
        client = redis.Redis(host="127.0.0.1", port=6379)
        for key in client.scan_iter(prefix + "*"):
            client.delete(key)
        client.close()
        store.close()


# ---------------------------------------------------------------------------- config + format


def test_config_errors_name_their_key(sim: SimulatedUpstream) -> None:
    with pytest.raises(ConfigError) as bad:
        parse_settings({"alerts": {"webhooks": [{"url": "ftp://x"}],
                                   "anomaly": {"scopes": ["colour"]}}})  # fmt: skip
    text = str(bad.value)
    assert "alerts.webhooks.0.url" in text and "alerts.anomaly.scopes" in text
    with pytest.raises(ConfigError, match=r"alerts\.dedup"):
        parse_settings({"alerts": {"dedup": "memcached://x"}})
    settings = gateway_settings(sim, __import__("pathlib").Path("/tmp"), alerts={})
    assert settings.alerts.active is False  # no webhooks: nothing runs


def test_payload_formats() -> None:
    alert = Alert(kind="budget", scope={"budget": "b"}, period="m2026-11", level="0.8",
                  title="spendgate: budget b passed 80%", text="used $8 of $10")  # fmt: skip
    slack = payload(alert, "slack")
    assert list(slack) == ["text"] and "budget b passed 80%" in slack["text"]
    assert "used $8 of $10" in slack["text"]
    plain = payload(alert, "json")
    assert plain["kind"] == "budget" and plain["level"] == "0.8" and plain["source"] == "spendgate"
