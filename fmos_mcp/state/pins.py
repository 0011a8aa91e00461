"""Tool pins: the definition of each tool as last seen and as last approved (by hash), with findings.

A tool is served only while its current definition is the approved one. Storage only; what counts as a
finding and when to auto-approve is the trust plane's `vetting`.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from fmos_mcp.state.db import StateDB


@dataclass(frozen=True)
class Pin:
    server: str
    tool: str
    seen_hash: str
    approved_hash: str | None
    findings: tuple[dict[str, Any], ...]
    approved_by: str | None = None
    seen_definition: str = ""

    @property
    def approved(self) -> bool:
        return self.approved_hash == self.seen_hash


class PinStore:
    def __init__(self, db: StateDB) -> None:
        self.db = db

    def load(self) -> dict[tuple[str, str], Pin]:
        with self.db.locked() as db:
            cursor = db.execute(
                "SELECT server, tool, seen_hash, approved_hash, findings, approved_by, seen_definition FROM tool_pins")
            return {(r[0], r[1]): Pin(r[0], r[1], r[2], r[3], tuple(json.loads(r[4] or "[]")), r[5], r[6]) for r in cursor}

    def save(self, *pins: Pin) -> None:
        now = time.time()
        with self.db.locked() as db, db.conn:
            db.conn.executemany(
                """INSERT INTO tool_pins (server, tool, seen_hash, seen_definition, seen_at, approved_hash, approved_at,
                                          approved_by, findings)
                   VALUES (?,?,?,?,?,?,?,?,?)
                   ON CONFLICT (server, tool) DO UPDATE SET seen_hash=excluded.seen_hash,
                     seen_definition=excluded.seen_definition, seen_at=excluded.seen_at,
                     approved_hash=excluded.approved_hash,
                     approved_at=CASE WHEN excluded.approved_hash IS NOT tool_pins.approved_hash
                                      THEN excluded.approved_at ELSE tool_pins.approved_at END,
                     approved_by=excluded.approved_by, findings=excluded.findings""",
                [(pin.server, pin.tool, pin.seen_hash, pin.seen_definition, now, pin.approved_hash, now, pin.approved_by,
                  json.dumps(list(pin.findings))) for pin in pins],
            )

    def approve(self, server: str, tool: str, by: str) -> Pin | None:
        """Approve the definition last seen; returns the pin, or None when the tool was never seen."""
        pin = self.load().get((server, tool))
        if pin is None:
            return None
        approved = Pin(server, tool, pin.seen_hash, pin.seen_hash, pin.findings, by, pin.seen_definition)
        self.save(approved)
        return approved

    def data_version(self) -> int:
        """Changes whenever another connection (the CLI approving a tool) commits."""
        with self.db.locked() as db:
            return int(db.execute("PRAGMA data_version").fetchone()[0])
