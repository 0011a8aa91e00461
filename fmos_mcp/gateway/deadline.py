"""A per-call deadline that stops while the gateway waits for the host (a person answering a form)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import anyio


class PausableDeadline:
    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.scope = anyio.CancelScope(deadline=anyio.current_time() + timeout)
        self._paused = 0
        self._remaining = timeout

    @contextmanager
    def paused(self) -> Iterator[None]:
        if self._paused == 0:
            self._remaining = max(self.scope.deadline - anyio.current_time(), 0.0)
            self.scope.deadline = math.inf
        self._paused += 1
        try:
            yield
        finally:
            self._paused -= 1
            if self._paused == 0:
                self.scope.deadline = anyio.current_time() + self._remaining

    @property
    def expired(self) -> bool:
        return self.scope.cancelled_caught
