"""Traces: one row per request, recorded without I/O on the request path and written in batches."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any

import anyio
from mcp.shared.exceptions import MCPError

from fmos_mcp.evolve.features import argument_tokens
from fmos_mcp.state.batch import BatchWriter
from fmos_mcp.state.db import StateDB
from fmos_mcp.traps.pipeline import CallNext
from fmos_mcp.traps.request import MediatedRequest
from fmos_mcp.traps.sizes import content_bytes, json_bytes

COLUMNS = (
    "ts", "session", "tenant", "transport", "era", "direction", "method", "server", "name",
    "arg_bytes", "result_bytes", "latency_ms", "outcome", "error", "traps", "features",
)


class TraceStore:
    """Rows wait in memory and a background task writes them; `flush` on shutdown loses nothing."""

    def __init__(self, db: StateDB, *, key: bytes = b"", batch: int = 512, interval: float = 0.25, max_pending: int = 100_000):
        self.db = db
        self.key = key  # pseudonyms of argument values in features (the trust plane's key)
        self.writer = BatchWriter("traces", self._write, batch=batch, interval=interval, max_pending=max_pending)
        self.run = self.writer.run
        self.flush = self.writer.flush

    def record(self, request: MediatedRequest, result: Any, outcome: str, error: str | None) -> None:
        """O(1) on the request path: sizes and the row itself are computed by the writer, off the loop."""
        self.writer.record((request, result, outcome, error, time.time(), time.perf_counter()))

    def _write(self, records: list[tuple[Any, ...]]) -> None:
        rows = [_row(*record, key=self.key) for record in records]
        placeholders = ",".join("?" * len(COLUMNS))
        with self.db.locked() as db, db.conn:
            db.conn.executemany(f"INSERT INTO traces ({','.join(COLUMNS)}) VALUES ({placeholders})", rows)

    def recent(self, last: int | None = 20, tenant: str | None = None) -> list[dict[str, Any]]:
        """The last `last` rows (None: every row), oldest first, with traps and features decoded."""
        sql = "SELECT * FROM traces"
        args: list[Any] = []
        if tenant is not None:
            sql += " WHERE tenant = ?"
            args.append(tenant)
        sql += " ORDER BY id DESC"
        if last is not None:
            sql += " LIMIT ?"
            args.append(last)
        with self.db.locked() as db:
            cursor = db.execute(sql, args)
            names = [d[0] for d in cursor.description]
            rows = [dict(zip(names, r, strict=True)) for r in cursor.fetchall()]
        for row in rows:
            row["traps"] = json.loads(row["traps"]) if row.get("traps") else []
            row["features"] = json.loads(row["features"]) if row.get("features") else None
        return list(reversed(rows))


class TracingInterceptor:
    """First in the pipeline: times the request and records its outcome and trap decisions."""

    name = "tracing"

    def __init__(self, store: TraceStore) -> None:
        self.store = store

    async def __call__(self, request: MediatedRequest, call_next: CallNext) -> Any:
        outcome, error, result = "ok", None, None
        try:
            result = await call_next(request)
            if getattr(result, "is_error", False):
                outcome = "tool_error"
            return result
        except MCPError as exc:
            outcome, error = "error", f"{exc.error.code}: {exc.error.message}"
            raise
        except anyio.get_cancelled_exc_class():
            outcome = "cancelled"
            raise
        except Exception as exc:
            outcome, error = "error", f"{type(exc).__name__}: {exc}"
            raise
        finally:
            self.store.record(request, result, outcome, error)


def _row(request: MediatedRequest, result: Any, outcome: str, error: str | None, ts: float, ended: float, *,
         key: bytes) -> tuple[Any, ...]:
    if request.trail and request.trail[-1].decision == "deny":
        outcome = "denied"
    host = request.host
    traps, features = [], None
    for trap in request.trail:
        out = trap.as_json()
        if trap.service == "trust" and "features" in trap.snapshot:  # they become the row's, not the trap's
            features = trap.snapshot["features"]
            out["snapshot"] = {k: v for k, v in trap.snapshot.items() if k != "features"}
        traps.append(out)
    if features is None and request.method == "tools/call":  # the fast path computed none: the shape, off the loop
        at = datetime.fromtimestamp(ts, UTC)
        features = {"server": request.server, "tool": request.target, "roles": sorted(host.roles), "hour": at.hour,
                    "weekday": at.weekday(), "args": argument_tokens(request.arguments, key)}
    return (
        ts, host.session_id, host.tenant, host.transport, host.era, request.direction.value, request.method,
        request.server, request.name,
        json_bytes(dict(request.arguments)) if request.arguments else 0,
        content_bytes(result) if result is not None else 0,
        round((ended - request.started) * 1000, 3),
        outcome, error,
        json.dumps(traps) if traps else None,
        json.dumps(features) if features else None,
    )
