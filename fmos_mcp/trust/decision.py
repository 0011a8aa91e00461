"""A trust decision and how a blocked call looks to the host: `isError` with `_meta["fmos/decision"]`."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import mcp_types as types

DECISION_META = "fmos/decision"
# Most restrictive first: when several rules match, the first effect in this list wins.
PRECEDENCE = ("deny", "require_approval", "allow", "log")


@dataclass
class Decision:
    action: str  # allow | deny | require_approval | log
    rule: str  # rule id, "detector:<name>", "limit:<id>", "judge:<id>", "default:<class>"
    reason: str
    path: str = "slow"  # fast | slow
    findings: list[dict[str, Any]] = field(default_factory=list)
    judge: dict[str, Any] | None = None
    approval_ttl: float | None = None
    approval_scope: str = "call"
    # What learning needs (trace features; see fmos_mcp/evolve): the features seen, whether static rules left
    # the call undecided, what a learned trap said, and the user's answer to an approval prompt.
    features: dict[str, Any] | None = None
    undecided: bool | None = None
    learned: dict[str, Any] | None = None
    approval: str | None = None

    def became(self, action: str, reason: str) -> Decision:
        """The same decision (rule, findings, judge, what learning needs) with a new outcome."""
        return replace(self, action=action, reason=reason)

    def meta(self) -> dict[str, Any]:
        return {"action": self.action, "trap": "trust", "rule": self.rule, "reason": self.reason}


def blocked(decision: Decision, tool: str) -> types.CallToolResult:
    text = (f"fmos-mcp blocked the call to '{tool}': {decision.reason} (rule {decision.rule}). "
            "Do not retry the same call; tell the user what was blocked and why, or choose a different action.")
    return types.CallToolResult(content=[types.TextContent(type="text", text=text)], is_error=True,
                                meta={DECISION_META: decision.meta()})


def stricter(a: str, b: str) -> bool:
    """Whether effect `a` is strictly more restrictive than `b`."""
    return PRECEDENCE.index(a) < PRECEDENCE.index(b)
