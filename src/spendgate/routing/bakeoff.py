"""Per-feature bake-off: replay a feature's logged prompts on candidate models, grade, pick.

Why: a global model tier decision is guesswork; the evidence is the feature's own prompts
answered by each candidate and graded the same way. `spendgate bakeoff` samples N prompts
logged under `ledger.log_prompts`, sends each to the requested model and to every
candidate *through the gateway* (attributed to the `spendgate-eval` feature, cache
bypassed, the model forced by `x-spendgate-route`), grades each candidate's answer against
the requested model's with a judge (`spendgate.routing.judge`), and reports per model:
quality with a 95% bootstrap interval, cost and latency.

The pick: a candidate qualifies when the `confidence` quantile of the bootstrap
distribution of mean(q_candidate − target × q_requested), over the prompts graded for both,
is ≥ 0 (below it, the candidate falls short of `target` of the requested model's quality).
`confidence` 0.5 (the default) asks that the estimate meets the target; 0.95 makes it a
one-sided non-inferiority test, which with a few hundred prompts rarely lets a model that
is merely as good through (figures in docs/routing.md, "Bake-off"). The cheapest qualifying
model is picked; the requested model always qualifies. `snippet` writes the routing rule
that applies the pick. `summarize` is shared with the offline evaluation on scored data
(`bench/bakeoff_open7b.py`), where the file's reference scores act as the judge.
"""

from __future__ import annotations

import asyncio
import json
import random
import statistics
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

import numpy as np

from spendgate.ledger.prompts import EVAL_FEATURE
from spendgate.providers.dialects import dialect_for
from spendgate.routing.judge import Judge, answer_text

if TYPE_CHECKING:
    import httpx2

__all__ = [
    "Answer",
    "GatewayClient",
    "LoggedPrompt",
    "ModelReport",
    "logged_prompts",
    "prompt_text",
    "run_bakeoff",
    "sample_prompts",
    "snippet",
    "summarize",
]


@dataclass(frozen=True)
class LoggedPrompt:
    request_id: str
    api: str
    body: dict[str, Any]
    requested_model: str


def prompt_text(body: Mapping[str, Any]) -> str:
    """The conversation as one text (what a judge reads as "the request")."""
    parts: list[str] = []
    system = body.get("system")
    if isinstance(system, str):
        parts.append(f"[system] {system}")
    elif isinstance(system, list):
        parts += [f"[system] {b.get('text', '')}" for b in system if isinstance(b, dict)]
    for m in body.get("messages") or ():
        if not isinstance(m, dict):
            continue
        content = m.get("content")
        if isinstance(content, list):
            content = "\n".join(
                str(b.get("text", "")) for b in content if isinstance(b, dict) and "text" in b
            )
        parts.append(f"[{m.get('role')}] {content or ''}")
    return "\n".join(parts)


def logged_prompts(store: Any, feature: str) -> list[LoggedPrompt]:
    """The distinct prompts logged for `feature` (first occurrence of each fingerprint),
    oldest first. Prompts recorded as skipped (too long) are left out."""
    seen: set[str] = set()
    out: list[LoggedPrompt] = []
    for event in store.events(filters={"feature": feature}):
        logged = (event.extra or {}).get("prompt")
        if not isinstance(logged, dict) or not isinstance(logged.get("body"), dict):
            continue
        key = event.prompt_fingerprint or event.request_id
        if key in seen:
            continue
        seen.add(key)
        out.append(
            LoggedPrompt(
                request_id=event.request_id,
                api=str(logged.get("api") or "openai"),
                body=logged["body"],
                requested_model=event.requested_model,
            )
        )
    return out


def sample_prompts(prompts: Sequence[LoggedPrompt], n: int, seed: int = 0) -> list[LoggedPrompt]:
    """`n` prompts chosen by a seeded draw (all of them when there are fewer)."""
    if n >= len(prompts):
        return list(prompts)
    return random.Random(seed).sample(list(prompts), n)


@dataclass
class Answer:
    model: str
    text: str = ""
    cost: Decimal | None = None
    latency_ms: float = 0.0
    status: int = 0
    served: str | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == 200 and self.error is None


class GatewayClient:
    """Sends replays and judge calls to a spendgate gateway (a URL, or an in-process
    transport from library mode) as the `spendgate-eval` feature."""

    def __init__(self, http: Any, api_key: str | None = None, use_case: str = "bakeoff") -> None:
        self.http = http
        self.spent: dict[str, Decimal] = {"answers": Decimal(0), "judge": Decimal(0)}
        """What the bake-off's own calls cost, as the gateway priced them."""
        self.unpriced = 0
        self.headers = {
            "x-spendgate-feature": EVAL_FEATURE,
            "x-spendgate-use-case": use_case,
            "x-spendgate-cache": "bypass",
        }
        if api_key:
            self.headers["authorization"] = f"Bearer {api_key}"

    async def ask(self, api: str, body: Mapping[str, Any], model: str) -> Answer:
        payload = {**body, "model": model, "stream": False}
        payload.pop("stream_options", None)
        dialect = dialect_for(api)
        path = dialect.path
        headers = {**self.headers, "x-spendgate-route": model, **dialect.client_headers}
        payload = dialect.client_request(payload)
        started = time.perf_counter()
        try:
            r = await self.http.post(path, json=payload, headers=headers)
        except Exception as exc:  # a transport failure is one failed answer, not the run
            return Answer(model, error=f"{type(exc).__name__}: {exc}")
        latency = (time.perf_counter() - started) * 1000
        cost = self._cost(r, "answers")
        served = r.headers.get("x-spendgate-model")
        if r.status_code != 200:
            return Answer(model, cost=cost, latency_ms=latency, status=r.status_code,
                          served=served, error=r.text[:300])  # fmt: skip
        return Answer(model, answer_text(r.json()), cost, latency, 200, served)

    def _cost(self, response: Any, kind: str) -> Decimal | None:
        try:
            cost = Decimal(response.headers.get("x-spendgate-cost-usd", ""))
        except InvalidOperation:
            self.unpriced += 1
            return None
        self.spent[kind] += cost
        return cost

    async def send(self, body: dict[str, Any]) -> dict[str, Any] | None:
        """The judge's way through the gateway (a `judge.Send`)."""
        headers = {**self.headers, "x-spendgate-use-case": "judge"}
        headers["x-spendgate-route"] = str(body.get("model"))
        try:
            r = await self.http.post("/v1/chat/completions", json=body, headers=headers)
        except Exception:
            return None
        self._cost(r, "judge")
        if r.status_code != 200:
            return None
        data = r.json()
        return data if isinstance(data, dict) else None


@dataclass
class Replay:
    """Everything the bake-off saw: answers[model][i] and grades[model][i] per prompt."""

    prompts: list[LoggedPrompt]
    requested: str
    answers: dict[str, list[Answer]] = field(default_factory=dict)
    grades: dict[str, list[float | None]] = field(default_factory=dict)


async def run_bakeoff(
    client: GatewayClient,
    prompts: Sequence[LoggedPrompt],
    requested: str,
    candidates: Sequence[str],
    judge: Judge,
    concurrency: int = 4,
) -> Replay:
    """Answer every prompt with the requested model and each candidate, then grade."""
    models = [requested, *[m for m in candidates if m != requested]]
    replay = Replay(list(prompts), requested)
    gate = asyncio.Semaphore(max(1, concurrency))

    async def ask(p: LoggedPrompt, model: str) -> Answer:
        async with gate:
            return await client.ask(p.api, p.body, model)

    for model in models:
        replay.answers[model] = list(await asyncio.gather(*(ask(p, model) for p in prompts)))

    async def grade(i: int, model: str) -> float | None:
        ans, ref = replay.answers[model][i], replay.answers[requested][i]
        if not ans.ok:
            return 0.0 if ref.ok else None  # a failed answer is a wrong one
        if model == requested and not judge.absolute:
            return 1.0
        async with gate:
            return await judge.grade(
                prompt_text(prompts[i].body), ans.text, ref.text if ref.ok else None
            )

    for model in models:
        replay.grades[model] = list(
            await asyncio.gather(*(grade(i, model) for i in range(len(prompts))))
        )
    return replay


@dataclass
class ModelReport:
    model: str
    n: int
    """Prompts graded for this model and the requested one."""
    quality: float | None
    low: float | None
    high: float | None
    """95% bootstrap interval of the mean quality."""
    ratio: float | None
    """Mean quality / the requested model's, on the same prompts."""
    bound: float | None
    """The `confidence` quantile of mean(q − target × q_requested): ≥ 0 qualifies."""
    qualifies: bool
    cost_usd: Decimal | None
    """Mean cost per call; None when some call was unpriced."""
    latency_ms: float | None
    """Median latency."""
    errors: int = 0


def _bootstrap(values: np.ndarray, reps: int, rng: np.random.Generator) -> np.ndarray:
    idx = rng.integers(0, len(values), size=(reps, len(values)))
    means: np.ndarray = values[idx].mean(axis=1)
    return means


def summarize(
    requested: str,
    grades: Mapping[str, Sequence[float | None]],
    costs: Mapping[str, Sequence[Decimal | None]],
    latencies: Mapping[str, Sequence[float]] | None = None,
    target: float = 0.95,
    min_prompts: int = 20,
    seed: int = 0,
    reps: int = 2000,
    confidence: float = 0.5,
) -> tuple[list[ModelReport], str]:
    """Per-model reports (cheapest first) and the picked model. A candidate needs at least
    `min_prompts` prompts graded alongside the requested model to qualify."""
    rng = np.random.default_rng(seed)
    ref = grades[requested]
    reports = []
    for model, got in grades.items():
        pairs = [(g, r) for g, r in zip(got, ref, strict=True) if g is not None and r is not None]
        cost_list = list(costs.get(model, ()))
        priced = [c for c in cost_list if c is not None]
        cost = (
            sum(priced, Decimal(0)) / len(priced)
            if priced and len(priced) == len(cost_list)
            else None
        )
        lat = list((latencies or {}).get(model, ()))
        latency = statistics.median(lat) if lat else None
        errors = sum(1 for g in got if g is None)
        if not pairs:
            reports.append(
                ModelReport(
                    model=model,
                    n=0,
                    quality=None,
                    low=None,
                    high=None,
                    ratio=None,
                    bound=None,
                    qualifies=model == requested,
                    cost_usd=cost,
                    latency_ms=latency,
                    errors=errors,
                )
            )
            continue
        q = np.asarray([p[0] for p in pairs], dtype=float)
        r = np.asarray([p[1] for p in pairs], dtype=float)
        means = _bootstrap(q, reps, rng)
        diff = q - target * r
        idx = rng.integers(0, len(q), size=(reps, len(q)))
        bound = float(np.quantile(diff[idx].mean(axis=1), 1.0 - confidence))
        ratio = float(q.mean() / r.mean()) if r.mean() > 0 else None
        qualifies = model == requested or (len(q) >= min_prompts and bound >= 0)
        reports.append(
            ModelReport(
                model=model,
                n=len(q),
                quality=round(float(q.mean()), 4),
                low=round(float(np.quantile(means, 0.025)), 4),
                high=round(float(np.quantile(means, 0.975)), 4),
                ratio=None if ratio is None else round(ratio, 4),
                bound=round(bound, 4),
                qualifies=qualifies,
                cost_usd=cost,
                latency_ms=None if latency is None else round(latency, 1),
                errors=errors,
            )
        )
    req_cost = next(rep.cost_usd for rep in reports if rep.model == requested)

    def price(rep: ModelReport) -> Decimal:
        if rep.cost_usd is not None:
            return rep.cost_usd
        # unpriced: never cheaper than the requested model
        return req_cost if req_cost is not None else Decimal(0)

    reports.sort(key=lambda rep: (price(rep), rep.model != requested, rep.model))
    picked = next(rep.model for rep in reports if rep.qualifies)
    return reports, picked


def snippet(feature: str, requested: str, picked: str, evidence: str = "") -> str:
    """The routing config that applies the pick (merge into the `routing:` section)."""
    note = f"      # {evidence}\n" if evidence else ""
    q = json.dumps  # a JSON string is a YAML scalar, whatever the name holds
    if picked == requested:
        return (
            f"# spendgate bakeoff: no candidate kept ≥ target quality for feature {feature!r};\n"
            f"# keep serving {requested} (no routing change).\n"
        )
    return (
        f"# spendgate bakeoff for feature {feature!r}: serve {picked} where {requested}\n"
        "# was asked. Works as it is; to merge into an existing routing section, keep your\n"
        f"# own strong/weak tiers, add the rule before broader ones, and make sure {requested}\n"
        "# is in routing.apply_to.\n"
        "routing:\n"
        "  enabled: true\n"
        f"  strong: {q(requested)}\n"
        f"  weak: {q(picked)}\n"
        f"  apply_to: [{q(requested)}]\n"
        "  rules:\n"
        f"    - name: {q('bakeoff-' + feature)}\n"
        f"{note}"
        f"      when: {{feature: {q(feature)}, model: {q(requested)}}}\n"
        f"      route: {q(picked)}\n"
    )


class BakeoffError(ValueError):
    """A bake-off that cannot run, worded for the person at the terminal."""


def _read_logged(url: str, feature: str) -> list[LoggedPrompt]:
    from spendgate.ledger import open_ledger

    try:
        store = open_ledger(url, create=False, read_only=True)
    except (OSError, ValueError) as exc:
        raise BakeoffError(f"cannot open the ledger {url}: {exc}") from None
    try:
        prompts = logged_prompts(store, feature)
    finally:
        store.close()
    if not prompts:
        raise BakeoffError(
            f"no logged prompts for feature {feature!r} in {url}: turn on ledger.log_prompts "
            "(true, or a list of features) and let the feature's traffic through first"
        )
    return prompts


def _http_client(
    settings: Any, gateway_url: str | None
) -> tuple[httpx2.AsyncClient, list[Callable[[], Awaitable[None]]]]:
    """A client of the running gateway at `gateway_url`, else of one built in-process from
    `settings`; and what to close afterwards, client first."""
    import httpx2

    if gateway_url is not None:
        http = httpx2.AsyncClient(base_url=gateway_url.rstrip("/"), timeout=300)
        return http, [http.aclose]
    from spendgate.library import AsyncSpendgateTransport

    transport = AsyncSpendgateTransport(settings)
    http = httpx2.AsyncClient(transport=transport, base_url="http://spendgate", timeout=300)
    return http, [http.aclose, transport.aclose]


async def run_from_cli(
    settings: Any,
    *,
    feature: str,
    candidates: Sequence[str],
    n: int,
    ledger_url: str | None = None,
    gateway_url: str | None = None,
    api_key: str | None = None,
    requested: str | None = None,
    judge_kind: str = "pairwise",
    judge_model: str | None = None,
    fields: Sequence[str] = (),
    target: float = 0.95,
    confidence: float = 0.5,
    seed: int = 0,
    concurrency: int = 4,
) -> dict[str, Any]:
    """`spendgate bakeoff`: read the logged prompts, replay them through a gateway (a URL,
    else one built in-process from `settings`), grade, summarize; a JSON-able result."""
    from collections import Counter

    url = ledger_url or settings.storage.ledger
    prompts = _read_logged(url, feature)
    if gateway_url is None and not settings.deployments:
        raise BakeoffError("give --config with deployments, or --gateway URL of a running gateway")
    requested = requested or Counter(p.requested_model for p in prompts).most_common(1)[0][0]
    chosen = sample_prompts(prompts, n, seed)
    http, closers = _http_client(settings, gateway_url)
    try:
        from spendgate.routing.judge import make_judge

        client = GatewayClient(http, api_key)
        judge = make_judge(judge_kind, judge_model or requested, client.send, fields)
        replay = await run_bakeoff(client, chosen, requested, candidates, judge, concurrency)
    finally:
        for close in closers:
            await close()
    costs = {m: [a.cost for a in answers] for m, answers in replay.answers.items()}
    latencies = {
        m: [a.latency_ms for a in answers if a.ok] for m, answers in replay.answers.items()
    }
    reports, picked = summarize(
        requested, replay.grades, costs, latencies, target=target, seed=seed,
        confidence=confidence,
    )  # fmt: skip
    pick = next(r for r in reports if r.model == picked)
    evidence = (
        f"{pick.n} prompts, quality {pick.ratio:.1%} of {requested}'s ({judge_kind} judge)"
        if pick.ratio is not None
        else ""
    )
    failures = {m: sum(1 for a in answers if not a.ok) for m, answers in replay.answers.items()}
    return {
        "feature": feature,
        "logged": len(prompts),
        "sampled": len(chosen),
        "requested": requested,
        "judge": judge_kind
        if judge_kind in ("exact", "json")
        else (f"{judge_kind} by {judge_model or requested}"),
        "target": target,
        "confidence": confidence,
        "models": [
            {**r.__dict__, "cost_usd": None if r.cost_usd is None else format(r.cost_usd, "f")}
            for r in reports
        ],
        "failed_answers": failures,
        "picked": picked,
        "spent_usd": {k: format(v, "f") for k, v in client.spent.items()},
        "unpriced_calls": client.unpriced,
        "snippet": snippet(feature, requested, picked, evidence),
    }
