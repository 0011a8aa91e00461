"""Noticing what another process (the CLI) wrote to the state database while the gateway serves."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio
import anyio.abc
import anyio.to_thread


async def poll(stamp: Callable[[], Any], reload: Callable[[], bool], on_change: Callable[[], None], *,
               interval: float = 1.0, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
    """Every `interval` seconds, read `stamp()` off the loop; when it moved, run `reload()` off the loop and
    then `on_change()` on it when `reload` says hosts may see something new."""
    seen = await anyio.to_thread.run_sync(stamp)
    task_status.started()
    while True:
        await anyio.sleep(interval)
        current = await anyio.to_thread.run_sync(stamp)
        if current != seen:
            seen = current
            if await anyio.to_thread.run_sync(reload):
                on_change()
