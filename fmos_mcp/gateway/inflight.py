"""A host request in flight to a downstream server: how requests that server sends back find their host."""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass

from fmos_mcp.gateway.deadline import PausableDeadline
from fmos_mcp.traps.request import HostChannel, HostInfo


@dataclass(eq=False)
class InflightCall:
    host: HostInfo
    channel: HostChannel | None
    deadline: PausableDeadline | None = None


# Set while the gateway awaits a downstream call. A modern-era downstream asks for input inside that same
# task (an InputRequiredResult), so the answer is exact; a handshake-era downstream pushes its request on the
# session's receive task, where the gateway falls back to the server's most recent call in flight.
CURRENT_CALL: ContextVar[InflightCall | None] = ContextVar("fmos_current_call", default=None)
