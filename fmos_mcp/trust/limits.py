"""Denial-of-service guards: call rates (token buckets) and concurrent calls, per limit, tenant and tool."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from fmos_mcp.trust.policy import Limit


@dataclass
class _Bucket:
    tokens: float
    stamp: float


@dataclass
class Limiter:
    _buckets: dict[tuple[str, str, str], _Bucket] = field(default_factory=dict)
    _running: dict[tuple[str, str, str], int] = field(default_factory=dict)

    def take(self, limit: Limit, tenant: str, tool: str) -> str | None:
        """Spend one call of the limit's rate; returns why not when it is used up."""
        if not limit.calls or not limit.per:
            return None
        key, now = (limit.id, tenant, tool), time.monotonic()
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(float(limit.calls), now)
        bucket.tokens = min(float(limit.calls), bucket.tokens + (now - bucket.stamp) * limit.calls / limit.per)
        bucket.stamp = now
        if bucket.tokens < 1:
            wait = (1 - bucket.tokens) * limit.per / limit.calls
            return f"rate limit '{limit.id}': at most {limit.calls} calls per {limit.per:g} s; retry in {wait:.1f} s"
        bucket.tokens -= 1
        return None

    def enter(self, limit: Limit, tenant: str, tool: str) -> str | None:
        if not limit.concurrency:
            return None
        key = (limit.id, tenant, tool)
        if self._running.get(key, 0) >= limit.concurrency:
            return f"concurrency limit '{limit.id}': at most {limit.concurrency} calls at once"
        self._running[key] = self._running.get(key, 0) + 1
        return None

    def leave(self, limit: Limit, tenant: str, tool: str) -> None:
        if limit.concurrency:
            key = (limit.id, tenant, tool)
            self._running[key] -= 1
            if not self._running[key]:
                del self._running[key]
