"""Hybrid search over short documents (tool definitions, skills): SQLite FTS5 BM25 always, MiniLM cosine
when an embedder is present, fused into one score.

Why each piece is there (bench/context/SEARCH.md has the measured effect of each on MetaTool):
- Names are split into words (`get_weather_forecast`, `github__list_issues`, `ResearchHelper`): BM25 and
  the model both read words, not identifiers.
- A document is embedded three ways: whole, clause by clause (a tool that does five things matches a
  query about one of them through that clause's own vector), and its name alone.
- A small prior favours broad tools (close to the catalog's centre of mass): a query about one facet of a
  general-purpose tool otherwise loses to a narrow tool that shares a word with it.
- BM25 (max-normalized per query) is blended in with a small weight: exact names and rare words.
The index is rebuilt on `replace` (the catalog changes on list_changed); vectors are reused by content
hash from the previous build, then from the EmbeddingCache (memory, then the state DB), so a rebuild embeds
only what is new. A query's vector is cached in memory (LRU): embedding it is most of a search's cost.
"""

from __future__ import annotations

import re
import sqlite3
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from fmos_mcp.context.embeddings import Embedder, EmbeddingCache, sha256, similarities

if TYPE_CHECKING:
    from fmos_mcp.state.db import StateDB

# ----------------------------------------------------------------------------- text


_SEPARATORS = re.compile(r"[^0-9A-Za-z\u00c0-\uffff]+")
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")
_CLAUSES = re.compile(r"[.;:!?](?:\s+|$)|,\s+|\s+and\s+|\n+")
MAX_QUERY_CHARS = 2000
MAX_QUERY_TERMS = 64

# Function words and the politeness of a request ("can you help me find..."): they match every tool.
_STOPWORDS = """a an the and or of to in on for with by from at as is are was were be been being it its this that these
    those i me my we our you your he she they them their what which who whom how when where why can could would
    should will shall do does did done have has had having not no yes so if then than too very just also any
    some all more most such into about over under up down out please help need want like get find give tell
    show make let know use using looking look there here im ive id ill its dont cant"""
STOPWORDS = frozenset(_STOPWORDS.split())


def words(name: str) -> list[str]:
    """The words of an identifier or a phrase: separators and camelCase boundaries split it."""
    out: list[str] = []
    for part in _SEPARATORS.split(name):
        out.extend(w for w in _CAMEL.split(part) if w)
    return out


def name_text(name: str) -> str:
    """Words of a name, plus each compound as written, so `ResearchHelper` and `research helper` both match."""
    parts = [p for p in _SEPARATORS.split(name) if p]
    compounds = [p.lower() for p in parts if len(_CAMEL.split(p)) > 1]
    return " ".join([*words(name), *compounds])


def query_terms(query: str) -> list[str]:
    """Lowercased content words of a query, deduplicated; function words only when nothing else is left."""
    raw = [w.lower() for w in words(name_text(query.replace("'", "")))]
    content = [w for w in raw if w not in STOPWORDS]
    return list(dict.fromkeys(content or raw))[:MAX_QUERY_TERMS]


def clauses(text: str, limit: int = 8) -> list[str]:
    """The clauses of a description that say something (two words or more), at most `limit`."""
    parts = (p.strip() for p in _CLAUSES.split(text))
    return [p[:300] for p in parts if len(p.split()) >= 2][:limit]


def check_query(query: str, k: int) -> str:
    if not isinstance(query, str) or not query.strip():
        raise ValueError("query must be a non-empty string")
    if isinstance(k, bool) or not isinstance(k, int) or k <= 0:
        raise ValueError(f"k must be a positive integer, not {k!r}")
    return query.strip()[:MAX_QUERY_CHARS]


# ----------------------------------------------------------------------------- documents and weights


@dataclass(frozen=True, slots=True)
class Doc:
    id: str
    text: str
    group: str = ""
    title: str = ""

    @property
    def head(self) -> str:
        """What the document is called, in words."""
        name = " ".join(words(self.id))
        return f"{name} - {self.title}" if self.title and self.title != self.id else name


@dataclass(frozen=True, slots=True)
class Hit:
    id: str
    score: float
    group: str
    title: str


@dataclass(frozen=True, slots=True)
class GroupHit:
    group: str
    score: float
    count: int
    best: str  # the id of its best document for the query (or its first, without a query)


@dataclass(frozen=True)
class Weights:
    """Fusion weights, tuned on half of MetaTool (bench/context/search_quality.py); see SEARCH.md."""

    clause: float = 1.0  # best clause cosine, relative to the whole document's cosine (1.0)
    name: float = 0.3  # cosine with the name alone
    bm25: float = 0.1  # BM25 normalized to [0, 1] per query
    prior: float = 1.0  # breadth prior (cosine with the catalog's mean clause, centered)
    min_prior_docs: int = 16  # a catalog this small has no meaningful centre: no prior
    # BM25 column weights: name, title, text, group
    fields: tuple[float, float, float, float] = (3.0, 2.0, 1.0, 1.0)
    bm25_depth: int = 200  # BM25 candidates fused per query


# ----------------------------------------------------------------------------- one build


def _fts(docs: Sequence[Doc]) -> sqlite3.Connection:
    conn = sqlite3.connect(":memory:", check_same_thread=False)
    conn.execute(
        "CREATE VIRTUAL TABLE docs USING fts5(name, title, text, grp, gkey UNINDEXED, tokenize='porter unicode61')"
    )
    conn.executemany(
        "INSERT INTO docs (rowid, name, title, text, grp, gkey) VALUES (?, ?, ?, ?, ?, ?)",
        [(i, name_text(d.id), d.title, d.text, name_text(d.group), d.group) for i, d in enumerate(docs)],
    )
    return conn


def _views(doc: Doc) -> tuple[str, list[str], str]:
    """The texts embedded for a document: whole, clauses (each under the document's name), name."""
    head = doc.head
    whole = f"{head}: {doc.text}" if doc.text else head
    parts = clauses(doc.text)
    return whole, [f"{head}: {p}" for p in parts] if len(parts) > 1 else [], head


@dataclass
class _Vectors:
    whole: np.ndarray  # (n, dim), normalized
    clause: np.ndarray  # (m, dim): each document's clauses, contiguous, at least one row per document
    starts: np.ndarray  # (n,) first clause row of each document
    name: np.ndarray  # (n, dim)
    prior: np.ndarray  # (n,)
    by_hash: dict[str, np.ndarray]  # raw vectors of this build by text hash, reused by the next


@dataclass
class _Build:
    docs: list[Doc]
    fts: sqlite3.Connection
    vectors: _Vectors | None
    groups: dict[str, np.ndarray] = field(default_factory=dict)  # group -> rows
    lock: threading.Lock = field(default_factory=threading.Lock)

    def bm25(self, terms: list[str], weights: Weights, limit: int, group: str | None) -> dict[int, float]:
        if not terms or not self.docs:
            return {}
        match = " OR ".join(f'"{t}"' for t in terms)
        where, params = "docs MATCH ?", [match]
        if group is not None:
            where, params = where + " AND gkey = ?", [match, group]
        columns = ", ".join(str(w) for w in weights.fields)
        sql = f"SELECT rowid, -bm25(docs, {columns}) FROM docs WHERE {where} ORDER BY rank LIMIT {int(limit)}"
        with self.lock:
            return {int(row): float(score) for row, score in self.fts.execute(sql, params)}


def _embed_views(docs: Sequence[Doc], cache: EmbeddingCache, previous: dict[str, np.ndarray],
                 weights: Weights) -> _Vectors:
    views = [_views(d) for d in docs]
    texts = list(dict.fromkeys(t for whole, parts, head in views for t in (whole, *parts, head)))
    keys = [sha256(t) for t in texts]
    known = {k: previous[k] for k in keys if k in previous}
    todo = [t for t, k in zip(texts, keys, strict=True) if k not in known]
    if todo:
        known.update(zip((sha256(t) for t in todo), cache.vectors(todo), strict=True))

    def vec(text: str) -> np.ndarray:
        return known[sha256(text)]

    whole = np.stack([vec(w) for w, _, _ in views])
    name = np.stack([vec(h) for _, _, h in views])
    rows: list[np.ndarray] = []
    starts = np.zeros(len(docs), dtype=np.int64)
    for i, (w, parts, _) in enumerate(views):
        starts[i] = len(rows)
        rows.extend(vec(p) for p in parts or [w])
    clause = np.stack(rows)
    # Breadth prior: cosine with the mean clause of the catalog, centered so it only reorders.
    prior = whole @ clause.mean(axis=0) if len(docs) >= weights.min_prior_docs else np.zeros(len(docs))
    prior = (prior - prior.mean()).astype(np.float32)
    return _Vectors(whole, clause, starts, name, prior, known)


# ----------------------------------------------------------------------------- the index


class HybridIndex:
    """Search over a replaceable set of documents. Thread-safe: `replace` builds aside and swaps; searches
    read whichever build is current."""

    def __init__(self, embedder: Embedder | None = None, *, db: StateDB | None = None,
                 cache: EmbeddingCache | None = None, weights: Weights | None = None,
                 queries: EmbeddingCache | None = None) -> None:
        """`embedder` None: BM25 only. `db`: persist document vectors there. `cache`: share one document
        vector cache between indexes; `queries`: share the memory-only LRU of query vectors (2,048 by default)."""
        if cache is None and embedder is not None:
            cache = EmbeddingCache(embedder, db)
        self.cache = cache
        self.weights = weights or Weights()
        if queries is None and cache is not None:
            queries = EmbeddingCache(cache.embedder, None, max_memory=2048, shared=False)
        self._queries = queries
        self._build = _Build([], _fts([]), None)
        self._replace_lock = threading.Lock()

    @property
    def semantic(self) -> bool:
        return self.cache is not None

    def __len__(self) -> int:
        return len(self._build.docs)

    @property
    def embedded(self) -> int:
        """Texts the model embedded for documents so far (cache misses)."""
        return self.cache.computed if self.cache is not None else 0

    def replace(self, docs: Iterable[Doc]) -> None:
        """Index exactly these documents (ids must be unique; the last of a duplicate wins)."""
        unique = list({d.id: d for d in docs}.values())
        with self._replace_lock:
            previous = self._build.vectors.by_hash if self._build.vectors is not None else {}
            vectors = _embed_views(unique, self.cache, previous, self.weights) if self.cache and unique else None
            groups: dict[str, list[int]] = {}
            for row, doc in enumerate(unique):
                groups.setdefault(doc.group, []).append(row)
            build = _Build(unique, _fts(unique), vectors, {g: np.array(r) for g, r in groups.items()})
            # The old build's in-memory database goes with its last reader (a search may still hold it).
            self._build = build

    def warm(self, queries: Sequence[str]) -> None:
        """Embed queries ahead of time in batches (known frequent queries, benchmarks)."""
        if self._queries is not None and queries:
            self._queries.vectors([check_query(q, 1) for q in queries], persist=False)

    def search(self, query: str, k: int = 10, group: str | None = None) -> list[Hit]:
        """The best k documents for a query, best first; within one group if `group` is given."""
        query = check_query(query, k)
        build = self._build
        scores = self._scores(build, query, group)
        if scores is None:
            return []
        return [self._hit(build, row, score) for row, score in _top(scores, k)]

    def groups(self, query: str | None = None, k: int | None = None) -> list[GroupHit]:
        """Groups (servers) with their size; with a query, ranked by their best document's score."""
        if k is not None and (isinstance(k, bool) or not isinstance(k, int) or k <= 0):
            raise ValueError(f"k must be a positive integer, not {k!r}")
        build = self._build
        if query is None:
            out = [GroupHit(g, 0.0, len(rows), build.docs[int(rows[0])].id) for g, rows in build.groups.items()]
            return sorted(out, key=lambda h: h.group)[:k]
        query = check_query(query, k or 1)
        scores = self._scores(build, query, None)
        if scores is None:
            return []
        out = []
        for name, rows in build.groups.items():
            best = int(rows[np.argmax(scores[rows])])
            if np.isfinite(scores[best]):
                out.append(GroupHit(name, float(scores[best]), len(rows), build.docs[best].id))
        return sorted(out, key=lambda h: -h.score)[:k]

    # ------------------------------------------------------------------ scoring

    def _scores(self, build: _Build, query: str, group: str | None) -> np.ndarray | None:
        """One score per document (-inf: not a candidate), or None when nothing can match."""
        n = len(build.docs)
        if n == 0 or (group is not None and group not in build.groups):
            return None
        w = self.weights
        bm = build.bm25(query_terms(query), w, w.bm25_depth, group)
        if build.vectors is None or self._queries is None:
            if not bm:
                return None
            scores = np.full(n, -np.inf)
            scores[list(bm)] = list(bm.values())
            return scores
        scores = self._semantic(build.vectors, self._queries.vector(query))
        if bm:
            top = max(bm.values())
            if top > 0:
                scores[list(bm)] += w.bm25 * np.array(list(bm.values())) / top
        if group is not None:
            masked = np.full(n, -np.inf)
            rows = build.groups[group]
            masked[rows] = scores[rows]
            scores = masked
        return scores

    def _semantic(self, v: _Vectors, q: np.ndarray) -> np.ndarray:
        w = self.weights
        best_clause = np.maximum.reduceat(similarities(v.clause, q), v.starts)
        whole, name = similarities(v.whole, q), similarities(v.name, q)
        sem = (whole + w.clause * best_clause + w.name * name) / (1 + w.clause + w.name)
        return (sem + w.prior * v.prior).astype(np.float64)

    @staticmethod
    def _hit(build: _Build, row: int, score: float) -> Hit:
        doc = build.docs[row]
        return Hit(doc.id, round(float(score), 6), doc.group, doc.title)


def _top(scores: np.ndarray, k: int) -> list[tuple[int, float]]:
    finite = np.flatnonzero(np.isfinite(scores))
    if finite.size == 0:
        return []
    if finite.size > k:
        part = np.argpartition(-scores[finite], k - 1)[:k]
        finite = finite[part]
    order = finite[np.argsort(-scores[finite], kind="stable")]
    return [(int(r), float(scores[r])) for r in order]
