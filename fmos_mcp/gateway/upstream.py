"""The upstream face: one low-level MCP server that hosts talk to, on every transport and in both eras.

Each handler only translates: it works out who is asking (`HostInfo`), finds the pool for that tenant and
capability profile, builds the frozen `MediatedRequest`, and hands it to the pool's pipeline. A modern-era
host's call that a downstream interrupts with a request for the host is carried across retries by
`InputRounds`. The face also keeps track of connected hosts, to tell them when lists change.
"""

from __future__ import annotations

import hashlib
import json
import uuid
import warnings
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio
import mcp_types as types
from mcp.server import Server
from mcp.server.caching import CACHEABLE_METHODS, CacheHint
from mcp.server.connection import Connection
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel.server import NotificationOptions
from mcp.server.models import InitializationOptions
from mcp.server.subscriptions import (
    InMemorySubscriptionBus,
    ListenHandler,
    PromptsListChanged,
    ResourcesListChanged,
    ResourceUpdated,
    ToolsListChanged,
)
from mcp.shared.exceptions import MCPDeprecationWarning
from mcp_types import SERVER_INFO_META_KEY
from mcp_types import methods as _methods
from pydantic import BaseModel, ValidationError

from fmos_mcp import __version__, logs
from fmos_mcp.gateway.catalog import WirePage
from fmos_mcp.gateway.inflight import InflightCall
from fmos_mcp.gateway.pool import DownstreamPool, PoolKey
from fmos_mcp.gateway.relay import InputRounds, RequestChannel, RoundBinding
from fmos_mcp.gateway.sdk import connection_of, host_capabilities, is_modern
from fmos_mcp.traps.request import HostInfo, MediatedRequest

if TYPE_CHECKING:
    from fmos_mcp.gateway.core import Gateway

log = logs.get("fmos.upstream")

INSTRUCTIONS = (
    "fmos-mcp is a gateway: its tools, prompts and resources come from several MCP servers. "
    "Tool and prompt names are NAME__tool, where NAME is the server they come from."
)
_ROUND_METHODS = frozenset({"tools/call", "prompts/get", "resources/read"})
_LIST_METHODS = frozenset({"tools/list", "prompts/list", "resources/list", "resources/templates/list"})
IDLE_REQUEST_TIMEOUT = 30.0  # seconds a host gets to answer a server's request made outside any call
_EVENTS = {"tools": ToolsListChanged, "prompts": PromptsListChanged, "resources": ResourcesListChanged}
# Lists are per tenant and change whenever a server does (list_changed says when): private, and stale at once.
LIST_CACHE_HINT = CacheHint(ttl_ms=0, scope="private")


@dataclass(frozen=True)
class Identity:
    tenant: str
    roles: tuple[str, ...] = ()


IDENTITY_SCOPE_KEY = "fmos.identity"  # set on the ASGI scope by the HTTP auth layer
TRANSPORT_SCOPE_KEY = "fmos.transport"


@dataclass(eq=False)
class HostLink:
    """A connected handshake-era host: where list_changed and log messages go."""

    connection: Connection
    session: Any  # a ServerSession of this connection; its standalone channel is the connection's
    host: HostInfo
    subscriptions: set[str] = field(default_factory=set)


class UpstreamFace:
    def __init__(self, gateway: Gateway, *, default_identity: Identity, transport: str = "stdio") -> None:
        self.gateway = gateway
        self.default_identity = default_identity
        self.transport = transport
        self.rounds = InputRounds(ttl=gateway.settings.round_ttl)
        self._links: dict[PoolKey, OrderedDict[int, HostLink]] = {}
        self._buses: dict[PoolKey, tuple[InMemorySubscriptionBus, ListenHandler]] = {}
        self.listers = {method: self._lister(method) for method in _LIST_METHODS}
        self._modern_hosts: dict[tuple[Any, ...], HostInfo] = {}
        self.server = self._build_server()

    # ----------------------------------------------------------------- the MCP server

    def _build_server(self) -> Server[Any]:
        with warnings.catch_warnings():  # logging, roots and client progress are deprecated, not gone
            warnings.simplefilter("ignore", MCPDeprecationWarning)
            server = Server(
                "fmos-mcp",
                version=__version__,
                title="fmos-mcp gateway",
                instructions=INSTRUCTIONS,
                cache_hints={method: LIST_CACHE_HINT for method in CACHEABLE_METHODS},
                on_list_tools=self.listers["tools/list"],
                on_list_prompts=self.listers["prompts/list"],
                on_list_resources=self.listers["resources/list"],
                on_list_resource_templates=self.listers["resources/templates/list"],
                on_call_tool=self._named("tools/call", "tools"),
                on_get_prompt=self._named("prompts/get", "prompts"),
                on_read_resource=self._on_read_resource,
                on_completion=self._on_complete,
                on_subscribe_resource=self._on_subscribe,
                on_unsubscribe_resource=self._on_subscribe,
                on_subscriptions_listen=self._on_listen,
                on_set_logging_level=self._on_set_level,
                on_roots_list_changed=self._on_roots_changed,
            )
        # The gateway traces every request itself; the SDK's OpenTelemetry span is a cost per message with no
        # exporter behind it. The list lane answers list requests from ready pages (see ListLane).
        server.middleware = [ListLane(self)]
        return server

    def initialization_options(self) -> InitializationOptions:
        return self.server.create_initialization_options(
            NotificationOptions(prompts_changed=True, resources_changed=True, tools_changed=True)
        )

    # ----------------------------------------------------------------- who is asking

    def _host(self, ctx: ServerRequestContext[Any]) -> HostInfo:
        conn = connection_of(ctx.session)
        cached = conn.state.get("fmos.host")
        if cached is not None:
            return cached
        scope = getattr(ctx.request, "scope", None) or {}
        identity: Identity = scope.get(IDENTITY_SCOPE_KEY, self.default_identity)
        modern = is_modern(ctx.protocol_version)
        if modern:  # a modern host restates who it is on every request: the same words, the same answer
            key = (identity, scope.get(TRANSPORT_SCOPE_KEY), ctx.protocol_version, _envelope(ctx.meta))
            known = self._modern_hosts.get(key)
            if known is None:
                if len(self._modern_hosts) > 4096:
                    self._modern_hosts.clear()
                known = self._modern_hosts[key] = self._describe_host(ctx, conn, identity, scope, modern)
            return known
        host = self._describe_host(ctx, conn, identity, scope, modern)
        conn.state["fmos.host"] = host  # a handshake connection's answers never change
        return host

    def _describe_host(self, ctx: Any, conn: Connection, identity: Identity, scope: Any, modern: bool) -> HostInfo:
        client = _client_name(conn, ctx.meta)
        if conn.session_id:
            session_id = conn.session_id
        elif modern:  # a modern host has no session; its name within its tenant is the next best thing
            session_id = "m-" + hashlib.sha256(f"{identity.tenant}\0{client}".encode()).hexdigest()[:12]
        else:
            session_id = uuid.uuid4().hex[:12]
        return HostInfo(
            session_id=session_id,
            tenant=identity.tenant,
            transport=scope.get(TRANSPORT_SCOPE_KEY, self.transport),
            era=ctx.protocol_version,
            capabilities=host_capabilities(ctx.session.client_capabilities),
            roles=identity.roles,
            client_name=client,
        )

    async def _enter(self, ctx: ServerRequestContext[Any]) -> tuple[HostInfo, DownstreamPool]:
        host = self._host(ctx)
        key = PoolKey(host.tenant, host.capabilities)
        if not is_modern(ctx.protocol_version):
            self._remember(key, ctx, host)
        pool = await self.gateway.pool_for(key)
        return host, pool

    def _remember(self, key: PoolKey, ctx: ServerRequestContext[Any], host: HostInfo) -> None:
        conn = connection_of(ctx.session)
        links = self._links.setdefault(key, OrderedDict())
        ident = id(conn)
        if ident not in links:
            links[ident] = link = HostLink(conn, ctx.session, host)
            conn.exit_stack.push_async_callback(self._forget, key, ident, link)
        else:
            links.move_to_end(ident)

    async def _forget(self, key: PoolKey, ident: int, link: HostLink) -> None:
        """A host left: drop it, and the resource subscriptions it still held."""
        self._links.get(key, {}).pop(ident, None)
        pool = self.gateway.pools.get(key)
        if pool is not None:
            for uri in list(link.subscriptions):
                await pool.subscribe(uri, False)

    # ----------------------------------------------------------------- handlers

    def _lister(self, method: str) -> Callable[[ServerRequestContext[Any], Any], Awaitable[Any]]:
        async def handler(ctx: ServerRequestContext[Any], params: Any) -> Any:
            host, pool = await self._enter(ctx)
            return await self._mediate(ctx, pool, MediatedRequest(method=method, host=host, params=params, meta=ctx.meta))

        return handler

    def _named(self, method: str, table: str) -> Callable[[ServerRequestContext[Any], Any], Awaitable[Any]]:
        """tools/call and prompts/get: routed by the exposed name through the catalog's `table`."""

        async def handler(ctx: ServerRequestContext[Any], params: Any) -> Any:
            host, pool = await self._enter(ctx)
            route = getattr(pool.catalog, table).get(params.name)
            request = MediatedRequest(
                method=method, host=host, name=params.name, params=params, meta=ctx.meta,
                server=route.server if route else None, target=route.target if route else None,
                arguments=params.arguments or {},
            )
            return await self._mediate(ctx, pool, request)

        return handler

    async def _on_read_resource(self, ctx: ServerRequestContext[Any], params: types.ReadResourceRequestParams) -> Any:
        host, pool = await self._enter(ctx)
        uri = str(params.uri)
        request = MediatedRequest(
            method="resources/read", host=host, name=uri, params=params, meta=ctx.meta,
            server=pool.catalog.route_resource(uri),
        )
        return await self._mediate(ctx, pool, request)

    async def _on_complete(self, ctx: ServerRequestContext[Any], params: types.CompleteRequestParams) -> Any:
        host, pool = await self._enter(ctx)
        ref = params.ref
        name = ref.name if isinstance(ref, types.PromptReference) else ref.uri
        request = MediatedRequest(method="completion/complete", host=host, name=name, params=params, meta=ctx.meta)
        return await self._mediate(ctx, pool, request)

    async def _on_subscribe(self, ctx: ServerRequestContext[Any], params: Any) -> Any:
        host, pool = await self._enter(ctx)
        uri = str(params.uri)
        on = isinstance(params, types.SubscribeRequestParams)
        link = self._links.get(pool.key, {}).get(id(connection_of(ctx.session)))
        if link is not None:
            if (uri in link.subscriptions) == on:
                return types.EmptyResult()  # already (un)subscribed: a host counts once per URI
            # Claimed before the first await, so two concurrent subscribes of one host count once.
            (link.subscriptions.add if on else link.subscriptions.discard)(uri)
        request = MediatedRequest(
            method="resources/subscribe" if on else "resources/unsubscribe", host=host, name=uri, params=params,
            meta=ctx.meta, server=pool.catalog.route_resource(uri),
        )
        try:
            return await self._mediate(ctx, pool, request)
        except BaseException:
            if link is not None:  # not done after all
                (link.subscriptions.discard if on else link.subscriptions.add)(uri)
            raise

    async def _on_set_level(self, ctx: ServerRequestContext[Any], params: types.SetLevelRequestParams) -> Any:
        host, pool = await self._enter(ctx)
        return await self._mediate(ctx, pool, MediatedRequest(method="logging/setLevel", host=host, params=params))

    async def _on_roots_changed(self, ctx: ServerRequestContext[Any], params: Any) -> None:
        _, pool = await self._enter(ctx)
        await pool.roots_changed()

    async def _on_listen(self, ctx: ServerRequestContext[Any], params: types.SubscriptionsListenRequestParams) -> Any:
        host, pool = await self._enter(ctx)
        request = MediatedRequest(method="subscriptions/listen", host=host, params=params, meta=ctx.meta)
        params = await self._mediate(ctx, pool, request)  # interceptors may narrow the filter or refuse
        pool.streams += 1
        uris: list[str] = []
        try:
            uris = [u for u in (params.notifications.resource_subscriptions or []) if await pool.subscribe(u, True)]
            return await self._bus(pool.key)[1](ctx, params)
        finally:
            pool.streams -= 1
            pool.last_used = anyio.current_time()
            with anyio.CancelScope(shield=True):
                for uri in uris:
                    await pool.subscribe(uri, False)

    def _bus(self, key: PoolKey) -> tuple[InMemorySubscriptionBus, ListenHandler]:
        bus = self._buses.get(key)
        if bus is None:
            hub = InMemorySubscriptionBus()
            bus = self._buses[key] = (hub, ListenHandler(hub))
        return bus

    # ----------------------------------------------------------------- through the pipeline

    async def _mediate(self, ctx: ServerRequestContext[Any], pool: DownstreamPool, request: MediatedRequest) -> Any:
        pool.last_used = anyio.current_time()
        leg = RequestChannel(ctx.session, ctx.request_id, timeout=self.rounds.ttl)
        caps = request.host.capabilities
        askable = caps.sampling or caps.elicitation or caps.roots  # downstreams are offered exactly these
        if not (askable and is_modern(ctx.protocol_version) and request.method in _ROUND_METHODS):
            return await pool.pipeline(request.evolve(channel=leg, pool=pool))
        # A modern host cannot be asked mid-call: the work may outlive this request, across retries.
        params = request.params
        binding = RoundBinding(request.host.tenant, request.method, request.name or "")
        if params.request_state:
            rnd = self.rounds.resume(params.request_state, binding, params.input_responses, leg)
        else:
            rnd = self.rounds.start(binding, lambda channel: pool.pipeline(request.evolve(channel=channel, pool=pool)), leg)
        return await self.rounds.next_answer(rnd)

    # ----------------------------------------------------------------- HostNotifier

    async def lists_changed(self, key: PoolKey, kinds: set[str]) -> None:
        for link in list(self._links.get(key, {}).values()):
            conn = link.connection
            try:
                if "tools" in kinds:
                    await conn.send_tool_list_changed()
                if "prompts" in kinds:
                    await conn.send_prompt_list_changed()
                if kinds & {"resources", "resourceTemplates"}:
                    await conn.send_resource_list_changed()
            except Exception as exc:  # noqa: BLE001 - a gone host must not stop the others
                log.debug("list_changed not delivered", error=str(exc))
        bus = self._buses.get(key)
        if bus is not None:
            for kind in kinds:
                event = _EVENTS.get("resources" if kind == "resourceTemplates" else kind)
                if event is not None:
                    await bus[0].publish(event())

    async def session_tools_changed(self, key: PoolKey, session_id: str) -> None:
        """The tool list of one session changed (tools paged in or out): tell that host alone; modern hosts,
        which have no session, hear it on their listen streams."""
        for link in list(self._links.get(key, {}).values()):
            if link.host.session_id == session_id:
                try:
                    await link.connection.send_tool_list_changed()
                except Exception as exc:  # noqa: BLE001
                    log.debug("list_changed not delivered", error=str(exc))
        bus = self._buses.get(key)
        if bus is not None:
            await bus[0].publish(ToolsListChanged())

    async def resource_updated(self, key: PoolKey, uri: str) -> None:
        for link in list(self._links.get(key, {}).values()):
            if uri in link.subscriptions:
                try:
                    await link.connection.send_resource_updated(uri)
                except Exception as exc:  # noqa: BLE001
                    log.debug("resource update not delivered", error=str(exc))
        bus = self._buses.get(key)
        if bus is not None:
            await bus[0].publish(ResourceUpdated(uri=uri))

    async def server_log(self, key: PoolKey, params: types.LoggingMessageNotificationParams) -> None:
        for link in list(self._links.get(key, {}).values()):
            try:
                await link.connection.log(params.level, params.data, params.logger)
            except Exception as exc:  # noqa: BLE001
                log.debug("log message not delivered", error=str(exc))

    def idle_call(self, key: PoolKey, method: str) -> InflightCall | None:
        """A request outside any call (roots/list right after start-up) goes to the most recent host."""
        links = self._links.get(key)
        if not links:
            return None
        link = next(reversed(links.values()))
        # A host's standalone stream may not be open (HTTP without GET): never wait on it for long.
        return InflightCall(host=link.host, channel=RequestChannel(link.session, timeout=IDLE_REQUEST_TIMEOUT))

    def has_hosts(self, key: PoolKey) -> bool:
        return bool(self._links.get(key))

    def close(self) -> None:
        for _, handler in self._buses.values():
            handler.close()


class ListLane:
    """Answers list requests from the catalog's ready wire pages.

    The SDK re-validates and re-serializes every result against the negotiated protocol version: for a
    list of a thousand tools that is tens of milliseconds per request, for items that were validated when
    their server sent them and have not changed since. A page an interceptor replaced (not a WirePage)
    gets the SDK's full serialization here instead.
    """

    def __init__(self, face: UpstreamFace) -> None:
        self.face = face

    async def __call__(self, ctx: ServerRequestContext[Any], call_next: Any) -> Any:
        if ctx.method not in _LIST_METHODS or not connection_of(ctx.session).initialize_accepted:
            return await call_next(ctx)  # everything else, and a list before initialize, the SDK's way
        try:
            params = types.PaginatedRequestParams.model_validate(ctx.params or {}, by_name=False)
        except ValidationError:
            return await call_next(ctx)  # the SDK answers malformed params
        result = await self.face.listers[ctx.method](ctx, params)
        version = ctx.protocol_version
        if isinstance(result, WirePage):
            wire = dict(result)
            if is_modern(version):
                wire.update(ttlMs=LIST_CACHE_HINT.ttl_ms, cacheScope=LIST_CACHE_HINT.scope)
                wire["_meta"] = {SERVER_INFO_META_KEY: self.face.server.server_info_stamp}
            else:
                wire.pop("resultType", None)
            return wire
        if isinstance(result, BaseModel):
            result = result.model_dump(by_alias=True, mode="json", exclude_none=True)
        if is_modern(version):
            result = {"ttlMs": LIST_CACHE_HINT.ttl_ms, "cacheScope": LIST_CACHE_HINT.scope, "resultType": "complete", **result}
        wire = _methods.serialize_server_result(ctx.method, version, result)
        if is_modern(version):
            wire["_meta"] = {**(wire.get("_meta") or {}), SERVER_INFO_META_KEY: self.face.server.server_info_stamp}
        return wire


def _envelope(meta: Any) -> str:
    """Who a modern request says it is (client info and capabilities), as a cache key."""
    if not meta:
        return ""
    return json.dumps([meta.get("io.modelcontextprotocol/clientInfo"),
                       meta.get("io.modelcontextprotocol/clientCapabilities")], sort_keys=True, default=str)


def _client_name(conn: Connection, meta: Any) -> str | None:
    if conn.client_params is not None and conn.client_params.client_info is not None:
        return conn.client_params.client_info.name
    info = (meta or {}).get("io.modelcontextprotocol/clientInfo")
    return info.get("name") if isinstance(info, dict) else None

