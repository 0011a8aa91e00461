"""Versions at work in a running gateway: the trust interceptor serves the active policies and trap model,
a canary serves its share of sessions and is rolled back by itself on regression, and changes made by
`fmos-mcp evolve` in another process are picked up within a second.

Policies versions swap the trust plane's rules, judges, limits and detectors live; their other sections
(context, models, budgets) apply from the next start. A learned routing table swaps live in the model plane.
"""

from __future__ import annotations

import copy
import json
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import anyio.to_thread

from fmos_mcp import logs
from fmos_mcp.evolve.canary import CanaryWatch, in_canary
from fmos_mcp.evolve.config import EvolveConfig
from fmos_mcp.evolve.trapmodel import TrapModel
from fmos_mcp.evolve.versions import Version, VersionStore
from fmos_mcp.gateway.catalog import ServerListing
from fmos_mcp.state.pins import Pin, PinStore
from fmos_mcp.state.polling import poll
from fmos_mcp.traps.pipeline import CallNext
from fmos_mcp.traps.request import Direction, MediatedRequest
from fmos_mcp.trust.policy import load_bundle, read_bundle
from fmos_mcp.trust.service import TrustService
from fmos_mcp.trust.vetting import Vetting

log = logs.get("fmos.evolve")
POLL = 1.0


def adopt_policy_files(store: VersionStore, directory: Path | None) -> Version | None:
    """The policies directory becomes a new active version when its files changed since they were last
    recorded; otherwise the active version (perhaps one `evolve promote` chose) stays."""
    return _adopt(store, "policies", directory, read_bundle(directory) if _is_dir(directory) else None)


def adopt_skill_files(store: VersionStore, directory: Path | None, state_dir: Path) -> Path | None:
    """The same for the skills directory; returns where the active version's files are (a copy under the
    state directory when a promoted version differs from the files), or None when there are none."""
    files = read_files(directory) if _is_dir(directory) else None
    version = _adopt(store, "skills", directory, files)
    if version is None:
        return None
    if files is not None and version.body == json.dumps(files, sort_keys=True):
        return directory
    return materialize(version, state_dir / "versions")


def _is_dir(directory: Path | None) -> bool:
    return directory is not None and directory.is_dir()


def _adopt(store: VersionStore, kind: str, directory: Path | None, files: dict[str, str] | None) -> Version | None:
    """`files`: the directory's, read once by the caller (None: no directory)."""
    if files is None:
        return store.active(kind)
    body = json.dumps(files, sort_keys=True)
    recorded = [v for v in store.all(kind) if v.provenance.get("origin") == "files"]
    if recorded and recorded[-1].body == body and store.active(kind) is not None:
        return store.active(kind)
    return store.adopt(kind, body, {"origin": "files", "directory": str(directory)}, actor="operator (files)")


def read_files(directory: Path) -> dict[str, str]:
    """Every file under `directory`, by relative path (what a skills version holds)."""
    return {p.relative_to(directory).as_posix(): p.read_text(encoding="utf-8", errors="replace")
            for p in sorted(directory.rglob("*")) if p.is_file()}


def materialize(version: Version, root: Path) -> Path:
    """A version's files written out once under `root` (content-addressed); names that would leave the
    directory are skipped."""
    target = root / f"{version.kind}-{version.sha256[:16]}"
    if not target.is_dir():
        staging = root / f".{target.name}.tmp"
        shutil.rmtree(staging, ignore_errors=True)  # left by a crash half way
        for name, text in json.loads(version.body).items():
            path = (staging / name).resolve()
            if name.startswith("/") or ".." in Path(name).parts or not path.is_relative_to(staging.resolve()):
                log.warning("skipped a file name that leaves the version's directory", version=version.label, name=name)
                continue
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
        staging.mkdir(parents=True, exist_ok=True)
        staging.rename(target)
    return target


class ReadOnlyPins(PinStore):
    """A canary's view of the pins: it may quarantine for its sessions, never release a tool for everyone."""

    def save(self, *pins: Pin) -> None:
        return None


@dataclass
class Canary:
    version: Version
    service: TrustService
    watch: CanaryWatch


class TrustVersions:
    """The pipeline's trust interceptor, per version: control sessions get the active service, canary
    sessions the candidate's."""

    name = "trust"

    def __init__(self, active: TrustService, store: VersionStore, config: EvolveConfig) -> None:
        self.active = active
        self.store = store
        self.config = config
        self.canary: Canary | None = None
        self.policies_sha: str | None = None  # of the policies version served; None until the app says
        # Every server's last listing, over all pools: a new version's profiles exist before its first call.
        self.listings: dict[str, ServerListing] = {}
        self.on_routing: Callable[[str | None], None] | None = None  # the model plane's learned table
        self.routing_id: int | None = None

    # ----------------------------------------------------------------- serving

    async def __call__(self, request: MediatedRequest, call_next: CallNext) -> Any:
        canary = self.canary
        arm = "control"
        if canary is not None and request.direction is Direction.TO_SERVER and \
                in_canary(request.host.session_id, canary.version.id, canary.version.share or 0):
            arm = "canary"
        service = canary.service if canary is not None and arm == "canary" else self.active
        result = await service(request, call_next)
        if canary is not None and request.method == "tools/call":
            why = canary.watch.observe(arm, request, result)
            if why is not None:
                await self._roll_back(canary, why)
        return result

    def vet(self, listings: Sequence[ServerListing]) -> list[ServerListing]:
        """The catalog transform: the active version decides what hosts see; a canary's profiles are kept too."""
        self.listings.update((listing.server, listing) for listing in listings)
        canary = self.canary
        if canary is not None and canary.service.vetting is not self.active.vetting:
            canary.service.vetting(listings)
        return self.active.vetting(listings)

    async def _roll_back(self, canary: Canary, why: str) -> None:
        if self.canary is not canary:
            return  # another request already did
        self.canary = None
        log.warning("canary rolled back", version=canary.version.label, why=why, arms=canary.watch.report())
        await anyio.to_thread.run_sync(lambda: self.store.rollback(canary.version.kind, actor="canary watch", why=why))

    # ----------------------------------------------------------------- versions

    def reload(self) -> bool:
        """Serve what the store says is active and in canary; True when what hosts may see changed."""
        changed = False
        policies = self.store.active("policies")
        if policies is not None and policies.sha256 != self.policies_sha:
            if self.policies_sha is not None:
                self.active = self._service(policies, self.active)
                changed = True
            self.policies_sha = policies.sha256
        model = self.store.active("trap-model")
        self._set_model(self.active, model)
        self._reload_canary()
        routing = self.store.active("routing")
        if self.on_routing is not None and (routing.id if routing else None) != self.routing_id:
            self.routing_id = routing.id if routing else None
            self.on_routing(routing.body if routing else None)
        return changed

    def _reload_canary(self) -> None:
        candidate = self.store.canary("policies") or self.store.canary("trap-model")
        current = self.canary
        if candidate is None:
            self.canary = None
            return
        if current is not None and current.version.id == candidate.id:
            current.version = candidate  # the share may have changed
            return
        if candidate.kind == "policies":
            service = self._service(candidate, self.active, pins=ReadOnlyPins(self.active.vetting.pins.db))
            self._set_model(service, self.store.active("trap-model"))
        else:
            service = copy.copy(self.active)  # same rules, limits, approvals and history; another model
            self._set_model(service, candidate)
        self.canary = Canary(candidate, service, CanaryWatch(candidate.id, self.config.canary))
        log.info("canary serving", version=candidate.label, share=candidate.share)

    def _service(self, version: Version, like: TrustService, pins: PinStore | None = None) -> TrustService:
        policies = load_bundle(json.loads(version.body))
        for error in policies.errors:
            log.error("policy error in a version; the file is skipped", version=version.label, detail=str(error))
        vetting = Vetting(policies, pins or like.vetting.pins, like.audit)
        if self.listings:
            vetting(list(self.listings.values()))  # profiles before the first call, not at the next rebuild
        return TrustService(policies, vetting, like.audit, judges=like.judges, clock=like.clock, key=like.key)

    def _set_model(self, service: TrustService, version: Version | None) -> None:
        if version is None:
            service.trap_model, service.trap_version = None, None
        elif service.trap_version != version.version:
            model = TrapModel.from_json(version.body)
            model.audit_share = self.config.trap_audit_share
            service.trap_model, service.trap_version = model, version.version

    async def watch(self, on_change: Callable[[], None], *,
                    task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Pick up `fmos-mcp evolve canary|promote|rollback` run from another process."""
        await poll(self.store.stamp, self.reload, on_change, interval=POLL, task_status=task_status)
