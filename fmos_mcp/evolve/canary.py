"""Canaries: which sessions a candidate serves, and the live comparison that rolls it back by itself.

A session is in the canary arm when a hash of (session, candidate id) falls under the share, so a session
stays in one arm for its life and a new candidate draws a new sample. Each arm counts calls, blocks,
downstream errors and calls sent to the slow path (a judge or a person); once both arms have `min_calls`,
the canary is rolled back the moment its rate exceeds the control arm's by more than the configured limit.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from fmos_mcp.evolve.config import CanaryLimits
from fmos_mcp.evolve.train import went_slow
from fmos_mcp.traps.request import MediatedRequest


def in_canary(session: str, candidate: int, share: float) -> bool:
    """`share` is a percentage of sessions."""
    digest = hashlib.sha256(f"{session}:{candidate}".encode()).digest()
    return int.from_bytes(digest[:4], "big") % 10_000 < share * 100


@dataclass
class Arm:
    calls: int = 0
    blocked: int = 0
    errors: int = 0
    slow: int = 0

    def rates(self) -> dict[str, float]:
        n = max(1, self.calls)
        return {"block_rate": self.blocked / n, "error_rate": self.errors / n, "slow_share": self.slow / n}


@dataclass
class CanaryWatch:
    candidate: int
    limits: CanaryLimits
    arms: dict[str, Arm] = field(default_factory=lambda: {"control": Arm(), "canary": Arm()})
    tripped: str | None = None

    def observe(self, arm: str, request: MediatedRequest, result: Any) -> str | None:
        """Count one tool call; return why the canary must be rolled back (once), else None."""
        counts = self.arms[arm]
        counts.calls += 1
        trust = [t for t in request.trail if t.service == "trust"]
        if any(t.decision == "deny" for t in trust):
            counts.blocked += 1
        elif getattr(result, "is_error", False):
            counts.errors += 1
        if any(went_slow(t.snapshot) for t in trust):
            counts.slow += 1
        return None if self.tripped else self._check()

    def _check(self) -> str | None:
        control, canary = self.arms["control"], self.arms["canary"]
        if min(control.calls, canary.calls) < self.limits.min_calls:
            return None
        before, after = control.rates(), canary.rates()
        for metric, limit in (("block_rate", self.limits.max_block_rate_increase),
                              ("error_rate", self.limits.max_error_rate_increase),
                              ("slow_share", self.limits.max_slow_share_increase)):
            if after[metric] - before[metric] > limit:
                self.tripped = (f"{metric.replace('_', ' ')} {after[metric]:.1%} in the canary against "
                                f"{before[metric]:.1%} in control (limit +{limit:.0%}) after "
                                f"{canary.calls}/{control.calls} calls")
                return self.tripped
        return None

    def report(self) -> dict[str, Any]:
        return {arm: {"calls": a.calls, **{k: round(v, 4) for k, v in a.rates().items()}} for arm, a in self.arms.items()}
