"""A host request in flight to a downstream server: how requests that server sends back find their host."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field

import anyio
import anyio.lowlevel

from fmos_mcp.gateway.deadline import PausableDeadline
from fmos_mcp.traps.request import HostChannel, HostInfo


@dataclass(eq=False)
class InflightCall:
    host: HostInfo
    channel: HostChannel | None
    deadline: PausableDeadline | None = None
    _forwarding: int = 0
    _settled: anyio.Event = field(default_factory=anyio.Event)

    @asynccontextmanager
    async def forwarding(self) -> AsyncIterator[None]:
        """Around a notification (log, progress) this call's server sent, while it goes to the host."""
        self._forwarding += 1
        try:
            yield
        finally:
            self._forwarding -= 1
            if self._forwarding == 0:
                self._settled.set()

    async def settle(self, limit: float = 1.0) -> None:
        """Let the notifications the server sent before its result reach the host first: after the result,
        the host's request stream may be closed and they would be lost."""
        await anyio.lowlevel.checkpoint()  # notification tasks already spawned start before we go on
        with anyio.move_on_after(limit):
            while self._forwarding:
                self._settled = anyio.Event()
                await self._settled.wait()


# Set while the gateway awaits a downstream call. A modern-era downstream asks for input inside that same
# task (an InputRequiredResult), so the answer is exact; a handshake-era downstream pushes its request on the
# session's receive task, where the gateway falls back to the server's most recent call in flight.
CURRENT_CALL: ContextVar[InflightCall | None] = ContextVar("fmos_current_call", default=None)
