"""The context service: the pipeline's interceptor for the host's context window (paper: the Data Agent).

- `tools/list` in paged exposure: the gateway's meta tools plus this session's working set;
- `tools/call`: the called tool joins the working set; a result above its threshold is stored and replaced
  by a pointer (see `offload.py`); a loaded skill returns to its header after the call that used it.
The gateway's own context tools (read, grep, query, search, activate, call, skills, memory) are in `tools.py`.
"""

from __future__ import annotations

from typing import Any

import anyio.to_thread
import mcp_types as types

from fmos_mcp import logs
from fmos_mcp.context.artifacts import ArtifactStore
from fmos_mcp.context.config import ContextConfig
from fmos_mcp.context.offload import offload_result
from fmos_mcp.context.paging import Paging, tool_tokens
from fmos_mcp.gateway.own import OWN_SERVER
from fmos_mcp.traps.pipeline import CallNext
from fmos_mcp.traps.request import Direction, MediatedRequest
from fmos_mcp.traps.sizes import content_bytes
from fmos_mcp.traps.trap import TrapKind, TrapRecord

log = logs.get("fmos.context")
OFFLOAD_META = "fmos/offload"


class ContextService:
    name = "context"

    def __init__(self, config: ContextConfig, store: ArtifactStore, paging: Paging, meta_tools: set[str]) -> None:
        self.config = config
        self.store = store
        self.paging = paging
        self.meta_tools = meta_tools  # own tools a paged host always sees
        self.skill_tools: dict[tuple[str, str], set[str]] = {}  # (tenant, session) -> tools a loaded skill brought

    async def __call__(self, request: MediatedRequest, call_next: CallNext) -> Any:
        if request.direction is Direction.TO_HOST or request.pool is None:
            return await call_next(request)
        if request.method == "tools/list" and self.paged(request.pool.catalog):
            return self.paged_list(request)
        if request.method != "tools/call":
            return await call_next(request)
        if request.server and request.server != OWN_SERVER and request.name and request.origin is None:
            await self.activate(request, [request.name], notify=self.paged(request.pool.catalog))
        result = await call_next(request)
        if request.server and request.server != OWN_SERVER:
            result = await self._offload(request, result)
            await self._unload_skill_tools(request)
        return result

    # ----------------------------------------------------------------- exposure and paging

    def paged(self, catalog: Any) -> bool:
        mode = self.config.exposure
        if mode != "auto":
            return mode == "paged"
        tokens = catalog.memo("context.tool_tokens", lambda: tool_tokens(catalog.lists["tools"]))
        return tokens > self.config.auto_threshold_tokens

    def paged_list(self, request: MediatedRequest) -> types.ListToolsResult:
        catalog = request.pool.catalog
        active = set(self.paging.active(request.host.tenant, request.host.session_id))
        tools = [t for t in catalog.lists["tools"]
                 if t.name in active or (t.name in self.meta_tools and catalog.tools[t.name].server == OWN_SERVER)]
        return types.ListToolsResult(tools=tools)

    async def activate(self, request: MediatedRequest, names: list[str], *, notify: bool = True) -> tuple[list[str], list[str]]:
        """Bring tools into this session's working set; tell the host when what it sees changed."""
        host = request.host
        added, evicted = self.paging.working_set(host.tenant, host.session_id).touch(names)
        if (added or evicted) and notify and request.pool is not None:
            await request.pool.session_tools_changed(host.session_id)
        return added, evicted

    async def deactivate(self, request: MediatedRequest, names: list[str]) -> list[str]:
        host = request.host
        gone = self.paging.working_set(host.tenant, host.session_id).drop(names)
        if gone and request.pool is not None and self.paged(request.pool.catalog):
            await request.pool.session_tools_changed(host.session_id)
        return gone

    async def _unload_skill_tools(self, request: MediatedRequest) -> None:
        """A skill's tools leave the working set after the call that used one of them, as the policy says."""
        key = (request.host.tenant, request.host.session_id)
        tools = self.skill_tools.get(key)
        if not self.config.unload_after_use or not tools or request.name not in tools:
            return
        del self.skill_tools[key]
        await self.deactivate(request, sorted(tools - {request.name}))

    # ----------------------------------------------------------------- offload

    async def _offload(self, request: MediatedRequest, result: Any) -> Any:
        threshold = self.config.threshold_for(request.server or "", request.target or "")
        if threshold is None or not isinstance(result, types.CallToolResult) or content_bytes(result) <= threshold:
            return result
        tenant, origin = request.host.tenant, f"{request.server}/{request.target}"

        def work() -> Any:
            return offload_result(
                result, threshold, self.config.preview_bytes, self.config.summary,
                lambda data, kind, mime: self.store.put(tenant, data, kind, mime, origin),
            )

        new, artifacts = await anyio.to_thread.run_sync(work)
        if artifacts:
            moved = sum(a.bytes for a in artifacts)
            request.trail.append(TrapRecord(TrapKind.KNOWLEDGE, self.name, "offload", "result above threshold",
                                            {"artifacts": len(artifacts), "bytes": moved, "threshold": threshold}))
            log.info("result offloaded", tool=request.name, bytes=moved, artifacts=len(artifacts))
        return new
