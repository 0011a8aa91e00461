"""The trust plane assembled: policies, pins and vetting, the trust service, the audit trail, identities."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import anyio
import anyio.abc

from fmos_mcp import logs
from fmos_mcp.gateway.upstream import Identity
from fmos_mcp.state.audit import AuditLog
from fmos_mcp.state.db import StateDB
from fmos_mcp.state.pins import PinStore
from fmos_mcp.state.polling import poll
from fmos_mcp.trust.policy import PolicySet, load_bundle, load_policies
from fmos_mcp.trust.service import TrustService
from fmos_mcp.trust.vetting import Vetting

log = logs.get("fmos.trust")
PIN_POLL = 1.0  # seconds between looks for approvals another process (the CLI) wrote


@dataclass
class TrustPlane:
    policies: PolicySet
    audit: AuditLog
    pins: PinStore
    vetting: Vetting
    service: TrustService

    @classmethod
    def build(cls, policies_dir: Path | None, db: StateDB, bundle: dict[str, str] | None = None) -> TrustPlane:
        """From the policies directory, or from `bundle` (a policies version's files) when given."""
        policies = load_bundle(bundle) if bundle is not None else load_policies(policies_dir)
        for error in policies.errors:
            log.error("policy error; the file is skipped", detail=str(error))
        audit, pins = AuditLog(db), PinStore(db)
        vetting = Vetting(policies, pins, audit)
        service = TrustService(policies, vetting, audit, key=db.secret("features").encode())
        return cls(policies, audit, pins, vetting, service)

    def tokens(self) -> dict[str, Identity]:
        """sha256(token) -> who presents it."""
        return {t.sha256: Identity(t.tenant, t.roles) for t in self.policies.tokens}

    async def watch_pins(self, on_change: Callable[[], None], *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Pick up approvals made by `fmos-mcp tools approve` while serving; `on_change()` rebuilds catalogs."""
        def reload() -> bool:
            self.vetting.reload_pins()
            return True
        await poll(self.pins.data_version, reload, on_change, interval=PIN_POLL, task_status=task_status)


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()
