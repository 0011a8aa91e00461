"""The gateway's own tools and resources (fmos_read, fmos_search_tools, vfm_generate, ...).

Planes supply them; this module puts them in every pool's catalog as one more server, `fmos`, and answers
calls to them at the end of the pipeline, so tracing, trust and budgets see them like any other call.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import mcp_types as types
from mcp.shared.exceptions import MCPError
from mcp_types import INVALID_PARAMS

from fmos_mcp.config import RESERVED_NAME
from fmos_mcp.gateway.catalog import ServerListing
from fmos_mcp.traps.pipeline import CallNext
from fmos_mcp.traps.request import MediatedRequest

OWN_SERVER = RESERVED_NAME  # servers.d may not use it

ToolRun = Callable[[MediatedRequest, dict[str, Any]], Awaitable[types.CallToolResult]]
ResourceRead = Callable[[MediatedRequest, str], Awaitable[types.ReadResourceResult]]


@dataclass(frozen=True)
class OwnTool:
    tool: types.Tool
    run: ToolRun
    meta_tool: bool = False  # always visible, even when tools are paged (search, activate, call)


@dataclass(frozen=True)
class OwnResources:
    """Resources under one URI scheme prefix (`fmos://artifacts/`), read by `read`."""

    template: types.ResourceTemplate
    prefix: str
    read: ResourceRead


def tool_error(text: str, **meta: Any) -> types.CallToolResult:
    return types.CallToolResult(content=[types.TextContent(type="text", text=text)], is_error=True,
                                meta=meta or None)


def tool_text(text: str, structured: dict[str, Any] | None = None, **meta: Any) -> types.CallToolResult:
    return types.CallToolResult(content=[types.TextContent(type="text", text=text)],
                                structured_content=structured, meta=meta or None)


class OwnServices:
    """Lists the gateway's own components (`extend_catalog`) and serves them (the interceptor)."""

    name = "own"

    def __init__(self, tools: Sequence[OwnTool] = (), resources: Sequence[OwnResources] = ()) -> None:
        self.tools = {t.tool.name: t for t in tools}
        self.resources = list(resources)

    def add(self, tools: Sequence[OwnTool] = (), resources: Sequence[OwnResources] = ()) -> None:
        self.tools.update({t.tool.name: t for t in tools})
        self.resources += resources

    @property
    def meta_tools(self) -> set[str]:
        return {name for name, t in self.tools.items() if t.meta_tool}

    def __bool__(self) -> bool:
        return bool(self.tools or self.resources)

    # ----------------------------------------------------------------- the catalog transform

    def extend_catalog(self, listings: list[ServerListing]) -> list[ServerListing]:
        if not self:
            return listings
        own = ServerListing(server=OWN_SERVER, prefix=None, tools=[t.tool for t in self.tools.values()],
                            templates=[r.template for r in self.resources])
        return [*listings, own]

    # ----------------------------------------------------------------- the interceptor (last before the router)

    async def __call__(self, request: MediatedRequest, call_next: CallNext) -> Any:
        if request.server != OWN_SERVER:
            return await call_next(request)
        if request.method == "tools/call":
            own = self.tools.get(request.target or "")
            if own is None:
                return tool_error(f"Unknown tool: {request.name}")
            return await own.run(request, dict(request.arguments))
        if request.method == "resources/read":
            uri = request.name or ""
            for resources in self.resources:
                if uri.startswith(resources.prefix):
                    return await resources.read(request, uri)
            raise MCPError(code=INVALID_PARAMS, message=f"Resource not found: {uri}", data={"uri": uri})
        if request.method in ("resources/subscribe", "resources/unsubscribe"):
            return types.EmptyResult()  # the gateway's own resources never change once written
        return await call_next(request)

