"""The composition root: the one module that knows every plane. It reads configuration and assembles
the gateway (pools, face) and the pipeline of interceptors from what is enabled."""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from dataclasses import replace as dc_replace
from pathlib import Path

import anyio
import anyio.abc
from mcp.shared.exceptions import MCPDeprecationWarning

from fmos_mcp import logs
from fmos_mcp.config import ConfigError, ServersConfig, load_servers_dir
from fmos_mcp.context.plane import DataPlane
from fmos_mcp.evolve.config import EvolveConfig
from fmos_mcp.evolve.routes import RouteTable
from fmos_mcp.evolve.runtime import TrustVersions, adopt_policy_files, adopt_skill_files
from fmos_mcp.evolve.versions import VersionStore
from fmos_mcp.gateway.core import Gateway, GatewaySettings
from fmos_mcp.gateway.own import OwnServices
from fmos_mcp.models.plane import ModelPlane
from fmos_mcp.models.service import ModelService
from fmos_mcp.gateway.upstream import Identity
from fmos_mcp.state.db import StateDB
from fmos_mcp.state.traces import TraceStore, TracingInterceptor
from fmos_mcp.traps.pipeline import Interceptor
from fmos_mcp.traps.request import HostCapabilities
from fmos_mcp.trust.plane import TrustPlane

log = logs.get("fmos.app")


@dataclass
class AppConfig:
    servers_dir: Path
    policies_dir: Path
    state_dir: Path
    transport: str = "stdio"
    tenant: str | None = None  # None: the policies' identity, else "local"
    roles: tuple[str, ...] | None = None
    settings: GatewaySettings = field(default_factory=GatewaySettings)
    trust: bool = True  # off only to measure what the trust plane costs (bench/security)


@dataclass
class App:
    config: AppConfig
    servers: ServersConfig
    db: StateDB
    traces: TraceStore
    trust: TrustPlane
    own: OwnServices
    data: DataPlane
    models: ModelPlane
    gateway: Gateway
    versions: VersionStore
    trust_versions: TrustVersions

    @property
    def errors(self) -> list[ConfigError]:
        return self.servers.errors

    async def background(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Everything that runs beside the gateway: state writers, and the watch for approvals."""
        async with anyio.create_task_group() as tasks:
            await tasks.start(self.traces.run)
            await tasks.start(self.trust.audit.run)
            await tasks.start(self.trust.watch_pins, self.gateway.refresh_catalogs)
            await tasks.start(self.trust_versions.watch, self.gateway.refresh_catalogs)
            await tasks.start(self.data.run)
            await tasks.start(self.models.run)
            task_status.started()


def build(config: AppConfig) -> App:
    # The gateway deliberately speaks the deprecated parts of MCP (roots, logging, sampling) to old peers.
    warnings.filterwarnings("ignore", category=MCPDeprecationWarning)
    servers = load_servers_dir(config.servers_dir)
    for error in servers.errors:
        log.error("configuration error", detail=str(error))
    db = StateDB(config.state_dir)
    versions = VersionStore(db)
    policies_version = adopt_policy_files(versions, config.policies_dir)
    trust = TrustPlane.build(config.policies_dir, db, json.loads(policies_version.body) if policies_version else None)
    traces = TraceStore(db, key=trust.service.key)
    own = OwnServices()
    sections = trust.policies.sections
    skills_dir = adopt_skill_files(versions, config.policies_dir.parent / "skills" if config.policies_dir else None,
                                   config.state_dir)
    data = DataPlane.build(sections.get("context"), db, config.policies_dir, own, skills_dir)
    models = ModelPlane.build(sections.get("models"), sections.get("budgets"), db)
    model_service = ModelService(models, knowledge=data.tools.memory)
    own.add(model_service.own_tools())
    trust.service.judges.ask = model_service.judge_ask  # judges route and count like any model request
    trust_versions = TrustVersions(trust.service, versions, EvolveConfig.from_section(sections.get("evolve")))
    trust_versions.policies_sha = policies_version.sha256 if policies_version else ""  # "": serving no version
    trust_versions.on_routing = _learned_routes(models)
    trust_versions.reload()
    interceptors: list[Interceptor] = [TracingInterceptor(traces)]
    if config.trust:
        interceptors.append(trust_versions)
    # Budgets before the data plane (a refused call costs nothing); the gateway's own tools last, after every trap.
    interceptors += [model_service, data.service, own]
    policies = trust.policies
    identity = Identity(config.tenant or policies.tenant or "local",
                        config.roles if config.roles is not None else policies.roles)
    gateway = Gateway(
        list(servers.servers.values()),
        interceptors,
        config.settings,
        default_identity=identity,
        transport=config.transport,
        transforms=[own.extend_catalog, data.strip_output_schemas, *([trust_versions.vet] if config.trust else [])],
        offer=_offer_sampling if models.serves_sampling else None,
    )
    return App(config, servers, db, traces, trust, own, data, models, gateway, versions, trust_versions)


def _learned_routes(models: ModelPlane) -> Callable[[str | None], None]:
    """A routing version's body into the model plane's router (None: rules only)."""
    def apply(body: str | None) -> None:
        models.set_learned(RouteTable.from_json(body) if body else None)
    return apply


def _offer_sampling(caps: HostCapabilities) -> HostCapabilities:
    """A configured model answers sampling for hosts that cannot: downstream servers may ask for it."""
    return caps if caps.sampling else dc_replace(caps, sampling=True)
