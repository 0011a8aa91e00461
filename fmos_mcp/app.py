"""The composition root: the one module that knows every plane. It reads configuration and assembles
the gateway (pools, face) and the pipeline of interceptors from what is enabled."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

from mcp.shared.exceptions import MCPDeprecationWarning

from fmos_mcp import logs
from fmos_mcp.config import ConfigError, ServersConfig, load_servers_dir
from fmos_mcp.gateway.core import Gateway, GatewaySettings
from fmos_mcp.gateway.upstream import Identity
from fmos_mcp.state.db import StateDB
from fmos_mcp.state.traces import TraceStore, TracingInterceptor
from fmos_mcp.traps.pipeline import Interceptor

log = logs.get("fmos.app")


@dataclass
class AppConfig:
    servers_dir: Path
    policies_dir: Path
    state_dir: Path
    transport: str = "stdio"
    tenant: str = "local"
    settings: GatewaySettings = field(default_factory=GatewaySettings)


@dataclass
class App:
    config: AppConfig
    servers: ServersConfig
    db: StateDB
    traces: TraceStore
    gateway: Gateway

    @property
    def errors(self) -> list[ConfigError]:
        return self.servers.errors


def build(config: AppConfig) -> App:
    # The gateway deliberately speaks the deprecated parts of MCP (roots, logging, sampling) to old peers.
    warnings.filterwarnings("ignore", category=MCPDeprecationWarning)
    servers = load_servers_dir(config.servers_dir)
    for error in servers.errors:
        log.error("configuration error", detail=str(error))
    db = StateDB(config.state_dir)
    traces = TraceStore(db)
    interceptors: list[Interceptor] = [TracingInterceptor(traces)]
    gateway = Gateway(
        list(servers.servers.values()),
        interceptors,
        config.settings,
        default_identity=Identity(config.tenant),
        transport=config.transport,
    )
    return App(config, servers, db, traces, gateway)
