"""The trim stage end to end: real SDK / HTTP clients → GatewayServer with a `trim:` section →
SimulatedUpstream (which reports the prompt tokens it received), checked in the ledger."""

from __future__ import annotations

import copy
import json
import math
from decimal import Decimal
from typing import Any

import anthropic
import httpx2
import openai
import pytest

from conftest import Harness, expected_cost_nanos, nanos_per_token, unique
from spendgate.config import ConfigError, parse_settings
from spendgate.tokens import count_anthropic_request, count_openai_request
from spendgate.trim.history import split_turns
from spendgate.trim.spans import strip_marks
from trim_text import QUESTION, documents

GPT4O_INPUT = nanos_per_token(2.50)


def _trim(**parts: Any) -> dict[str, Any]:
    return {"trim": parts}


def _stripped(body: dict[str, Any]) -> dict[str, Any]:
    b = copy.deepcopy(body)
    for m in b["messages"]:
        if isinstance(m.get("content"), str):
            m["content"] = strip_marks(m["content"])
    return b


def _decisions(event: Any) -> dict[str, Any]:
    return (event.extra or {}).get("decisions", {}).get("trim", {})


def test_marked_span_compressed_and_saving_credited(make_gateway: Any, http: httpx2.Client) -> None:
    gw: Harness = make_gateway(**_trim(compress={"features": ["rag"], "ratio": 0.25}))
    feature_other = unique("plain")
    body = {
        "model": "gpt-4o",
        "messages": [
            {"role": "system", "content": "Answer from the documents."},
            {"role": "user", "content": f"{QUESTION}\n<compress>{documents()}</compress>"},
        ],
        "max_tokens": 50,
    }
    full = count_openai_request("gpt-4o", _stripped(body))
    r = http.post(gw.v1 + "/chat/completions", json=body, headers={"x-spendgate-feature": "rag"})
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"]
    event = gw.one(r.headers["x-spendgate-request-id"])
    # the upstream saw far fewer prompt tokens than the uncompressed request has
    assert event.input_tokens < full * 0.4
    d = _decisions(event)["compress"]
    assert d["spans"] == 1 and d["tokens_after"] <= d["tokens_before"] * 0.25
    # saving = the tokens the upstream did not receive × gpt-4o's input price (±2 tokens of
    # tokenizer joins at the span's edges)
    saved_tokens = full - event.input_tokens
    assert abs(event.savings["compression"] - saved_tokens * GPT4O_INPUT) <= 2 * GPT4O_INPUT
    assert event.cost_nanos == expected_cost_nanos(event)
    assert event.baseline_nanos == event.cost_nanos + event.savings["compression"]

    # a feature that did not opt in: marks removed, nothing compressed, nothing credited
    r = http.post(
        gw.v1 + "/chat/completions", json=body, headers={"x-spendgate-feature": feature_other}
    )
    assert r.status_code == 200
    plain = gw.one(r.headers["x-spendgate-request-id"])
    assert plain.input_tokens == full
    assert plain.savings == {} and plain.baseline_nanos == plain.cost_nanos


def test_tool_output_compressed_through_openai_sdk_stream(make_gateway: Any) -> None:
    gw: Harness = make_gateway(**_trim(compress={"use_cases": ["agent"], "min_tokens": 200}))
    messages: list[dict[str, Any]] = [
        {"role": "user", "content": QUESTION},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "c1",
                    "type": "function",
                    "function": {"name": "search", "arguments": '{"q": "nobel"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": documents(seed=11)},
    ]
    full = count_openai_request("gpt-4o", {"model": "gpt-4o", "messages": messages})
    with openai.OpenAI(base_url=gw.v1, api_key="x", max_retries=0) as client:
        stream = client.chat.completions.create(
            model="gpt-4o",
            messages=messages,  # type: ignore[arg-type]
            stream=True,
            stream_options={"include_usage": True},
            extra_headers={"x-spendgate-use-case": "agent"},
        )
        chunks = list(stream)
    usage = next(c.usage for c in chunks if c.usage)
    assert usage.prompt_tokens < full * 0.45
    event = gw.events(use_case="agent")[0]
    assert event.input_tokens == usage.prompt_tokens
    assert event.savings["compression"] > 0
    assert abs(event.savings["compression"] - (full - usage.prompt_tokens) * GPT4O_INPUT) <= (
        2 * GPT4O_INPUT
    )


def test_anthropic_tool_result_and_cached_prefix(make_gateway: Any) -> None:
    gw: Harness = make_gateway(**_trim(compress={"features": ["*"], "ratio": 0.3}))
    ctx = documents(seed=5)
    body: dict[str, Any] = {
        "model": "claude-sonnet-4",
        "max_tokens": 100,
        "system": [
            {"type": "text", "text": "Reference:\n" + ctx, "cache_control": {"type": "ephemeral"}}
        ],
        "messages": [
            {"role": "user", "content": QUESTION},
            {
                "role": "assistant",
                "content": [
                    {"type": "tool_use", "id": "tu1", "name": "search", "input": {"q": "nobel"}}
                ],
            },
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": "tu1", "content": ctx}],
            },
        ],
    }
    full = count_anthropic_request("claude-sonnet-4", body)
    with anthropic.Anthropic(base_url=gw.url, api_key="x", max_retries=0) as client:
        raw = client.messages.with_raw_response.create(
            **body, extra_headers={"x-spendgate-feature": unique("claude")}
        )
    msg = raw.parse()
    event = gw.one(raw.headers["x-spendgate-request-id"])
    # the system prompt (a cached prefix) is intact: the cache write covers all of it
    assert msg.usage.cache_creation_input_tokens or msg.usage.cache_read_input_tokens
    d = _decisions(event)["compress"]
    assert d["spans"] == 1  # only the tool result
    assert event.input_tokens < full
    assert event.savings["compression"] > 0
    assert event.baseline_nanos == event.cost_nanos + event.savings["compression"]


def test_shadow_records_without_changing(make_gateway: Any, http: httpx2.Client) -> None:
    gw: Harness = make_gateway(**_trim(compress={"features": ["*"], "shadow": True}))
    body = {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": f"{QUESTION} <compress>{documents()}</compress>"}],
    }
    r = http.post(gw.v1 + "/chat/completions", json=body)
    assert r.status_code == 200
    event = gw.one(r.headers["x-spendgate-request-id"])
    assert event.input_tokens == count_openai_request("gpt-4o-mini", _stripped(body))
    d = _decisions(event)["compress"]
    assert d["shadow"] is True and d["tokens_after"] < d["tokens_before"]
    assert event.savings == {}


def test_output_caps_by_use_case_and_client_value(make_gateway: Any, http: httpx2.Client) -> None:
    gw: Harness = make_gateway(
        **_trim(output={"use_cases": ["classification"], "use_case_caps": {"classification": 12}})
    )
    msg = [{"role": "user", "content": "Classify this ticket: my invoice is wrong, please help"}]
    hdr = {"x-spendgate-use-case": "classification"}
    r = http.post(
        gw.v1 + "/chat/completions", json={"model": "gpt-4o", "messages": msg}, headers=hdr
    )
    assert r.status_code == 200
    assert r.json()["usage"]["completion_tokens"] <= 12
    e = gw.one(r.headers["x-spendgate-request-id"])
    out = _decisions(e)["output"]
    assert out["cap"] == 12 and out["applied"] is True and out["client_max"] is None
    assert out["truncated"] == (r.json()["choices"][0]["finish_reason"] == "length")
    # a client's own smaller limit is kept
    r = http.post(
        gw.v1 + "/chat/completions",
        json={"model": "gpt-4o", "messages": msg, "max_tokens": 5},
        headers=hdr,
    )
    assert r.json()["usage"]["completion_tokens"] <= 5
    assert _decisions(gw.one(r.headers["x-spendgate-request-id"]))["output"]["applied"] is False
    # Anthropic: a larger client max_tokens is lowered
    with anthropic.Anthropic(base_url=gw.url, api_key="x", max_retries=0) as client:
        m = client.messages.create(
            model="claude-sonnet-4",
            max_tokens=4000,
            messages=msg,  # type: ignore[arg-type]
            extra_headers=hdr,
        )
    assert m.usage.output_tokens <= 12


def test_truncations_back_the_cap_off(make_gateway: Any, http: httpx2.Client) -> None:
    gw: Harness = make_gateway(
        **_trim(
            output={
                "features": ["tight"],
                "feature_caps": {"tight": 3},
                "backoff_min_calls": 4,
                "max_truncation_rate": 0.25,
            }
        )
    )
    caps = []
    for i in range(9):
        r = http.post(
            gw.v1 + "/chat/completions",
            json={
                "model": "gpt-4o-mini",
                "messages": [{"role": "user", "content": f"Explain {i}"}],
            },
            headers={"x-spendgate-feature": "tight"},
        )
        assert r.status_code == 200
        caps.append(_decisions(gw.one(r.headers["x-spendgate-request-id"]))["output"]["cap"])
    # the simulated model answers with ≥ 20 tokens, so a 3-token cap truncates every call:
    # after each block of 4 truncated calls the cap doubles
    assert caps == [3] * 4 + [6] * 4 + [12]


def test_learned_cap_from_ledger(make_gateway: Any, http: httpx2.Client) -> None:
    gw: Harness = make_gateway(
        **_trim(
            output={
                "features": ["learn"],
                "learned": {
                    "enabled": True,
                    "min_samples": 6,
                    "refresh_s": 0,
                    "percentile": 0.9,
                    "margin": 1.5,
                    "floor": 1,
                },
            }
        )
    )

    def ask(i: int) -> httpx2.Response:
        r = http.post(
            gw.v1 + "/chat/completions",
            json={
                "model": "gpt-4o-mini",
                "messages": [{"role": "user", "content": f"Describe item {i} briefly"}],
            },
            headers={"x-spendgate-feature": "learn"},
        )
        assert r.status_code == 200
        return r

    for i in range(6):
        r = ask(i)
        assert "output" not in _decisions(gw.one(r.headers["x-spendgate-request-id"]))
    lengths = sorted(e.output_tokens for e in gw.events(feature="learn"))
    expected = math.ceil(lengths[math.ceil(0.9 * len(lengths)) - 1] * 1.5)
    r = ask(99)
    out = _decisions(gw.one(r.headers["x-spendgate-request-id"]))["output"]
    assert out["source"] == "learned" and out["cap"] == expected


def test_json_hint(make_gateway: Any, http: httpx2.Client) -> None:
    gw: Harness = make_gateway(
        **_trim(output={"use_cases": ["extraction"], "hints": {"extraction": "json"}})
    )
    r = http.post(
        gw.v1 + "/chat/completions",
        json={
            "model": "gpt-4o-mini",
            "messages": [{"role": "user", "content": "Extract the city: I live in Oslo"}],
        },
        headers={"x-spendgate-use-case": "extraction"},
    )
    assert r.status_code == 200
    json.loads(r.json()["choices"][0]["message"]["content"])  # JSON mode took effect
    assert _decisions(gw.one(r.headers["x-spendgate-request-id"]))["output"]["hint"] == "json"


def _conversation(turns: int) -> list[dict[str, Any]]:
    msgs: list[dict[str, Any]] = [{"role": "system", "content": "You are a travel planner."}]
    for t in range(turns):
        msgs.append({"role": "user", "content": f"Turn {t}: " + documents(seed=t, n_docs=1)})
        if t == 2:  # a tool call and its result inside one turn
            msgs.append(
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "k1",
                            "type": "function",
                            "function": {"name": "book", "arguments": "{}"},
                        }
                    ],
                }
            )
            msgs.append({"role": "tool", "tool_call_id": "k1", "content": "booked"})
        msgs.append({"role": "assistant", "content": f"Noted turn {t}."})
    msgs.append({"role": "user", "content": "So what is the plan?"})
    return msgs


def test_split_turns_keeps_tool_pairs() -> None:
    head, turns = split_turns(_conversation(4))
    assert len(head) == 1 and len(turns) == 5
    roles = [m["role"] for m in turns[2]]
    assert roles == ["user", "assistant", "tool", "assistant"]


def test_history_window_with_cached_summary(make_gateway: Any, http: httpx2.Client) -> None:
    gw: Harness = make_gateway(
        **_trim(
            history={
                "features": ["planner"],
                "keep_last_turns": 2,
                "summarize_every": 4,
                "summary_model": "gpt-4o-mini",
            }
        )
    )
    hdr = {"x-spendgate-feature": "planner"}

    def send(msgs: list[dict[str, Any]]) -> Any:
        r = http.post(
            gw.v1 + "/chat/completions", json={"model": "gpt-4o", "messages": msgs}, headers=hdr
        )
        assert r.status_code == 200, r.text
        return gw.one(r.headers["x-spendgate-request-id"])

    msgs = _conversation(7)  # 8 turns, keep 2: the 6 older ones → one block of 4 summarized
    full = count_openai_request("gpt-4o", {"model": "gpt-4o", "messages": msgs})
    first = send(msgs)
    h = _decisions(first)["history"]
    assert h["summarized_turns"] == 4 and h["summary_calls"] == 1
    assert first.input_tokens < full
    assert first.savings["history"] > 0
    summaries = [e for e in gw.events(feature="planner") if e.use_case == "history_summary"]
    assert len(summaries) == 1 and summaries[0].requested_model == "gpt-4o-mini"
    assert summaries[0].cost_nanos == expected_cost_nanos(summaries[0])
    # the next call of the same conversation reuses the cached summary: no new summary call
    msgs = [
        *msgs,
        {"role": "assistant", "content": "Plan A."},
        {"role": "user", "content": "And then?"},
    ]
    second = send(msgs)
    h = _decisions(second)["history"]
    assert h["summary_cached"] is True and h["summarized_turns"] == 4
    summaries = [e for e in gw.events(feature="planner") if e.use_case == "history_summary"]
    assert len(summaries) == 1
    # one more turn completes the next block: one incremental summary call (previous summary
    # + the 4 new turns), smaller than summarizing all 8 turns again
    msgs = [
        *msgs,
        {"role": "assistant", "content": "Plan B."},
        {"role": "user", "content": "Finally?"},
    ]
    third = send(msgs)
    h = _decisions(third)["history"]
    assert h["summarized_turns"] == 8 and h["summary_calls"] == 1
    summaries = [e for e in gw.events(feature="planner") if e.use_case == "history_summary"]
    assert len(summaries) == 2
    old_turns_tokens = count_openai_request(
        "gpt-4o-mini", {"model": "gpt-4o-mini", "messages": msgs[1:-6]}
    )
    assert max(e.input_tokens for e in summaries) < old_turns_tokens


def test_opt_out_header(make_gateway: Any, http: httpx2.Client) -> None:
    gw: Harness = make_gateway(**_trim(compress={"features": ["*"]}))
    body = {
        "model": "gpt-4o",
        "messages": [{"role": "user", "content": f"{QUESTION} <compress>{documents()}</compress>"}],
    }
    r = http.post(gw.v1 + "/chat/completions", json=body, headers={"x-spendgate-trim": "off"})
    assert r.status_code == 200
    event = gw.one(r.headers["x-spendgate-request-id"])
    assert event.input_tokens == count_openai_request("gpt-4o", _stripped(body))


@pytest.mark.parametrize(
    ("section", "key"),
    [
        ({"compress": {"ratio": 0}}, "trim.compress.ratio"),
        ({"output": {"use_case_caps": {"classification": 0}}}, "trim.output"),
        ({"history": {"keep_last_turns": 0}}, "trim.history.keep_last_turns"),
        ({"compres": {}}, "trim.compres"),
    ],
)
def test_bad_config_names_the_key(section: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as exc:
        parse_settings({"trim": section})
    assert key in str(exc.value)


def test_history_anthropic_and_failed_summary(make_gateway: Any) -> None:
    gw: Harness = make_gateway(
        trim={
            "history": {
                "features": ["claude-chat", "broken"],
                "keep_last_turns": 1,
                "summarize_every": 2,
            }
        }
    )
    messages: list[dict[str, Any]] = []
    for t in range(3):
        messages.append({"role": "user", "content": f"Turn {t}: " + documents(seed=t, n_docs=1)})
        messages.append({"role": "assistant", "content": f"Noted {t}."})
    messages.append({"role": "user", "content": "Summarize the plan."})
    body = {"model": "claude-sonnet-4", "max_tokens": 64, "system": "Be helpful."}
    with anthropic.Anthropic(base_url=gw.url, api_key="x", max_retries=0) as client:
        raw = client.messages.with_raw_response.create(
            **body,  # type: ignore[arg-type]
            messages=messages,  # type: ignore[arg-type]
            extra_headers={"x-spendgate-feature": "claude-chat"},
        )
    assert raw.parse().content
    event = gw.one(raw.headers["x-spendgate-request-id"])
    h = _decisions(event)["history"]
    assert h["summarized_turns"] == 2 and h["summary_calls"] == 1
    assert event.savings["history"] > 0
    full = count_anthropic_request("claude-sonnet-4", {**body, "messages": messages})
    assert event.input_tokens < full
    (summary,) = [e for e in gw.events(feature="claude-chat") if e.use_case == "history_summary"]
    assert summary.status == 200 and summary.output_tokens > 0


def test_failed_summary_leaves_history_alone(make_gateway: Any, http: httpx2.Client) -> None:
    gw: Harness = make_gateway(
        trim={
            "history": {
                "features": ["*"],
                "keep_last_turns": 1,
                "summarize_every": 2,
                "summary_model": "no-such-model",
            }
        }
    )
    msgs = _conversation(3)
    r = http.post(gw.v1 + "/chat/completions", json={"model": "gpt-4o", "messages": msgs})
    assert r.status_code == 200
    event = gw.one(r.headers["x-spendgate-request-id"])
    assert "error" in _decisions(event)["history"]
    assert event.input_tokens == count_openai_request(
        "gpt-4o", {"model": "gpt-4o", "messages": msgs}
    )
    assert event.savings == {}


def test_output_cap_shadow_measures_would_be_saving(make_gateway: Any, http: httpx2.Client) -> None:
    gw: Harness = make_gateway(
        trim={"output": {"features": ["*"], "shadow": True, "feature_caps": {"essay": 5}}}
    )
    r = http.post(
        gw.v1 + "/chat/completions",
        json={"model": "gpt-4o", "messages": [{"role": "user", "content": "Write about tea"}]},
        headers={"x-spendgate-feature": "essay"},
    )
    assert r.status_code == 200
    event = gw.one(r.headers["x-spendgate-request-id"])
    out = _decisions(event)["output"]
    produced = r.json()["usage"]["completion_tokens"]
    assert produced > 5  # the request went upstream uncapped
    assert out["shadow"] is True and out["would_truncate"] is True
    assert out["would_save_tokens"] == produced - 5
    nanos = Decimal(out["would_save_usd"]) * 1_000_000_000
    assert nanos == (produced - 5) * nanos_per_token(10.00)
    assert event.savings == {}  # a would-be figure, never credited
