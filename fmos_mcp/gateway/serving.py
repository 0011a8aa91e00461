"""Running the upstream face: over stdio (one host) or as an HTTP service (streamable HTTP and SSE)."""

from __future__ import annotations

import signal
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import anyio.abc
import uvicorn

from fmos_mcp.gateway.core import Gateway
from fmos_mcp.gateway.http import ExtraRoutes, HttpOptions, build_app
from fmos_mcp.gateway.stdio import stdio_streams

Background = Callable[..., Awaitable[Any]]  # started with task_status, runs until cancelled


async def serve_stdio(gateway: Gateway, background: Background | None = None) -> None:
    """Serve one host on stdin/stdout until it closes stdin or a signal arrives; stop every server after."""
    async with anyio.create_task_group() as tasks:
        if background is not None:
            await tasks.start(background)
        await tasks.start(gateway.run)
        tasks.start_soon(_cancel_on_signal, tasks.cancel_scope)
        face = gateway.face
        async with stdio_streams() as (read, write):
            await face.server.run(read, write, face.initialization_options())
        tasks.cancel_scope.cancel()


async def _cancel_on_signal(scope: anyio.CancelScope) -> None:
    wanted = [getattr(signal, name) for name in ("SIGTERM", "SIGINT", "SIGHUP") if hasattr(signal, name)]
    with anyio.open_signal_receiver(*wanted) as signals:
        async for _ in signals:
            scope.cancel()
            return


def serve_http(
    gateway: Gateway,
    options: HttpOptions,
    *,
    background: Background | None = None,
    on_ready: Callable[[], None] | None = None,
    extra_routes: ExtraRoutes | None = None,
) -> None:
    app = build_app(gateway, options, lifespan_extra=background, extra_routes=extra_routes)
    config = uvicorn.Config(app, host=options.host, port=options.port, log_config=None, access_log=False, lifespan="on")
    _AnnouncingServer(config, on_ready).run()


class _AnnouncingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, on_ready: Callable[[], None] | None) -> None:
        super().__init__(config)
        self._on_ready = on_ready

    async def startup(self, sockets: Any = None) -> None:
        await super().startup(sockets)
        if self._on_ready is not None and self.started:
            self._on_ready()
