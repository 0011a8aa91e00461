"""Tool search over a pool's catalog: one index per catalog version (kept with it), built off the event loop.

The catalog is rebuilt on every list_changed, so the index follows it. Embeddings are cached by content hash
(in memory and in the state database), so a rebuild, or a restart, embeds only tools whose definition is new.
"""

from __future__ import annotations

import re
import threading
import weakref
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.to_thread

from fmos_mcp import logs
from fmos_mcp.context.search import Doc, HybridIndex

log = logs.get("fmos.context")

INDEX = "toolsearch.index"  # the catalog's `derived` key: BM25 at first, then the semantic index


@dataclass(frozen=True)
class ToolHit:
    name: str
    score: float
    server: str
    description: str


def tool_doc(name: str, server: str, tool: Any) -> Doc:
    props = list(((tool.input_schema or {}).get("properties") or {}).keys())
    title = tool.title or (tool.annotations.title if tool.annotations else None) or ""
    text = " ".join(p for p in (tool.description or "", " ".join(props)) if p)
    return Doc(id=name, text=text, group=server, title=title)


class ToolSearch:
    """Indexes per catalog. A new catalog gets a BM25 index at once (milliseconds); the semantic one is built
    on a worker thread (embedding thousands of new tools takes minutes on a small CPU) and replaces it when
    ready, so a search never waits for the model."""

    def __init__(self, embedder: Any = None, db: Any = None) -> None:
        self.embedder = embedder
        self.db = db  # tool vectors persist there: a restart embeds nothing it has seen
        self._building = anyio.Lock()

    @staticmethod
    def cached(catalog: Any) -> HybridIndex | None:
        return catalog.derived.get(INDEX)

    @staticmethod
    def _store(catalog: Any, index: HybridIndex) -> None:
        catalog.derived[INDEX] = index  # one assignment: a worker thread may make it too

    async def index_for(self, catalog: Any) -> HybridIndex:
        index = self.cached(catalog)
        if index is not None:
            return index
        async with self._building:  # one build per catalog, however many searches arrive meanwhile
            index = self.cached(catalog)
            if index is None:
                docs = [tool_doc(t.name, catalog.tools[t.name].server, t) for t in catalog.lists["tools"]]
                index = await anyio.to_thread.run_sync(_index, docs, None, None)
                self._store(catalog, index)
                if self.embedder is not None:
                    worker = threading.Thread(target=self._semantic, args=(weakref.ref(catalog), docs),
                                              name="fmos-tool-embeddings", daemon=True)
                    worker.start()
        return index

    def _semantic(self, ref: weakref.ref[Any], docs: list[Doc]) -> None:
        try:
            index = _index(docs, self.embedder, self.db)
        except Exception as exc:  # noqa: BLE001 - BM25 keeps serving; say why semantic search is missing
            log.warning("semantic tool index failed; BM25 only", error=repr(exc))
            return
        catalog = ref()
        if catalog is not None:
            self._store(catalog, index)
            log.info("semantic tool index ready", tools=len(docs))

    async def search(self, catalog: Any, query: str, k: int, server: str | None = None) -> list[ToolHit]:
        index = await self.index_for(catalog)
        hits = await anyio.to_thread.run_sync(lambda: index.search(query, k, group=server))
        described = self._about(catalog)[0]
        return [ToolHit(h.id, h.score, h.group, described.get(h.id, "")) for h in hits]

    def summaries(self, catalog: Any) -> list[str]:
        return self._about(catalog)[1]

    @staticmethod
    def _about(catalog: Any) -> tuple[dict[str, str], list[str]]:
        """Descriptions by name and the server summaries, once per catalog (thousands of tools cost
        milliseconds per search otherwise)."""
        return catalog.memo("toolsearch.about", lambda: (
            {t.name: t.description or t.title or "" for t in catalog.lists["tools"]}, server_summaries(catalog)))


def server_summaries(catalog: Any) -> list[str]:
    """One line per server: how many tools, and the words its tool names use most."""
    by_server: dict[str, list[str]] = defaultdict(list)
    for route in catalog.tools.values():
        by_server[route.server].append(route.target)
    lines = []
    for server, names in sorted(by_server.items()):
        words: dict[str, int] = defaultdict(int)
        for n in names:
            for w in re.split(r"[_\-.\s]+|(?<=[a-z])(?=[A-Z])", n):
                if len(w) > 2:
                    words[w.lower()] += 1
        common = ", ".join(w for w, _ in sorted(words.items(), key=lambda kv: -kv[1])[:6])
        lines.append(f"{server}: {len(names)} tools ({common})")
    return lines


def _index(docs: list[Doc], embedder: Any, db: Any) -> HybridIndex:
    index = HybridIndex(embedder=embedder, db=db)
    index.replace(docs)
    return index
