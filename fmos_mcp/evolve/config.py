"""The `evolve` policy section: the limits the evaluation gate and a canary hold a candidate to.

```yaml
evolve:
  gate:                            # `fmos-mcp evolve eval`: a candidate past any of these is refused
    max_detection_drop: 0.0        # share of malicious evaluation calls the candidate lets through that current stops
    max_false_positive_increase: 0.05   # share of benign evaluation calls it blocks more than current
    max_recall_drop: 0.0           # trap models: slow-path catches in the traces it would have missed
  canary:                          # `fmos-mcp evolve canary`: watched live, rolled back past any of these
    min_calls: 20                  # per arm, before any comparison
    max_block_rate_increase: 0.10  # blocked calls / calls, canary minus control
    max_error_rate_increase: 0.10  # downstream errors / calls, canary minus control
    max_slow_share_increase: 0.25  # calls sent to a judge or a person / calls, canary minus control
  trap_audit_share: 0.05           # of calls a trap model lets skip the judges, the share still judged (labels)
```

Whatever the section says, a candidate that lets a call in a sensitive class (exec, credential, destructive)
through where the current version stops it or asks a person is refused: that is not a configurable limit.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

_SHARE = {"type": "number", "minimum": 0, "maximum": 1}
SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "Self-evolution: the evaluation gate's and the canary's limits.",
    "additionalProperties": False,
    "properties": {
        "gate": {"type": "object", "additionalProperties": False, "properties": {
            "max_detection_drop": _SHARE, "max_false_positive_increase": _SHARE, "max_recall_drop": _SHARE}},
        "canary": {"type": "object", "additionalProperties": False, "properties": {
            "min_calls": {"type": "integer", "minimum": 1}, "max_block_rate_increase": _SHARE,
            "max_error_rate_increase": _SHARE, "max_slow_share_increase": _SHARE}},
        "trap_audit_share": _SHARE,
    },
}


@dataclass(frozen=True)
class GateLimits:
    max_detection_drop: float = 0.0
    max_false_positive_increase: float = 0.05
    max_recall_drop: float = 0.0


@dataclass(frozen=True)
class CanaryLimits:
    min_calls: int = 20
    max_block_rate_increase: float = 0.10
    max_error_rate_increase: float = 0.10
    max_slow_share_increase: float = 0.25


@dataclass(frozen=True)
class EvolveConfig:
    gate: GateLimits = field(default_factory=GateLimits)
    canary: CanaryLimits = field(default_factory=CanaryLimits)
    trap_audit_share: float = 0.05

    @classmethod
    def from_section(cls, section: dict[str, Any] | None) -> EvolveConfig:
        section = section or {}
        return cls(GateLimits(**section.get("gate", {})), CanaryLimits(**section.get("canary", {})),
                   section.get("trap_audit_share", 0.05))


def check(section: dict[str, Any]) -> list[tuple[str, str, str]]:
    return []  # the schema says it all
