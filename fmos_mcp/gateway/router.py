"""The pipeline's terminal for host requests: find the downstream server and ask it.

Failures of the gateway's own observation (server down, timed out, malformed output) become results the
model can read (`isError` for tools) or clear protocol errors; a downstream's own protocol error passes
through unchanged.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import mcp_types as types
from mcp.shared.exceptions import MCPError
from mcp_types import INTERNAL_ERROR, INVALID_PARAMS, METHOD_NOT_FOUND

from fmos_mcp.gateway.catalog import InvalidCursor
from fmos_mcp.gateway.downstream import DownstreamError, DownstreamServer, ServerState
from fmos_mcp.gateway.inflight import InflightCall
from fmos_mcp.gateway.naming import SEPARATOR
from fmos_mcp.traps.request import MediatedRequest

if TYPE_CHECKING:
    from fmos_mcp.gateway.pool import DownstreamPool

SERVER_INFO_META = "io.modelcontextprotocol/serverInfo"
_LISTS = {
    "tools/list": "tools",
    "prompts/list": "prompts",
    "resources/list": "resources",
    "resources/templates/list": "resourceTemplates",
}


class Router:
    def __init__(self, pool: DownstreamPool) -> None:
        self.pool = pool
        self._methods = {
            "tools/call": self._call_tool,
            "prompts/get": self._get_prompt,
            "resources/read": self._read_resource,
            "completion/complete": self._complete,
            "resources/subscribe": self._subscribe,
            "resources/unsubscribe": self._subscribe,
            "logging/setLevel": self._set_level,
            "subscriptions/listen": self._listen,
        }

    async def __call__(self, request: MediatedRequest) -> Any:
        kind = _LISTS.get(request.method)
        if kind is not None:
            cursor = getattr(request.params, "cursor", None) if request.params is not None else None
            try:
                return self.pool.catalog.page(kind, cursor, self.pool.page_size)
            except InvalidCursor as exc:
                raise MCPError(code=INVALID_PARAMS, message=str(exc)) from None
        handler = self._methods.get(request.method)
        if handler is None:
            raise MCPError(code=METHOD_NOT_FOUND, message=f"Method not found: {request.method}")
        return await handler(request)

    # ----------------------------------------------------------------- tools and prompts

    async def _call_tool(self, request: MediatedRequest) -> Any:
        server = self._server(request)
        if server is None:
            return self._tool_error(self._why_unknown(request.name or "", "tool"))
        try:
            result = await server.call_tool(
                request.target or "", dict(request.arguments) or None, self._inflight(request), request.meta
            )
        except DownstreamError as exc:
            return self._tool_error(str(exc))
        return strip_identity(result)

    async def _get_prompt(self, request: MediatedRequest) -> Any:
        server = self._server(request)
        if server is None:
            raise MCPError(code=INVALID_PARAMS, message=self._why_unknown(request.name or "", "prompt"))
        arguments = {k: str(v) for k, v in request.arguments.items()} or None
        try:
            result = await server.get_prompt(request.target or "", arguments, self._inflight(request), request.meta)
        except DownstreamError as exc:
            raise MCPError(code=INTERNAL_ERROR, message=str(exc)) from None
        return strip_identity(result)

    def _server(self, request: MediatedRequest) -> DownstreamServer | None:
        return self.pool.servers.get(request.server) if request.server else None

    def _why_unknown(self, name: str, kind: str) -> str:
        """A name that is not in the catalog: say whether its server is down rather than 'unknown'."""
        for server in self.pool.servers.values():
            prefix = server.spec.prefix
            if prefix and name.startswith(prefix + SEPARATOR) and server.state is not ServerState.UP:
                return f"{kind} '{name}' is unavailable: server '{server.name}' is {server.state.value}" + (
                    f": {server.last_error}" if server.last_error else ""
                )
        return f"Unknown {kind}: {name}"

    @staticmethod
    def _tool_error(text: str) -> types.CallToolResult:
        return types.CallToolResult(content=[types.TextContent(type="text", text=text)], is_error=True)

    @staticmethod
    def _inflight(request: MediatedRequest) -> InflightCall:
        return InflightCall(host=request.host, channel=request.channel)

    # ----------------------------------------------------------------- resources

    async def _read_resource(self, request: MediatedRequest) -> Any:
        uri = request.name or ""
        server = self._resource_server(uri)
        try:
            result = await server.read_resource(uri, self._inflight(request), request.meta)
        except DownstreamError as exc:
            raise MCPError(code=INTERNAL_ERROR, message=str(exc)) from None
        return strip_identity(result)

    def _resource_server(self, uri: str) -> DownstreamServer:
        name = self.pool.catalog.route_resource(uri)
        if name is None:
            raise MCPError(code=INVALID_PARAMS, message=f"Resource not found: {uri}", data={"uri": uri})
        return self.pool.servers[name]

    async def _subscribe(self, request: MediatedRequest) -> Any:
        uri = request.name or ""
        if not await self.pool.subscribe(uri, request.method == "resources/subscribe"):
            raise MCPError(code=INVALID_PARAMS, message=f"Resource not found: {uri}", data={"uri": uri})
        return types.EmptyResult()

    async def _set_level(self, request: MediatedRequest) -> Any:
        await self.pool.set_log_level(request.params.level)
        return types.EmptyResult()

    async def _listen(self, request: MediatedRequest) -> Any:
        """The stream itself is the face's to serve; the pipeline decides whether (and with what filter)."""
        return request.params

    # ----------------------------------------------------------------- completions

    async def _complete(self, request: MediatedRequest) -> Any:
        params: types.CompleteRequestParams = request.params
        ref = params.ref
        catalog = self.pool.catalog
        if isinstance(ref, types.PromptReference):
            route = catalog.prompts.get(ref.name)
            if route is None:
                raise MCPError(code=INVALID_PARAMS, message=self._why_unknown(ref.name, "prompt"))
            server_name, ref = route.server, ref.model_copy(update={"name": route.target})
        else:
            server_name = catalog.template_owner(ref.uri) or catalog.route_resource(ref.uri)
            if server_name is None:
                raise MCPError(code=INVALID_PARAMS, message=f"Resource not found: {ref.uri}", data={"uri": ref.uri})
        server = self.pool.servers.get(server_name)  # None: the gateway's own template (nothing to complete)
        if server is None or server.server_caps is None or server.server_caps.completions is None:
            return types.CompleteResult(completion=types.Completion(values=[]))
        downstream = types.CompleteRequest(params=params.model_copy(update={"ref": ref}))
        try:
            result = await server.request("completion/complete", downstream, types.CompleteResult, self._inflight(request))
        except DownstreamError as exc:
            raise MCPError(code=INTERNAL_ERROR, message=str(exc)) from None
        return strip_identity(result)


def strip_identity(result: Any) -> Any:
    """Downstream identity stays behind the gateway: the host sees one server, fmos-mcp."""
    meta = getattr(result, "meta", None)
    if meta and SERVER_INFO_META in meta:
        return result.model_copy(update={"meta": {k: v for k, v in meta.items() if k != SERVER_INFO_META} or None})
    return result
