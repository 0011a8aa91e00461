"""`fmos-mcp budget`: what each budget has spent in its current window, and the shared budgets' prices."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from fmos_mcp.models.budget_config import BudgetConfig, window_text
from fmos_mcp.models.budgets import BudgetBook
from fmos_mcp.state.db import DB_FILE, StateDB
from fmos_mcp.trust.policy import load_policies


def budget_show(state_dir: Path, policies_dir: Path, as_json: bool) -> int:
    """Usage as the database has it: a running gateway writes behind, so up to a second of commits and its
    in-flight reservations are not in it."""
    policies = load_policies(policies_dir)
    for error in policies.errors:
        print(f"policy error (file skipped): {error}", file=sys.stderr)
    config = BudgetConfig.from_section(policies.sections.get("budgets"))
    db = StateDB(state_dir) if (state_dir / DB_FILE).exists() else None
    try:
        snapshot = BudgetBook(db, config).snapshot()
    finally:
        if db is not None:
            db.close()
    if as_json:
        print(json.dumps(snapshot, indent=2))
        return 0
    if not config.budgets:
        print(f"no budgets in {policies_dir} (add a `budgets:` section to a policy file)")
        return 0
    _table([_usage_row(row, snapshot["now"]) for row in snapshot["usage"]],
           ["budget", "subject", "resource", "used", "limit", "remaining", "window", "resets", "on_exceed"])
    if snapshot["prices"]:
        print()
        _table([_price_row(row) for row in snapshot["prices"]],
               ["budget", "resource", "price", "demand", "capacity", "last_demand", "last_capacity", "interval"])
    if db is None:
        print(f"\n(no state database in {state_dir} yet: nothing spent)")
    return 0


def _usage_row(row: dict[str, Any], now: float) -> dict[str, Any]:
    subject = row["subject"]
    degrade = row["degrade"] or {}
    return {
        "budget": row["budget"],
        "subject": ("*" if subject is None else " ".join(f"{k}={v}" for k, v in subject.items()) or "shared"),
        "resource": row["resource"], "used": _num(row["used"]), "limit": _num(row["limit"]),
        "remaining": _num(row["remaining"]), "window": window_text(row["window"]),
        "resets": f"in {_span(row['resets_at'] - now)} ({time.strftime('%H:%M', time.localtime(row['resets_at']))})",
        "on_exceed": row["on_exceed"] + (f" -> {'/'.join(degrade.values())}" if degrade else ""),
    }


def _price_row(row: dict[str, Any]) -> dict[str, Any]:
    capacity = row["capacity"]
    return {"budget": row["budget"], "resource": row["resource"], "price": f"{row['price']:.3g}",
            "demand": _num(row["demand"]), "capacity": "-" if capacity is None else _num(capacity),
            "last_demand": _num(row["last_demand"]), "last_capacity": _num(row["last_capacity"]),
            "interval": window_text(row["interval"])}


def _num(value: float) -> str:
    return f"{value:,.0f}" if value == int(value) else f"{value:,.1f}"


def _span(seconds: float) -> str:
    seconds = max(0, int(seconds))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours}h"
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def _table(rows: list[dict[str, Any]], columns: list[str]) -> None:
    cells = [[str(r.get(c, "")) for c in columns] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
    print("  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip())
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())
