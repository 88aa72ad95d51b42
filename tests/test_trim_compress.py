"""The compressor and span rewriting as modules (the gateway tests are in test_trim_gateway)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from spendgate.cli import main
from spendgate.tokens import count_text
from spendgate.trim.compress import compress_text, split_units
from spendgate.trim.evaluate import lcs_length, load_rows, retention, rouge_l_recall
from spendgate.trim.spans import compress_body
from trim_text import ANSWER, GOLD, QUESTION, documents

DATA = Path("/work/shared/data/compression")


def count(text: str) -> int:
    return count_text("gpt-4o", text)


@pytest.mark.parametrize("ratio", [1 / 3, 1 / 5])
def test_compress_keeps_answer_within_budget(ratio: float) -> None:
    text = documents()
    res = compress_text(text, QUESTION, ratio, count)
    assert res.tokens_before == count(text)
    assert res.tokens_after == count(res.text)
    assert res.tokens_after <= int(res.tokens_before * ratio)
    assert GOLD in res.text  # the answering sentence survives byte for byte
    assert ANSWER in res.text


def test_code_and_json_are_atomic() -> None:
    code = "```python\ndef f(x):\n    return x * 41 + 1\n```"
    blob = '{"order_id": 98231, "status": "refunded", "amount": "41.99"}'
    text = documents(sentences=4) + "\n\n" + code + "\n\n" + blob + "\n\n" + documents(seed=3)
    units = split_units(text)
    assert any(u.text == code and u.atomic for u in units)
    assert any(u.text == blob and u.atomic for u in units)
    res = compress_text(text, "What is the status of order 98231?", 0.3, count)
    assert blob in res.text
    for u in units:  # whatever was kept is whole
        if u.atomic and u.text[:10] in res.text:
            assert u.text in res.text


def test_short_text_untouched() -> None:
    res = compress_text("Short.", "q?", 0.2, count, min_tokens=50)
    assert res.text == "Short." and res.tokens_after == res.tokens_before


def test_body_marks_tool_roles_and_cached_prefix() -> None:
    ctx = documents()
    body = {
        "model": "claude-sonnet-4",
        "system": [{"type": "text", "text": "<compress>" + ctx + "</compress>"}],
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "old " + ctx, "cache_control": {"type": "ephemeral"}}
                ],
            },
            {
                "role": "assistant",
                "content": [{"type": "tool_use", "id": "t1", "name": "s", "input": {}}],
            },
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": "t1", "content": ctx}],
            },
            {"role": "user", "content": QUESTION + " <compress>" + ctx + "</compress>"},
        ],
    }
    new, report = compress_body(
        body, "anthropic", ratio=0.25, min_tokens=100, roles=["tool", "user"], count=count
    )
    # system: marks removed, text untouched; cached first message untouched
    assert new["system"][0]["text"] == ctx
    assert new["messages"][0] == body["messages"][0]
    # the tool result and the marked span in the last user message were compressed
    assert report.spans == 2
    tool_text = new["messages"][2]["content"][0]["content"]
    assert count(tool_text) <= int(count(ctx) * 0.25) and ANSWER in tool_text
    last = new["messages"][3]["content"]
    assert last.startswith(QUESTION) and "<compress" not in last and ANSWER in last
    assert report.tokens_before == 2 * count(ctx)


def test_lcs_and_rouge() -> None:
    assert lcs_length(["a", "b", "c", "d"], ["a", "x", "b", "y", "d"]) == 3
    assert lcs_length([], ["a"]) == 0
    assert rouge_l_recall("the cat sat", "the dog and cat sat down") == 1.0
    row = {"context": "alpha beta gamma", "answers": ["Beta"]}
    assert retention(row, "x beta y") == 1.0 and retention(row, "alpha") == 0.0


def _write_rows(path: Path, n: int) -> None:
    with path.open("w") as fh:
        for i in range(n):
            fh.write(
                json.dumps(
                    {
                        "id": f"t-{i}",
                        "question": QUESTION,
                        "context": documents(seed=i),
                        "answers": [ANSWER],
                    }
                )
                + "\n"
            )


def test_eval_cli_json(tmp_path: Path) -> None:
    data = tmp_path / "rows.jsonl"
    _write_rows(data, 6)
    result = CliRunner().invoke(main, ["eval", "compress", str(data), "--ratio", "0.2", "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert out["n"] == 6 and out["target_ratio"] == 0.2
    assert 0 < out["achieved_ratio"] <= 0.2
    assert out["answer_retention"] == 1.0
    assert out["ms_per_1k_tokens"] > 0
    assert set(out["baselines"]) == {"keep_first", "question_overlap"}


def test_eval_cli_bad_input(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "q"}\n')
    result = CliRunner().invoke(main, ["eval", "compress", str(bad)])
    assert result.exit_code != 0 and "context" in result.output
    result = CliRunner().invoke(main, ["eval", "compress", str(bad), "--ratio", "2"])
    assert result.exit_code != 0


@pytest.mark.skipif(not (DATA / "nq_open_10docs.jsonl.gz").exists(), reason="no shared data")
def test_beats_question_overlap_on_held_out_nq() -> None:
    """On 150 held-out NQ rows the compressor keeps more answers than the issue's reference
    baseline at the same ratio (the full figures come from `spendgate eval compress`)."""
    from spendgate.trim.evaluate import evaluate, in_split

    rows = [r for r in load_rows(DATA / "nq_open_10docs.jsonl.gz") if in_split(r, "held-out")]
    ours, _first, overlap = evaluate(rows[:150], 0.2)
    assert ours.achieved_ratio <= 0.2
    assert ours.answer_retention > overlap.answer_retention


def test_output_limiter_fields_and_percentile() -> None:
    from spendgate.call import Call, Tags
    from spendgate.trim.config import OutputConfig
    from spendgate.trim.output import OutputLimiter, percentile

    assert percentile([5, 1, 3, 2, 4], 0.99) == 5 and percentile([5, 1, 3, 2, 4], 0.4) == 2
    lim = OutputLimiter(OutputConfig(use_cases=["*"], hints={"classification": "brief"}))
    tags = Tags(use_case="classification")
    o1 = Call("chat", "openai", {"messages": []}, "o3-mini", tags=tags)
    body, d = lim.apply(o1, {"messages": [{"role": "user", "content": "x"}]})
    assert body["max_completion_tokens"] == 16 and "max_tokens" not in body
    assert body["messages"][-1]["role"] == "developer" and d["hint"] == "brief"
    gpt = Call("chat", "openai", {}, "gpt-4o", tags=tags)
    body, d = lim.apply(gpt, {"messages": [], "max_tokens": 100})
    assert body["max_tokens"] == 16 and d["client_max"] == 100
    body, d = lim.apply(gpt, {"messages": [], "max_completion_tokens": 8})
    assert body["max_completion_tokens"] == 8 and d["applied"] is False


def test_history_plan_blocks_and_token_budget() -> None:
    from spendgate.trim.config import HistoryConfig
    from spendgate.trim.history import HistoryWindow

    turns = [[{"role": "user", "content": "word " * 100}] for _ in range(10)]
    win = HistoryWindow(HistoryConfig(keep_last_turns=3, summarize_every=4), None, lambda m, t: 1)
    assert win.plan("gpt-4o", turns) == 4  # 7 older turns → one whole block of 4
    assert win.plan("gpt-4o", turns[:6]) == 0  # 3 older turns: not a block yet

    def tokens(model: str, text: str) -> int:
        return count_text(model, text)

    budget = HistoryWindow(
        HistoryConfig(keep_last_turns=9, summarize_every=2, max_tokens=250), None, tokens
    )
    # each turn is ~100 tokens: only 2 fit the budget, so 8 older turns are summarized
    assert budget.plan("gpt-4o", turns) == 8
