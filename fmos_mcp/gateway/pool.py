"""A pool: every downstream server for one tenant and one host-capability profile, and their catalog.

Downstream sessions are persistent and shared by the hosts of a pool. Pools are per tenant (one tenant
never sees another's downstream session state) and per capability profile (a downstream is offered exactly
what its hosts can answer, so a host without sampling never receives sampling requests).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import anyio
import anyio.abc
import mcp_types as types
from mcp.shared.exceptions import MCPError
from mcp_types import INVALID_REQUEST

from fmos_mcp import logs
from fmos_mcp.config import ServerSpec
from fmos_mcp.gateway.catalog import LIST_KINDS, ServerListing, build_catalog
from fmos_mcp.gateway.downstream import AmbiguousCaller, DownstreamServer, ServerState
from fmos_mcp.gateway.inflight import CURRENT_CALL, InflightCall
from fmos_mcp.gateway.router import Router
from fmos_mcp.traps.pipeline import Interceptor, Pipeline
from fmos_mcp.traps.request import Direction, HostCapabilities, MediatedRequest

log = logs.get("fmos.pool")

_NEEDS = {
    "sampling/createMessage": lambda c: c.sampling,
    "elicitation/create": lambda c: c.elicitation,
    "roots/list": lambda c: c.roots,
}


@dataclass(frozen=True)
class PoolKey:
    tenant: str
    capabilities: HostCapabilities

    def label(self) -> str:
        return f"{self.tenant}/{self.capabilities.label()}"


# Reshapes what servers offer before it becomes the catalog (the trust plane holds back quarantined tools).
CatalogTransform = Callable[[list[ServerListing]], list[ServerListing]]
# What downstream servers are offered, given what the hosts can answer: the host's own capabilities, plus
# sampling when the model plane can answer it with a configured model.
CapabilityOffer = Callable[[HostCapabilities], HostCapabilities]


class HostNotifier(Protocol):
    """The upstream face, as far as a pool needs it: tell this pool's hosts about changes."""

    async def lists_changed(self, key: PoolKey, kinds: set[str]) -> None: ...

    async def resource_updated(self, key: PoolKey, uri: str) -> None: ...

    async def session_tools_changed(self, key: PoolKey, session_id: str) -> None: ...

    async def server_log(self, key: PoolKey, params: types.LoggingMessageNotificationParams) -> None: ...

    def idle_call(self, key: PoolKey, method: str) -> InflightCall | None: ...


class DownstreamPool:
    def __init__(
        self,
        key: PoolKey,
        specs: Sequence[ServerSpec],
        interceptors: Sequence[Interceptor],
        notifier: HostNotifier,
        *,
        page_size: int = 500,
        connect_timeout: float = 30.0,
        backoff_max: float = 30.0,
        transforms: Sequence[CatalogTransform] = (),
        offered: HostCapabilities | None = None,
    ) -> None:
        self.key = key
        self.transforms = tuple(transforms)
        self.notifier = notifier
        self.page_size = page_size
        self.servers = {
            spec.name: DownstreamServer(
                spec, offered or key.capabilities, self, connect_timeout=connect_timeout, backoff_max=backoff_max
            )
            for spec in specs
        }
        # What transforms add by themselves (the gateway's own tools) is there from the start: a host is not
        # told the list changed when the first server comes up and they were already listed.
        self.catalog = build_catalog(0, self._transformed([]))
        self.router = Router(self)
        self.pipeline = Pipeline(interceptors, self._terminal)
        self.log_level: str | None = None
        self._subscribers: Counter[str] = Counter()  # resource URI -> hosts (and listen streams) watching it
        self._subscribed_at: dict[str, str] = {}  # resource URI -> the server it was subscribed on
        self.streams = 0  # open subscriptions/listen streams of modern hosts (they keep a pool alive)
        self.last_used = anyio.current_time()
        self._changed = anyio.Event()
        self._scope: anyio.CancelScope | None = None

    # ----------------------------------------------------------------- lifecycle

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        with anyio.CancelScope() as self._scope:
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(self._rebuild_loop)
                for server in self.servers.values():
                    tasks.start_soon(server.run)
                task_status.started()

    def stop(self) -> None:
        if self._scope is not None:
            self._scope.cancel()

    async def wait_ready(self, grace: float) -> None:
        """Wait for every server's first attempt, but never longer than `grace`: slow servers join later."""
        with anyio.move_on_after(grace):
            for server in self.servers.values():
                await server.ready.wait()
        self._rebuild()

    # ----------------------------------------------------------------- catalog

    def server_changed(self, server: DownstreamServer | None = None) -> None:
        """Rebuild the catalog soon (a server changed, or what a transform decides did)."""
        self._changed.set()

    async def _rebuild_loop(self) -> None:
        while True:
            await self._changed.wait()
            await anyio.sleep(0.02)  # coalesce a burst (several list_changed, several servers coming up)
            self._changed = anyio.Event()
            kinds = self._rebuild()
            if kinds:
                await self.notifier.lists_changed(self.key, kinds)

    def _rebuild(self) -> set[str]:
        """Recompute the catalog; return which lists changed as hosts see them."""
        listings = [
            ServerListing(
                server=s.name, prefix=s.spec.prefix, tools=s.tools, prompts=s.prompts, resources=s.resources,
                templates=s.templates, allow=s.spec.allow, deny=s.spec.deny,
            )
            for s in self.servers.values()
            if s.state is ServerState.UP
        ]
        listings = self._transformed(listings)
        before = self.catalog.snapshot()
        catalog = build_catalog(self.catalog.version + 1, listings)
        after = catalog.snapshot()
        changed = {kind for kind in LIST_KINDS if before[kind] != after[kind]}
        for conflict in set(catalog.conflicts) - set(self.catalog.conflicts):
            log.warning("name conflict", pool=self.key.label(), conflict=conflict)
        self.catalog = catalog
        return changed

    def _transformed(self, listings: list[ServerListing]) -> list[ServerListing]:
        for transform in self.transforms:
            listings = transform(listings)
        return listings

    # ----------------------------------------------------------------- the pipeline's terminal

    async def _terminal(self, request: MediatedRequest) -> Any:
        if request.direction is Direction.TO_HOST:
            return await self._ask_host(request)
        return await self.router(request)

    async def _ask_host(self, request: MediatedRequest) -> Any:
        needs = _NEEDS.get(request.method)
        if needs is None or not needs(request.host.capabilities):
            raise MCPError(code=INVALID_REQUEST, message=f"the host did not declare support for '{request.method}'")
        if request.channel is None:
            raise MCPError(code=INVALID_REQUEST, message=f"no host is connected to answer '{request.method}'")
        return await request.channel.request(request.method, request.params, on_progress=request.reply_progress)

    # ----------------------------------------------------------------- hooks from downstream servers

    async def host_request(self, server: DownstreamServer, method: str, params: Any, reply_progress: Any = None) -> Any:
        try:
            call = CURRENT_CALL.get() or server.caller() or self.notifier.idle_call(self.key, method)
        except AmbiguousCaller as exc:
            raise MCPError(code=INVALID_REQUEST, message=str(exc)) from None
        if call is None:
            raise MCPError(
                code=INVALID_REQUEST,
                message=f"server '{server.name}' sent '{method}' outside any call and no host can be asked now",
            )
        request = MediatedRequest(
            method=method, host=call.host, direction=Direction.TO_HOST, server=server.name,
            params=params, channel=call.channel, reply_progress=reply_progress, pool=self,
        )
        if call.deadline is None:
            return await self.pipeline(request)
        with call.deadline.paused():
            return await self.pipeline(request)

    async def server_log(self, server: DownstreamServer, params: types.LoggingMessageNotificationParams) -> None:
        params = params.model_copy(update={"logger": f"{server.name}/{params.logger}" if params.logger else server.name})
        try:
            call = server.caller()
        except AmbiguousCaller:
            call = None  # several hosts: every one of them gets it, as log messages outside a call do
        if call is not None and call.channel is not None:
            async with call.forwarding():
                await call.channel.log(params)
        else:
            await self.notifier.server_log(self.key, params)

    async def resource_updated(self, server: DownstreamServer, uri: str) -> None:
        await self.notifier.resource_updated(self.key, uri)

    async def session_tools_changed(self, session_id: str) -> None:
        await self.notifier.session_tools_changed(self.key, session_id)

    async def subscribe(self, uri: str, on: bool) -> bool:
        """Count the hosts watching a resource; only the first and the last reach its server.
        Returns False when no server offers the URI."""
        if on:
            name = self._subscribed_at.get(uri) or self.catalog.route_resource(uri)
            if name is None:
                return False
            self._subscribers[uri] += 1
            if self._subscribers[uri] == 1:
                self._subscribed_at[uri] = name
                await self.servers[name].watch_resource(uri, True)
            return True
        if self._subscribers[uri] == 0:
            return uri in self._subscribed_at or self.catalog.route_resource(uri) is not None
        self._subscribers[uri] -= 1
        if self._subscribers[uri] == 0:
            del self._subscribers[uri]
            name = self._subscribed_at.pop(uri)  # the server it was made on, even if it no longer lists it
            await self.servers[name].watch_resource(uri, False)
        return True

    async def set_log_level(self, level: str) -> None:
        self.log_level = level
        async with anyio.create_task_group() as tasks:
            for server in self.servers.values():
                tasks.start_soon(server.set_logging_level, level)

    async def roots_changed(self) -> None:
        for server in self.servers.values():
            await server.send_roots_changed()
