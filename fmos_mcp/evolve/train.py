"""Training a trap model from traces, and the report against static rules on held-back sessions.

Examples are the tool calls the static rules left undecided (no sensitive class, no finding, no rule that
decides) and that went to the judges: the judge's verdict is the label. Calls a trap model already let skip the
judges carry no label and are left out (the audit share keeps labels coming). Sessions are split by time: the
model is fitted on the earlier ones and reported on the later ones.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from fmos_mcp.evolve.trapmodel import Example, TrapModel, fit


@dataclass(frozen=True)
class TraceCall:
    """One tools/call trace row, as training and evaluation read it."""

    id: int
    ts: float
    session: str
    features: dict[str, Any]
    slow: bool  # a judge or a person was asked
    caught: bool  # the slow path stopped it: a judge denied, or a person refused
    eligible: bool  # undecided by static rules, judged (a labelled example)


def went_slow(snapshot: dict[str, Any]) -> bool:
    """A trust trap's snapshot says a judge or a person was asked: the slow path ran."""
    return "judge" in snapshot or "approval" in snapshot


def keeps_slow(model: TrapModel | None, call: TraceCall) -> bool:
    """Whether `call` still goes to the slow path with `model` (None: static rules alone)."""
    return not call.eligible or model is None or model.needs_slow(call.features)[0]


def trace_calls(rows: Iterable[dict[str, Any]]) -> list[TraceCall]:
    out = []
    for row in rows:
        if row.get("method") != "tools/call" or not row.get("features"):
            continue
        trust = next((t for t in row.get("traps") or () if t.get("service") == "trust"), None)
        snap = (trust or {}).get("snapshot") or {}
        judge = snap.get("judge") or {}
        slow = went_slow(snap)
        caught = judge.get("verdict") == "deny" or snap.get("approval") in ("refused", "unavailable")
        out.append(TraceCall(row.get("id", 0), row["ts"], row["session"], row["features"], slow, caught,
                             bool(snap.get("undecided")) and bool(judge)))
    return out


def split(calls: Sequence[TraceCall], holdout: float) -> tuple[list[TraceCall], list[TraceCall]]:
    """(earlier sessions, later sessions), by each session's first call."""
    first: dict[str, float] = {}
    for call in calls:
        first[call.session] = min(first.get(call.session, call.ts), call.ts)
    order = sorted(first, key=lambda s: (first[s], s))
    held = set(order[int(len(order) * (1 - holdout)):])
    return [c for c in calls if c.session not in held], [c for c in calls if c.session in held]


def examples(calls: Iterable[TraceCall]) -> list[Example]:
    return [Example(c.features, c.caught, c.session) for c in calls if c.eligible]


def compare(model: TrapModel | None, calls: Sequence[TraceCall]) -> dict[str, Any]:
    """Slow-path invocations and recall on slow-path catches: static rules alone against static rules + model.
    Calls that were not eligible keep their path; eligible ones go slow only when the model says so."""
    static_slow = sum(c.slow for c in calls)
    caught = [c for c in calls if c.caught]
    learned_slow, missed = 0, 0
    for call in calls:
        keep = keeps_slow(model, call)
        learned_slow += call.slow and keep
        missed += call.caught and not keep
    recall = (len(caught) - missed) / len(caught) if caught else 1.0
    return {"calls": len(calls), "eligible": sum(c.eligible for c in calls), "caught": len(caught),
            "static": {"slow": static_slow, "recall": 1.0},
            "learned": {"slow": learned_slow, "recall": round(recall, 4), "missed": missed},
            "slow_reduction": round(1 - learned_slow / static_slow, 4) if static_slow else 0.0}


def train_report(calls: Sequence[TraceCall], *, holdout: float = 0.3, **fit_args: Any) -> tuple[TrapModel, dict[str, Any]]:
    earlier, later = split(calls, holdout)
    model = fit(examples(earlier), **fit_args)
    return model, {"trained_on": model.trained, "sessions_held_back": len({c.session for c in later}),
                   "held_back": compare(model, later)}
