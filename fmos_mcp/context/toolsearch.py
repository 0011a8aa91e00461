"""Tool search over a pool's catalog: one hybrid index per catalog version, built off the event loop.

The catalog is rebuilt on every list_changed, so the index follows it; embeddings are cached by content hash,
so a rebuild embeds only tools whose definition is new.
"""

from __future__ import annotations

import re
from collections import OrderedDict, defaultdict
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.to_thread

from fmos_mcp.context.search import Doc, HybridIndex

KEEP = 8  # indexes kept (one per live catalog: per tenant and host profile)


@dataclass(frozen=True)
class ToolHit:
    name: str
    score: float
    server: str
    description: str


def tool_doc(name: str, server: str, tool: Any) -> Doc:
    props = list(((tool.input_schema or {}).get("properties") or {}).keys())
    text = " ".join(p for p in (tool.title or "", tool.description or "", " ".join(props)) if p)
    return Doc(id=name, text=text, group=server, title=name)


class ToolSearch:
    def __init__(self, embedder: Any = None, db: Any = None) -> None:
        self.embedder = embedder
        self.db = db  # tool vectors persist there: a restart embeds nothing it has seen
        self._indexes: OrderedDict[int, HybridIndex] = OrderedDict()
        self._locks: dict[int, anyio.Lock] = {}

    async def index_for(self, catalog: Any) -> HybridIndex:
        key = id(catalog)
        index = self._indexes.get(key)
        if index is not None:
            self._indexes.move_to_end(key)
            return index
        lock = self._locks.setdefault(key, anyio.Lock())
        async with lock:  # one build per catalog, however many searches arrive meanwhile
            index = self._indexes.get(key)
            if index is None:
                index = await anyio.to_thread.run_sync(self._build, catalog)
                self._indexes[key] = index
                while len(self._indexes) > KEEP:
                    old, _ = self._indexes.popitem(last=False)
                    self._locks.pop(old, None)
        return index

    def _build(self, catalog: Any) -> HybridIndex:
        index = HybridIndex(embedder=self.embedder, db=self.db)
        index.replace([tool_doc(t.name, catalog.tools[t.name].server, t) for t in catalog.lists["tools"]])
        return index

    async def search(self, catalog: Any, query: str, k: int, server: str | None = None) -> list[ToolHit]:
        index = await self.index_for(catalog)
        hits = await anyio.to_thread.run_sync(lambda: index.search(query, k, group=server))
        described = {t.name: t.description or t.title or "" for t in catalog.lists["tools"]}
        return [ToolHit(h.id, h.score, h.group, described.get(h.id, "")) for h in hits]

    @staticmethod
    def summaries(catalog: Any) -> list[str]:
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
