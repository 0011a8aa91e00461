"""The gateway: pools of downstream servers created on demand, one pipeline of interceptors, one face."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import anyio
import anyio.abc
from mcp.shared.exceptions import MCPError
from mcp_types import INTERNAL_ERROR

from fmos_mcp import logs
from fmos_mcp.config import ServerSpec
from fmos_mcp.gateway.pool import CapabilityOffer, CatalogTransform, DownstreamPool, PoolKey
from fmos_mcp.gateway.upstream import Identity, UpstreamFace
from fmos_mcp.traps.pipeline import Interceptor

log = logs.get("fmos.gateway")


@dataclass(frozen=True)
class GatewaySettings:
    page_size: int = 500  # items per page of every list the host sees
    startup_grace: float = 5.0  # how long a first list waits for servers that are still starting
    round_ttl: float = 300.0  # how long a modern host has to answer an InputRequiredResult
    connect_timeout: float = 30.0
    backoff_max: float = 30.0
    max_pools: int = 16
    pool_idle: float = 1800.0  # an unused pool (HTTP hosts that left) is stopped after this long


class Gateway:
    def __init__(
        self,
        servers: Sequence[ServerSpec],
        interceptors: Sequence[Interceptor],
        settings: GatewaySettings | None = None,
        *,
        default_identity: Identity = Identity("local"),
        transport: str = "stdio",
        transforms: Sequence[CatalogTransform] = (),
        offer: CapabilityOffer | None = None,
    ) -> None:
        self.specs = list(servers)
        self.offer = offer
        self.transforms = list(transforms)
        self.interceptors = list(interceptors)
        self.settings = settings or GatewaySettings()
        self.pools: dict[PoolKey, DownstreamPool] = {}
        self.face = UpstreamFace(self, default_identity=default_identity, transport=transport)
        self._tasks: anyio.abc.TaskGroup | None = None
        self._creating: dict[PoolKey, anyio.Event] = {}

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Own every background task; returns (after stopping all pools) when cancelled."""
        try:
            async with anyio.create_task_group() as tasks:
                self._tasks = tasks
                tasks.start_soon(self.face.rounds.run)
                tasks.start_soon(self._reap_idle_pools)
                task_status.started()
                await anyio.sleep_forever()
        finally:
            self._tasks = None
            self.face.close()

    async def pool_for(self, key: PoolKey) -> DownstreamPool:
        while True:
            pool = self.pools.get(key)
            if pool is not None:
                return pool
            pending = self._creating.get(key)
            if pending is None:
                break
            await pending.wait()  # another request of the same host is starting it; look again after
        self._creating[key] = done = anyio.Event()
        try:
            return await self._start_pool(key)
        finally:
            del self._creating[key]
            done.set()

    async def _start_pool(self, key: PoolKey) -> DownstreamPool:
        if self._tasks is None:
            raise RuntimeError("the gateway is not running")
        if len(self.pools) >= self.settings.max_pools:
            idle = [p for p in self.pools.values() if not self._in_use(p)]
            if not idle:  # never take servers away from connected hosts
                raise MCPError(
                    code=INTERNAL_ERROR,
                    message=f"the gateway already serves {len(self.pools)} host profiles in use; try again later",
                )
            oldest = min(idle, key=lambda p: p.last_used)
            log.info("pool evicted", pool=oldest.key.label())
            self._stop_pool(oldest)
        settings = self.settings
        pool = DownstreamPool(
            key, self.specs, self.interceptors, self.face, page_size=settings.page_size,
            connect_timeout=settings.connect_timeout, backoff_max=settings.backoff_max, transforms=self.transforms,
            offered=self.offer(key.capabilities) if self.offer else None,
        )
        await self._tasks.start(pool.run)
        self.pools[key] = pool
        log.info("pool started", pool=key.label(), servers=len(pool.servers))
        await pool.wait_ready(settings.startup_grace)
        return pool

    def refresh_catalogs(self) -> None:
        """Rebuild every pool's catalog (an operator approved a tool, say) and tell hosts what changed."""
        for pool in self.pools.values():
            pool.server_changed()

    def _in_use(self, pool: DownstreamPool) -> bool:
        return pool.streams > 0 or self.face.has_hosts(pool.key)

    def _stop_pool(self, pool: DownstreamPool) -> None:
        self.pools.pop(pool.key, None)
        pool.stop()

    async def _reap_idle_pools(self) -> None:
        while True:
            await anyio.sleep(min(60.0, self.settings.pool_idle))
            now = anyio.current_time()
            for pool in list(self.pools.values()):
                if now - pool.last_used > self.settings.pool_idle and not self._in_use(pool):
                    log.info("idle pool stopped", pool=pool.key.label())
                    self._stop_pool(pool)
