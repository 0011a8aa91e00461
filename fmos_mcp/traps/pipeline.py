"""The mediator pipeline: an ordered chain of interceptors ending in a terminal handler.

An interceptor is `async (request, call_next) -> result`. It passes (returns `await call_next(request)`),
changes the request (`call_next(request.evolve(...))`) or the result, or answers by itself (does not call
`call_next`: that is how a deny works). The chain is composed once, so a request costs one closure call per
interceptor and nothing proportional to the number of tools or servers.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

from fmos_mcp.traps.request import MediatedRequest

CallNext = Callable[[MediatedRequest], Awaitable[Any]]


class Interceptor(Protocol):
    name: str

    async def __call__(self, request: MediatedRequest, call_next: CallNext) -> Any: ...


class Pipeline:
    def __init__(self, interceptors: Sequence[Interceptor], terminal: CallNext) -> None:
        self.interceptors = tuple(interceptors)
        self._entry = terminal
        for interceptor in reversed(self.interceptors):
            self._entry = _link(interceptor, self._entry)

    async def __call__(self, request: MediatedRequest) -> Any:
        return await self._entry(request)


def _link(interceptor: Interceptor, call_next: CallNext) -> CallNext:
    async def step(request: MediatedRequest) -> Any:
        return await interceptor(request, call_next)

    return step
