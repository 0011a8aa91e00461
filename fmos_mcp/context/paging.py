"""Tool paging: in paged exposure a session sees the gateway's meta tools plus its working set of tools.

The working set is a least-recently-used set per session: activating or calling a tool makes it the most
recent; past the limit the least recent is paged out. Nothing is lost by paging out: the tool is still
callable by name (and through `fmos_call_tool`), it just no longer costs the host's context.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

MAX_SESSIONS = 4096  # sessions remembered; the oldest is forgotten first (it starts again from the meta tools)


def tool_tokens(tools: Iterable[Any]) -> int:
    """Tokens a host spends on these tool definitions, estimated as JSON bytes / 4 (a common rule of thumb
    for English and JSON with BPE tokenizers; the bench reports bytes too)."""
    return sum(len(json.dumps(t.model_dump(by_alias=True, mode="json", exclude_none=True),
                              separators=(",", ":"), ensure_ascii=False).encode()) for t in tools) // 4


@dataclass
class WorkingSet:
    limit: int
    tools: OrderedDict[str, None] = field(default_factory=OrderedDict)

    def touch(self, names: Iterable[str]) -> tuple[list[str], list[str]]:
        """Make `names` the most recent; returns (newly active, paged out)."""
        added = []
        for name in names:
            if name in self.tools:
                self.tools.move_to_end(name)
            else:
                self.tools[name] = None
                added.append(name)
        evicted = []
        while len(self.tools) > self.limit:
            evicted.append(self.tools.popitem(last=False)[0])
        return [n for n in added if n in self.tools], evicted

    def drop(self, names: Iterable[str]) -> list[str]:
        gone = [n for n in names if n in self.tools]
        for name in gone:
            del self.tools[name]
        return gone


class Paging:
    """Working sets per (tenant, session)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._sets: OrderedDict[tuple[str, str], WorkingSet] = OrderedDict()

    def working_set(self, tenant: str, session: str) -> WorkingSet:
        key = (tenant, session)
        ws = self._sets.get(key)
        if ws is None:
            ws = self._sets[key] = WorkingSet(self.limit)
            while len(self._sets) > MAX_SESSIONS:
                self._sets.popitem(last=False)
        else:
            self._sets.move_to_end(key)
        return ws

    def active(self, tenant: str, session: str) -> list[str]:
        return list(self.working_set(tenant, session).tools)
