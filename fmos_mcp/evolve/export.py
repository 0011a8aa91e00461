"""`fmos-mcp trace export`: trace rows as JSON Lines for offline analysis, with nothing personal or secret.

An allow-list, not a deny-list: tenants and sessions become keyed pseudonyms (HMAC under the installation's
secret, so rows of one tenant still group together), error messages keep only their class or code, trap
reasons (which may quote an argument) are dropped, and features carry argument shapes and pseudonyms only.
"""

from __future__ import annotations

from typing import Any

from fmos_mcp.evolve.features import pseudonym

_ROW = ("id", "ts", "transport", "era", "direction", "method", "server", "name", "arg_bytes", "result_bytes",
        "latency_ms", "outcome")
_TRUST = ("path", "rule", "classes", "findings", "judge", "undecided", "learned", "approval")
_MODEL = ("rule", "chain", "chosen", "reasoning", "outcome", "latency_ms", "backend", "model", "input_tokens",
          "output_tokens", "usage_estimated", "cost_usd", "reasoning_applied", "explored", "success")
_MODEL_FEATURES = ("server", "task", "reasoning", "input_chars", "max_tokens", "host_has_sampling")


def export_row(row: dict[str, Any], key: bytes) -> dict[str, Any]:
    out = {k: row.get(k) for k in _ROW}
    out["tenant"] = pseudonym(key, "tenant:" + str(row.get("tenant")))
    out["session"] = pseudonym(key, "session:" + str(row.get("session")))
    if row.get("error"):
        out["error"] = str(row["error"]).split(":", 1)[0][:40]  # "-32602" or "TimeoutError": never the message
    out["traps"] = [_trap(t, key) for t in row.get("traps") or ()]
    if row.get("features"):
        out["features"] = row["features"]
    return out


def _trap(trap: dict[str, Any], key: bytes) -> dict[str, Any]:
    snapshot = trap.get("snapshot") or {}
    out = {k: trap.get(k) for k in ("kind", "service", "decision")}
    if trap.get("kind") == "model":
        kept = {k: snapshot[k] for k in _MODEL if k in snapshot}
        features = snapshot.get("features") or {}
        kept["features"] = {k: features[k] for k in _MODEL_FEATURES if k in features}
        kept["features"]["tenant"] = pseudonym(key, "tenant:" + str(features.get("tenant")))
        kept["error"] = bool(snapshot.get("error"))
    else:
        kept = {k: snapshot[k] for k in _TRUST if k in snapshot}
        if isinstance(kept.get("judge"), dict):
            kept["judge"] = {k: kept["judge"][k] for k in ("id", "verdict", "confidence") if k in kept["judge"]}
    out["snapshot"] = kept
    return out
