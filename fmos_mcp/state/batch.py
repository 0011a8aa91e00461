"""Rows recorded on the request path in O(1), written to SQLite in batches by a background task.

A failed write keeps its rows, in order, for the next flush; a database stuck for long drops the oldest
rows rather than grow without bound, and says so.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

import anyio
import anyio.abc
import anyio.to_thread

from fmos_mcp import logs

log = logs.get("fmos.state")


class BatchWriter:
    def __init__(self, name: str, write: Callable[[list[Any]], None], *, batch: int = 512, interval: float = 0.25,
                 max_pending: int = 100_000) -> None:
        self.name = name
        self._write = write  # runs on a worker thread with a list of recorded items
        self.batch = batch
        self.interval = interval
        self._pending: deque[Any] = deque(maxlen=max_pending)
        self._lock = anyio.Lock()
        self.dropped = 0

    def record(self, item: Any) -> None:
        if len(self._pending) == self._pending.maxlen:
            self.dropped += 1
        self._pending.append(item)

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        try:
            while True:
                await anyio.sleep(self.interval)
                await self.flush()
        finally:
            with anyio.CancelScope(shield=True):
                await self.flush()

    async def flush(self) -> None:
        async with self._lock:
            while self._pending:
                items = [self._pending.popleft() for _ in range(min(self.batch, len(self._pending)))]
                try:
                    await anyio.to_thread.run_sync(self._write, items)
                except Exception as exc:  # a full disk must not take the gateway down
                    log.error("write failed; will retry", table=self.name, error=str(exc), rows=len(items))
                    self._pending.extendleft(reversed(items))
                    return
            if self.dropped:
                log.warning("rows dropped while the database lagged", table=self.name, dropped=self.dropped)
                self.dropped = 0
