"""Replay: calls sent through a real trust service built from a policies version (and a trap model), offline.

Evaluation sets are JSON Lines, one call each:
`{"session", "tenant", "roles", "at" (ISO 8601), "server", "tool" (the server's own name), "arguments",
"label": "benign" | "malicious", "judge": "allow" | "deny"}`; `judge` is what a judge would say of the call
(the set's oracle), answered to any judge the policies ask. Tool definitions come from the pins the gateway
recorded, so a set can only name tools a running gateway has seen. Nothing is written to the state database:
the replay's pins and audit rows live in a throwaway database.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import mcp_types as types

from fmos_mcp.config import ServersConfig
from fmos_mcp.evolve.train import went_slow
from fmos_mcp.evolve.trapmodel import TrapModel
from fmos_mcp.gateway.catalog import ServerListing
from fmos_mcp.gateway.naming import exposed_name
from fmos_mcp.state.audit import AuditLog
from fmos_mcp.state.db import StateDB
from fmos_mcp.state.pins import PinStore
from fmos_mcp.traps.request import HostCapabilities, HostInfo, MediatedRequest
from fmos_mcp.trust.policy import PolicySet
from fmos_mcp.trust.service import TrustService
from fmos_mcp.trust.vetting import Vetting

REPLAY = "fmos/replay"


class EvalSetError(Exception):
    pass


@dataclass(frozen=True)
class EvalCall:
    session: str
    tenant: str
    roles: tuple[str, ...]
    at: datetime
    server: str
    tool: str
    arguments: dict[str, Any]
    label: str | None = None
    judge: str = "allow"


@dataclass
class Outcome:
    call: EvalCall
    action: str  # allow | block | ask (a person is asked)
    slow: bool  # a judge or a person was involved
    sensitive: bool
    rule: str = ""
    learned: dict[str, Any] | None = None
    features: dict[str, Any] | None = field(default=None, repr=False)
    undecided: bool = False


def load_evalset(path: Path) -> list[EvalCall]:
    calls = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            calls.append(EvalCall(str(row["session"]), str(row.get("tenant", "local")), tuple(row.get("roles", ())),
                                  datetime.fromisoformat(row["at"]).astimezone(UTC), row["server"], row["tool"],
                                  dict(row.get("arguments") or {}), row.get("label"), row.get("judge", "allow")))
        except (ValueError, KeyError, TypeError) as exc:
            what = f"missing key {exc}" if isinstance(exc, KeyError) else str(exc)
            raise EvalSetError(f"{path}:{number}: not an evaluation call ({what})") from None
    return calls


def listings_from_pins(db: StateDB, servers: ServersConfig | None) -> list[ServerListing]:
    """The tools the gateway has seen, as catalog listings (prefixes from servers.d when known)."""
    by_server: dict[str, list[types.Tool]] = {}
    for (server, _), pin in sorted(PinStore(db).load().items()):
        if pin.seen_definition:
            by_server.setdefault(server, []).append(types.Tool.model_validate(json.loads(pin.seen_definition)))
    known = servers.servers if servers else {}
    return [ServerListing(name, getattr(known.get(name), "prefix", None), tools) for name, tools in by_server.items()]


class Replayer:
    """One trust service per (policies, model), on its own throwaway state."""

    def __init__(self, policies: PolicySet, listings: Sequence[ServerListing], model: TrapModel | None = None,
                 key: bytes = b"replay") -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="fmos-replay-")
        db = StateDB(Path(self._dir.name))
        audit = AuditLog(db)  # never run: its rows stay in memory and go with the replayer
        vetting = Vetting(policies, PinStore(db), audit)
        vetting(listings)
        self.service = TrustService(policies, vetting, audit, key=key)
        self.service.trap_model, self.service.trap_version = model, 0 if model else None
        self.service.judges.ask = _oracle
        self.service._audit_draw.seed(0)
        self.listings = {(listing.server, t.name): listing for listing in listings for t in listing.tools}

    async def run(self, calls: Sequence[EvalCall]) -> list[Outcome]:
        return [await self.one(call) for call in calls]

    async def one(self, call: EvalCall) -> Outcome:
        listing = self.listings.get((call.server, call.tool))
        if listing is None:
            raise EvalSetError(f"the evaluation set names tool '{call.tool}' of server '{call.server}', which this "
                               "gateway has never seen (run it once with that server)")
        exposed = exposed_name(listing.prefix, call.tool)
        host = HostInfo(call.session, call.tenant, "replay", "replay", HostCapabilities(), call.roles)
        request = MediatedRequest("tools/call", host, server=call.server, name=exposed, target=call.tool,
                                  arguments=call.arguments, meta={REPLAY: call.judge})
        self.service.clock = lambda: call.at
        await self.service(request, _answer)
        trust = next((t for t in reversed(request.trail) if t.service == "trust"), None)
        snapshot = trust.snapshot if trust else {}
        profile = self.service.vetting.profiles.get((call.server, call.tool))
        sensitive = bool(profile and (profile.inferred_sensitive or profile.classification.sensitive))
        action = "allow"
        if "approval" in snapshot:
            action = "ask"
        elif trust is not None and trust.decision == "deny":
            action = "block"
        return Outcome(call, action, went_slow(snapshot), sensitive,
                       snapshot.get("rule", ""), snapshot.get("learned"), snapshot.get("features"),
                       bool(snapshot.get("undecided")))

    def close(self) -> None:
        self._dir.cleanup()


async def _answer(request: MediatedRequest) -> types.CallToolResult:
    return types.CallToolResult(content=[types.TextContent(type="text", text="ok")])


async def _oracle(request: MediatedRequest, params: Any) -> types.CreateMessageResult:
    verdict = (request.meta or {}).get(REPLAY, "allow")
    text = json.dumps({"verdict": verdict, "confidence": 1.0, "reason": "the evaluation set's verdict"})
    return types.CreateMessageResult(role="assistant", content=types.TextContent(type="text", text=text), model="oracle")

