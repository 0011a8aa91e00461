"""Long-term memory per tenant: short texts with tags, recalled by hybrid search (FTS5 BM25 + MiniLM cosine).

Rows live in the state DB's `memory` table (deduplicated by the sha256 of the text per tenant), words in its
external-content FTS5 table `memory_fts` (kept in sync by triggers), vectors in `embeddings` keyed by the
same sha256. Every query filters on the tenant: a tenant never sees, recalls or forgets another's memory.
Calls are synchronous and may take a model call: run them in a worker thread.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import numpy as np

from fmos_mcp.context.embeddings import Embedder, EmbeddingCache, sha256, similarities
from fmos_mcp.context.search import check_query, query_terms

if TYPE_CHECKING:
    from fmos_mcp.state.db import StateDB

MAX_TEXT_CHARS = 20_000
MAX_TAGS = 32
BM25_WEIGHT = 0.1  # as in tool search: BM25 normalized to [0, 1] per query, next to a cosine
BM25_DEPTH = 200


def _check_tenant(tenant: str) -> str:
    if not isinstance(tenant, str) or not tenant:
        raise ValueError("tenant must be a non-empty string")
    return tenant


def _check_tags(tags: Iterable[str] | None) -> list[str]:
    if isinstance(tags, str):
        raise ValueError("tags must be a list of strings, not one string")
    out = list(dict.fromkeys(t.strip() for t in (tags or ()) if isinstance(t, str) and t.strip()))
    if len(out) > MAX_TAGS:
        raise ValueError(f"at most {MAX_TAGS} tags")
    return out


class MemoryStore:
    def __init__(self, db: StateDB, embedder: Embedder | None = None, *, cache: EmbeddingCache | None = None,
                 queries: EmbeddingCache | None = None) -> None:
        self.db = db
        if cache is None and embedder is not None:
            cache = EmbeddingCache(embedder, db)
        self.cache = cache
        if queries is None and cache is not None:
            queries = EmbeddingCache(cache.embedder, None, max_memory=1024, shared=False)
        self._queries = queries
        # Per tenant: (a fingerprint of its rows, ids, vectors), so a recall does not reload every vector.
        self._matrices: dict[str, tuple[tuple[int, int, float], np.ndarray, np.ndarray]] = {}
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ writes

    def remember(self, tenant: str, text: str, tags: Iterable[str] | None = None) -> int:
        """Store a text for a tenant; the same text again returns the first one's id (tags unchanged)."""
        tenant = _check_tenant(tenant)
        if not isinstance(text, str) or not text.strip():
            raise ValueError("text must be a non-empty string")
        if len(text) > MAX_TEXT_CHARS:
            raise ValueError(f"text longer than {MAX_TEXT_CHARS} characters; offload it and remember a summary")
        tag_list = _check_tags(tags)
        digest = sha256(text)
        if self.cache is not None:
            self.cache.vectors([text])  # embedded now (and stored by digest), not at the first recall
        with self.db.locked() as d, d.conn:
            d.execute(
                "INSERT OR IGNORE INTO memory (tenant, text, tags, sha256, created) VALUES (?, ?, ?, ?, ?)",
                [tenant, text, json.dumps(tag_list), digest, time.time()],
            )
            row = d.execute("SELECT id FROM memory WHERE tenant = ? AND sha256 = ?", [tenant, digest]).fetchone()
        return int(row[0])

    def forget(self, tenant: str, memory_id: int) -> bool:
        """Delete one of the tenant's memories; False when it has no memory of that id."""
        tenant = _check_tenant(tenant)
        with self.db.locked() as d, d.conn:
            cursor = d.execute("DELETE FROM memory WHERE tenant = ? AND id = ?", [tenant, int(memory_id)])
        return cursor.rowcount > 0

    # ------------------------------------------------------------------ reads

    def recall(self, tenant: str, query: str, k: int = 5) -> list[dict[str, Any]]:
        """The tenant's k memories most relevant to the query, best first:
        dicts of id, text, tags (list), score, created (epoch seconds)."""
        tenant = _check_tenant(tenant)
        query = check_query(query, k)
        bm = self._bm25(tenant, query)
        scores: dict[int, float]
        if self.cache is None or self._queries is None:
            scores = bm
        else:
            scores = self._semantic(tenant, query)
            top = max(bm.values(), default=0.0)
            if top > 0:
                for memory_id, value in bm.items():
                    if memory_id in scores:
                        scores[memory_id] += BM25_WEIGHT * value / top
        best = sorted(scores.items(), key=lambda item: -item[1])[:k]
        return self._rows(tenant, best)

    def count(self, tenant: str) -> int:
        tenant = _check_tenant(tenant)
        with self.db.locked() as d:
            return int(d.execute("SELECT count(*) FROM memory WHERE tenant = ?", [tenant]).fetchone()[0])

    def _bm25(self, tenant: str, query: str) -> dict[int, float]:
        terms = query_terms(query)
        if not terms:
            return {}
        match = " OR ".join(f'"{t}"' for t in terms)
        with self.db.locked() as d:
            rows = d.execute(
                "SELECT m.id, -bm25(memory_fts) FROM memory_fts JOIN memory m ON m.id = memory_fts.rowid "
                f"WHERE memory_fts MATCH ? AND m.tenant = ? ORDER BY rank LIMIT {BM25_DEPTH}",
                [match, tenant],
            ).fetchall()
        return {int(i): float(s) for i, s in rows}

    def _semantic(self, tenant: str, query: str) -> dict[int, float]:
        assert self._queries is not None
        ids, matrix = self._matrix(tenant)
        if not len(ids):
            return {}
        cosines = similarities(matrix, self._queries.vector(query))
        return dict(zip(ids.tolist(), cosines.astype(float).tolist(), strict=True))

    def _matrix(self, tenant: str) -> tuple[np.ndarray, np.ndarray]:
        """The tenant's ids and vectors, reloaded only when its rows changed (count, max id, sum of ids)."""
        assert self.cache is not None
        with self.db.locked() as d:
            raw = d.execute(
                "SELECT count(*), coalesce(max(id), 0), total(id) FROM memory WHERE tenant = ?", [tenant]
            ).fetchone()
        fingerprint = (int(raw[0]), int(raw[1]), float(raw[2]))
        with self._lock:
            known = self._matrices.get(tenant)
        if known is not None and known[0] == fingerprint:
            return known[1], known[2]
        with self.db.locked() as d:
            rows = d.execute("SELECT id, text FROM memory WHERE tenant = ? ORDER BY id", [tenant]).fetchall()
        ids = np.array([r[0] for r in rows], dtype=np.int64)
        # Vectors come from the cache (memory, then the DB); a memory stored without a model is embedded now.
        matrix = self.cache.vectors([r[1] for r in rows]) if rows else np.zeros((0, self.cache.dim), np.float32)
        with self._lock:
            self._matrices[tenant] = (fingerprint, ids, matrix)
        return ids, matrix

    def _rows(self, tenant: str, best: list[tuple[int, float]]) -> list[dict[str, Any]]:
        if not best:
            return []
        marks = ",".join("?" * len(best))
        with self.db.locked() as d:
            rows = d.execute(
                f"SELECT id, text, tags, created FROM memory WHERE tenant = ? AND id IN ({marks})",
                [tenant, *(i for i, _ in best)],
            ).fetchall()
        by_id = {int(r[0]): r for r in rows}
        return [
            {"id": i, "text": by_id[i][1], "tags": json.loads(by_id[i][2]), "score": round(s, 6),
             "created": by_id[i][3]}
            for i, s in best
            if i in by_id  # forgotten between the search and this read
        ]
