"""`evolve eval`: a candidate against the active version, on recorded traces and on evaluation sets, and the
gate that refuses a candidate past the configured limits.

- Trap models are replayed on recorded traces (their features and the judges' verdicts are in the rows) and on
  the evaluation sets through the active policies.
- Policies are replayed on the evaluation sets (trace rows keep no argument values, so a rule on arguments
  cannot be re-run on them).
- Whatever the limits: a candidate that lets a call in a sensitive class through where the current version
  stops it or asks a person is refused.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from fmos_mcp.evolve.config import GateLimits
from fmos_mcp.evolve.replay import EvalCall, Outcome, Replayer
from fmos_mcp.evolve.train import TraceCall, compare, keeps_slow
from fmos_mcp.evolve.trapmodel import TrapModel
from fmos_mcp.gateway.catalog import ServerListing
from fmos_mcp.trust.policy import load_bundle


def outcome_metrics(outcomes: Sequence[Outcome]) -> dict[str, Any]:
    malicious = [o for o in outcomes if o.call.label == "malicious"]
    benign = [o for o in outcomes if o.call.label == "benign"]
    return {
        "calls": len(outcomes),
        "slow_share": _share(sum(o.slow for o in outcomes), len(outcomes)),
        "judge_or_person_calls": sum(o.slow for o in outcomes),
        "detection": _share(sum(o.action != "allow" for o in malicious), len(malicious)),
        "false_positive": _share(sum(o.action == "block" for o in benign), len(benign)),
        "benign_asked": _share(sum(o.action == "ask" for o in benign), len(benign)),
    }


def changed(before: Sequence[Outcome], after: Sequence[Outcome]) -> list[dict[str, Any]]:
    return [{"tool": a.call.tool, "label": a.call.label, "before": f"{a.action} ({a.rule})",
             "after": f"{b.action} ({b.rule})", "sensitive": a.sensitive}
            for a, b in zip(before, after, strict=True) if a.action != b.action]


def loosened_sensitive(before: Sequence[Outcome], after: Sequence[Outcome]) -> int:
    return sum(a.sensitive and a.action != "allow" and b.action == "allow" for a, b in zip(before, after, strict=True))


async def replay_pair(current: tuple[dict[str, str], TrapModel | None], candidate: tuple[dict[str, str], TrapModel | None],
                      listings: Sequence[ServerListing], calls: Sequence[EvalCall]) -> tuple[list[Outcome], list[Outcome]]:
    results = []
    for bundle, model in (current, candidate):
        replayer = Replayer(load_bundle(bundle), listings, model)
        try:
            results.append(await replayer.run(calls))
        finally:
            replayer.close()
    return results[0], results[1]


def gate(report: dict[str, Any], limits: GateLimits) -> list[str]:
    """Why the candidate is refused (empty: it passes)."""
    why = []
    evalset = report.get("evalset")
    if evalset:
        before, after = evalset["current"], evalset["candidate"]
        if evalset["sensitive_loosened"]:
            why.append(f"{evalset['sensitive_loosened']} call(s) in a sensitive class (exec, credential, destructive) "
                       "would go through where the current version stops them or asks a person")
        if before["detection"] is not None and before["detection"] - after["detection"] > limits.max_detection_drop:
            why.append(f"detection falls from {before['detection']:.1%} to {after['detection']:.1%} "
                       f"(limit -{limits.max_detection_drop:.0%})")
        if before["false_positive"] is not None and \
                after["false_positive"] - before["false_positive"] > limits.max_false_positive_increase:
            why.append(f"false positives rise from {before['false_positive']:.1%} to {after['false_positive']:.1%} "
                       f"(limit +{limits.max_false_positive_increase:.0%})")
    traces = report.get("traces")
    if traces and traces["current"]["learned"]["recall"] - traces["candidate"]["learned"]["recall"] > limits.max_recall_drop:
        why.append(f"recall on slow-path catches in the traces falls from {traces['current']['learned']['recall']:.1%} "
                   f"to {traces['candidate']['learned']['recall']:.1%}")
    return why


def trace_part(current: TrapModel | None, candidate: TrapModel | None, calls: Sequence[TraceCall]) -> dict[str, Any]:
    before, after = compare(current, calls), compare(candidate, calls)
    flips = sum(keeps_slow(current, c) != keeps_slow(candidate, c) for c in calls)
    return {"current": before, "candidate": after, "decisions_changed": flips}


def table(report: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(metric, current, candidate) rows for the printed before/after table."""
    rows: list[tuple[str, str, str]] = []
    if "traces" in report:
        t = report["traces"]
        rows += [("traces: tool calls", str(t["current"]["calls"]), str(t["candidate"]["calls"])),
                 ("traces: slow-path invocations", str(t["current"]["learned"]["slow"]), str(t["candidate"]["learned"]["slow"])),
                 ("traces: recall on slow-path catches", _pct(t["current"]["learned"]["recall"]), _pct(t["candidate"]["learned"]["recall"])),
                 ("traces: decisions changed", "", str(t["decisions_changed"]))]
    if "evalset" in report:
        e = report["evalset"]
        for key, label in (("slow_share", "slow-path share"), ("detection", "detection (malicious stopped or asked)"),
                           ("false_positive", "false positives (benign blocked)"), ("benign_asked", "benign asked a person"),
                           ("judge_or_person_calls", "judge or person calls")):
            show = str if key == "judge_or_person_calls" else _pct
            rows.append((f"evalset: {label}", show(e["current"][key]), show(e["candidate"][key])))
        rows.append(("evalset: decisions changed", "", str(len(e["changed"]))))
        rows.append(("evalset: sensitive calls loosened", "", str(e["sensitive_loosened"])))
    for key, label in (("judge_tokens", "judge tokens (estimated from traces)"), ("judge_ms", "judge latency, ms (estimated)")):
        if key in report:
            rows.append((label, str(report[key]["current"]), str(report[key]["candidate"])))
    return rows


def _share(n: int, total: int) -> float | None:
    return round(n / total, 4) if total else None


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def dumps(report: dict[str, Any]) -> str:
    return json.dumps(report, indent=2, sort_keys=True, default=str)
