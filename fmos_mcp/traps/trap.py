"""The trap record: why the slow path ran, what it saw, and what it decided (paper, section 3)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class TrapKind(StrEnum):
    KNOWLEDGE = "knowledge"
    MODEL = "model"
    TRUST = "trust"
    BUDGET = "budget"


@dataclass(frozen=True, slots=True)
class TrapRecord:
    kind: TrapKind
    service: str  # which interceptor fired it
    decision: str  # allow | deny | approve | redact | degrade | offload | ...
    reason: str = ""
    snapshot: dict[str, Any] = field(default_factory=dict)  # the context the decision saw (no secrets)

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind.value, "service": self.service, "decision": self.decision}
        if self.reason:
            out["reason"] = self.reason
        if self.snapshot:
            out["snapshot"] = self.snapshot
        return out
