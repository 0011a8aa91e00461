"""The frozen context every interceptor sees: who asks, what, of whom, and the way back to the host."""

from __future__ import annotations

import itertools
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any, Protocol

from fmos_mcp.traps.trap import TrapRecord


class Direction(StrEnum):
    TO_SERVER = "to_server"  # host -> gateway -> downstream server (tools/call, resources/read, ...)
    TO_HOST = "to_host"  # downstream server -> gateway -> host (sampling, elicitation, roots)


@dataclass(frozen=True, slots=True)
class HostCapabilities:
    """What the host declared it can answer; downstream servers are offered exactly this."""

    sampling: bool = False
    sampling_tools: bool = False
    sampling_context: bool = False
    elicitation_form: bool = False
    elicitation_url: bool = False
    roots: bool = False
    roots_list_changed: bool = False

    @property
    def elicitation(self) -> bool:
        return self.elicitation_form or self.elicitation_url

    def label(self) -> str:
        on = [name for name in self.__slots__ if getattr(self, name)]  # type: ignore[attr-defined]
        return "+".join(on) or "none"


@dataclass(frozen=True, slots=True)
class HostInfo:
    session_id: str
    tenant: str
    transport: str  # stdio | http | sse | inproc
    era: str  # the negotiated protocol version
    capabilities: HostCapabilities
    roles: tuple[str, ...] = ()
    client_name: str | None = None


class PoolView(Protocol):
    """What a service may use of the pool that serves a request: the catalog (routes and lists), the whole
    pipeline (a meta tool that calls another tool sends it through every trap again), and per-session news."""

    catalog: Any
    pipeline: Any

    async def session_tools_changed(self, session_id: str) -> None: ...


class HostChannel(Protocol):
    """The way back to the host for one request, whichever protocol era it speaks.

    Handshake-era hosts get a pushed request; modern-era hosts get it inside an `InputRequiredResult`
    round. Interceptors (an approval prompt, a judge through sampling) use this and never care which.
    """

    async def request(self, method: str, params: Any, on_progress: Any = None) -> Any:
        """Ask the host (`sampling/createMessage`, `elicitation/create`, `roots/list`); returns the typed result.
        `on_progress(progress, total, message)` receives what the host reports while it works on it."""
        ...

    async def progress(self, progress: float, total: float | None, message: str | None) -> None: ...

    async def log(self, params: Any) -> None: ...


_ids = itertools.count(1)


@dataclass(frozen=True, slots=True)
class MediatedRequest:
    """One request on its way through the mediator pipeline. Frozen: change it with `evolve`."""

    method: str
    host: HostInfo
    direction: Direction = Direction.TO_SERVER
    server: str | None = None  # the downstream server concerned, when known
    name: str | None = None  # what the host called it (exposed tool/prompt name, or resource URI)
    target: str | None = None  # the downstream's own name for it
    arguments: Mapping[str, Any] = field(default_factory=dict)
    params: Any = None  # the typed request params as received
    channel: HostChannel | None = None
    meta: Mapping[str, Any] | None = None
    # Requests to the host only: where progress the host reports on this request goes (the downstream asker).
    reply_progress: Any = None
    # The pool serving this request (see `PoolView`): its catalog and pipeline, for the gateway's own tools.
    pool: Any = None
    # None when a host (or downstream server) asked; else the gateway's own tool that made this request.
    origin: str | None = None
    id: int = field(default_factory=lambda: next(_ids))
    started: float = field(default_factory=time.perf_counter)
    # Append-only record of trap decisions taken on this request; the trace reads it afterwards.
    trail: list[TrapRecord] = field(default_factory=list, compare=False)

    def evolve(self, **changes: Any) -> MediatedRequest:
        return replace(self, **changes)
