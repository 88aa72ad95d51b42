"""Question-aware extractive compression of long context (documents, tool output, files).

Why extractive, sentence-level: the gateway must never invent text, must keep code, JSON,
numbers and names byte-exact, and must run inline (≤ 10 ms per 1k tokens on one core, where
a small LM manages ~200 tok/s). So we choose whole units — sentences of prose, and code
blocks / JSON blobs as atomic units — and keep the best ones, in their original order, until
a token budget measured with the target model's own tokenizer is spent.

A unit's score combines:
- relevance to the question: BM25 with a term weight that is the word's self-information
  (−log₂ p from `wordfreq`, so rare words count more than common ones without needing a
  corpus), over light stems (prefix of 6 chars: "presidents"/"president" meet);
- the relevance of its block (paragraph / document, title included): the answer to a
  question is usually in the passage that matches it as a whole, even when the answering
  sentence itself repeats few question words;
- an answer-type cue: a "who"/"where" question favours sentences with proper names not in
  the question, "when" favours years and dates, "how many/much" favours numbers;
- a small bonus for the sentences right after a strong one (continuations that say "he",
  "it" and carry the answer).

Without a question (a pasted file with no question) the score is information content alone.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache

from spendgate.stopwords import FUNCTION_WORDS

__all__ = [
    "CompressResult",
    "Unit",
    "compress_text",
    "keep_first",
    "question_overlap",
    "split_units",
    "warm_up",
]

LINE_BLOCKS = 8
"""A paragraph with more lines than this has one block per line."""
_WORD = re.compile(r"[^\W_]+(?:['’.-][^\W_]+)*", re.UNICODE)
_FENCE = re.compile(r"```.*?(?:```|\Z)", re.DOTALL)
_SENT_END = re.compile(r"(?<=[.!?…])[\"')\]]*\s+(?=[\"'(\[]?[A-Z0-9À-Ý])")
_YEAR = re.compile(r"\b(1[0-9]{3}|20[0-9]{2})\b")
_NUM = re.compile(r"\d")
_MONTHS = frozenset({
    "january", "february", "march", "april", "may", "june", "july", "august", "september",
    "october", "november", "december",
})  # fmt: skip
_STOP = FUNCTION_WORDS | {
    "but", "not", "no", "also", "has", "have", "had", "him", "them", "whom", "whose",
    "who's", "what's", "many", "much", "s", "t",
}  # fmt: skip
_WH_PERSON = frozenset({"who", "whom", "whose"})
_WH_PLACE = frozenset({"where"})
_WH_TIME = frozenset({"when", "year", "date", "century", "day", "month"})
_WH_NUMBER = frozenset({"many", "much", "number", "population", "age", "old", "long", "far"})


@dataclass(slots=True)
class Unit:
    """One selectable piece of text: a sentence of prose, or an atomic code/JSON block."""

    text: str
    block: int
    """Index of the paragraph/document it belongs to."""
    sep: str
    """What separated it from the previous unit in the original ("" for the first)."""
    atomic: bool = False
    """Code or JSON: kept whole or dropped whole, never cut."""
    para: int = -1
    """Index of the paragraph (blank-line separated) it belongs to."""
    tokens: int = 0
    score: float = 0.0


@dataclass(slots=True)
class CompressResult:
    text: str
    tokens_before: int
    tokens_after: int
    units_total: int
    units_kept: int
    kept: list[int] = field(default_factory=list)

    @property
    def ratio(self) -> float:
        return self.tokens_after / self.tokens_before if self.tokens_before else 1.0


# ---- splitting ----------------------------------------------------------------------------


def _looks_json(block: str) -> bool:
    s = block.strip()
    return len(s) > 1 and s[0] in "[{" and s[-1] in "]}"


def split_units(text: str) -> list[Unit]:
    """Sentences of prose and whole code/JSON blocks, with the separators needed to put the
    kept ones back together in their original layout."""
    units: list[Unit] = []
    block = -1
    pos = 0
    pieces: list[tuple[str, bool]] = []
    for m in _FENCE.finditer(text):
        if m.start() > pos:
            pieces.append((text[pos : m.start()], False))
        pieces.append((m.group(0), True))
        pos = m.end()
    if pos < len(text):
        pieces.append((text[pos:], False))
    pending_sep = ""
    for piece, fenced in pieces:
        if fenced:
            block += 1
            units.append(
                Unit(piece, block, pending_sep or ("\n" if units else ""), atomic=True, para=block)
            )
            pending_sep = "\n"
            continue
        for para in re.split(r"(\n\s*\n)", piece):
            if not para.strip():
                if para:
                    pending_sep = para if units else ""
                continue
            block += 1
            para_no = block
            if _looks_json(para):
                units.append(Unit(para.strip(), block, pending_sep, atomic=True, para=para_no))
                pending_sep = "\n\n"
                continue
            first = True
            lines = para.split("\n")
            # A long run of lines with no blank line between them (a transcript, a log, a
            # list) is many small blocks, not one: each line is scored as its own passage.
            line_blocks = sum(1 for ln in lines if ln.strip()) > LINE_BLOCKS
            for line_i, line in enumerate(lines):
                if not line.strip():
                    continue
                if line_blocks and not first:
                    block += 1
                sep_line = pending_sep if first else "\n"
                parts = _SENT_END.split(line.strip())
                for j, sent in enumerate(parts):
                    if not sent:
                        continue
                    sep = sep_line if j == 0 else " "
                    units.append(Unit(sent, block, sep if units else "", para=para_no))
                    first = False
                del line_i
            pending_sep = "\n\n"
    return units


# ---- scoring ------------------------------------------------------------------------------


@lru_cache(maxsize=200_000)
def _info(word: str) -> float:
    """Self-information of a word in bits (rare words carry more), capped for unknowns."""
    try:
        from wordfreq import word_frequency
    except ImportError:  # pragma: no cover - wordfreq is a declared dependency
        return 10.0
    p = word_frequency(word, "en", minimum=1e-8)
    return min(26.0, -math.log2(p))


def warm_up() -> None:
    """Load wordfreq's tables (a few hundred ms) ahead of the first request."""
    _info("the")


def _stem(word: str) -> str:
    return word[:6]


def _terms(text: str) -> list[str]:
    return [w.lower() for w in _WORD.findall(text)]


def _content(words: list[str]) -> list[str]:
    return [w for w in words if w not in _STOP]


def _answer_kind(q_words: list[str]) -> str | None:
    ws = set(q_words)
    if ws & _WH_TIME:
        return "time"
    if ws & _WH_NUMBER and ("how" in ws or "number" in ws or "population" in ws):
        return "number"
    if ws & _WH_PERSON:
        return "person"
    if ws & _WH_PLACE:
        return "place"
    return None


def _has_new_names(text: str, q_stems: set[str]) -> bool:
    """A capitalised word not at sentence start and not in the question: a likely name."""
    words = text.split()
    for w in words[1:]:
        if w[:1].isupper():
            t = _WORD.findall(w)
            if t and _stem(t[0].lower()) not in q_stems and t[0].lower() not in _STOP:
                return True
    return False


def _cue(kind: str | None, text: str, q_stems: set[str]) -> float:
    if kind is None:
        return 0.0
    if kind == "time":
        low = text.lower()
        return 1.0 if _YEAR.search(text) or any(m in low for m in _MONTHS) else 0.0
    if kind == "number":
        return 1.0 if _NUM.search(text) else 0.0
    return 1.0 if _has_new_names(text, q_stems) else 0.0


@dataclass(frozen=True, slots=True)
class Weights:
    """Scoring knobs (tuned on a split of nq_open_10docs; see scripts/tune_compress.py)."""

    k1: float = 1.2
    b: float = 0.5
    block: float = 0.6
    cue: float = 0.25
    follow: float = 0.3
    info: float = 0.02


DEFAULT_WEIGHTS = Weights()


def _bm25(stems: list[str], q_weights: dict[str, float], avg_len: float, w: Weights) -> float:
    if not stems or not q_weights:
        return 0.0
    tf: dict[str, int] = {}
    for s in stems:
        if s in q_weights:
            tf[s] = tf.get(s, 0) + 1
    if not tf:
        return 0.0
    norm = w.k1 * (1 - w.b + w.b * len(stems) / max(avg_len, 1.0))
    return sum(q_weights[s] * f * (w.k1 + 1) / (f + norm) for s, f in tf.items())


def score_units(units: list[Unit], question: str | None, w: Weights = DEFAULT_WEIGHTS) -> None:
    """Fill `unit.score` for every unit (higher = keep first)."""
    q_words = _terms(question or "")
    q_content = _content(q_words)
    q_weights: dict[str, float] = {}
    for word in q_content:
        q_weights[_stem(word)] = max(q_weights.get(_stem(word), 0.0), _info(word))
    q_max = sum(q_weights.values()) or 1.0
    kind = _answer_kind(q_words)
    q_stems = set(q_weights)

    unit_stems: list[list[str]] = []
    block_stems: dict[int, list[str]] = {}
    for u in units:
        stems = [_stem(t) for t in _content(_terms(u.text))]
        unit_stems.append(stems)
        block_stems.setdefault(u.block, []).extend(stems)
    avg_unit = sum(len(s) for s in unit_stems) / max(len(unit_stems), 1)
    avg_block = sum(len(s) for s in block_stems.values()) / max(len(block_stems), 1)
    block_score = {
        b: _bm25(stems, q_weights, avg_block, w) / q_max for b, stems in block_stems.items()
    }
    top_block = max(block_score.values(), default=0.0) or 1.0

    prev = 0.0
    for u, stems in zip(units, unit_stems, strict=True):
        rel = _bm25(stems, q_weights, avg_unit, w) / q_max
        info = 0.0
        if stems:
            info = sum(min(_info(s), 20.0) for s in stems[:40]) / (20.0 * max(len(stems), 1))
        s = (
            rel
            + w.block * block_score[u.block] / top_block
            + w.cue * _cue(kind, u.text, q_stems) * (0.5 + block_score[u.block] / top_block)
            + w.info * info
        )
        if not q_weights:
            s = info
        s += w.follow * prev
        u.score = s
        prev = rel if rel > 0 else prev * 0.5


# ---- selection ----------------------------------------------------------------------------


def _assemble(units: list[Unit], keep: list[int]) -> str:
    out: list[str] = []
    last_block = last_para = -1
    for n, i in enumerate(sorted(keep)):
        u = units[i]
        if n == 0:
            sep = ""
        elif u.para != last_para:
            sep = "\n\n"
        elif u.block != last_block:
            sep = "\n"
        elif i > 0 and sorted(keep)[n - 1] == i - 1:
            sep = u.sep
        else:
            sep = " " if "\n" not in u.sep else "\n"
        out.append(sep + u.text)
        last_block, last_para = u.block, u.para
    return "".join(out)


def _select(
    units: list[Unit],
    order: list[int],
    budget: int,
    count: Callable[[str], int],
) -> list[int]:
    keep: list[int] = []
    used = 0
    for i in order:
        u = units[i]
        cost = u.tokens + 1
        if used + cost > budget:
            continue
        keep.append(i)
        used += cost
    return keep


def compress_text(
    text: str,
    question: str | None,
    ratio: float,
    count: Callable[[str], int],
    *,
    weights: Weights = DEFAULT_WEIGHTS,
    min_tokens: int = 0,
) -> CompressResult:
    """Keep the highest-scoring units of `text` within `ratio` × its tokens (as `count`
    measures them), in their original order. Always returns text at or under the budget."""
    before = count(text)
    budget = max(min_tokens, int(before * ratio))
    if before <= budget:
        return CompressResult(text, before, before, 0, 0)
    units = split_units(text)
    for u in units:
        u.tokens = count(u.text)
    score_units(units, question, weights)
    order = sorted(range(len(units)), key=lambda i: -units[i].score)
    keep = _select(units, order, budget, count)
    out = _assemble(units, keep)
    after = count(out)
    while after > budget and keep:  # separators cost a little more than estimated
        keep.remove(min(keep, key=lambda i: units[i].score))
        out = _assemble(units, keep)
        after = count(out)
    return CompressResult(out, before, after, len(units), len(keep), sorted(keep))


# ---- baselines (for the eval CLI) ---------------------------------------------------------


def keep_first(text: str, ratio: float, count: Callable[[str], int]) -> str:
    """The first `ratio` of the words: what plain truncation would keep."""
    words = text.split(" ")
    before = count(text)
    lo, hi = 0, len(words)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if count(" ".join(words[:mid])) <= before * ratio:
            lo = mid
        else:
            hi = mid - 1
    return " ".join(words[:lo])


def question_overlap(text: str, question: str, ratio: float, count: Callable[[str], int]) -> str:
    """Sentences ranked by how many question words they share (the issue's reference)."""
    units = split_units(text)
    q = set(_content(_terms(question)))
    for u in units:
        u.tokens = count(u.text)
        u.score = len(q & set(_terms(u.text)))
    order = sorted(range(len(units)), key=lambda i: -units[i].score)
    keep = _select(units, order, int(count(text) * ratio), count)
    return _assemble(units, keep)
