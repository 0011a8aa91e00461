"""Traps and the mediator pipeline: the extension point every plane plugs into."""

from fmos_mcp.traps.pipeline import CallNext, Interceptor, Pipeline
from fmos_mcp.traps.request import Direction, HostCapabilities, HostChannel, HostInfo, MediatedRequest
from fmos_mcp.traps.trap import TrapKind, TrapRecord

__all__ = [
    "CallNext", "Direction", "HostCapabilities", "HostChannel", "HostInfo", "Interceptor",
    "MediatedRequest", "Pipeline", "TrapKind", "TrapRecord",
]
