"""The official MCP Inspector (v2, --cli) as a real client of fmos-mcp over stdio and streamable HTTP, in
both protocol eras, with the gateway fronting server-everything and server-filesystem."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import PY, ROOT, HttpGateway, everything, filesystem, gateway_command, node22, npm_bin, write_servers

ERAS = ["legacy", "modern"]


@pytest.fixture(scope="module")
def peers(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("inspector")
    (base / "shared").mkdir()
    (base / "shared" / "runbook.md").write_text("# runbook\n")
    write_servers(base / "servers.d", {"everything": everything(), "files": filesystem(base / "shared")})
    return base


@pytest.fixture(scope="module")
def http_gateway(peers: Path) -> Iterator[HttpGateway]:
    gateway = HttpGateway(peers / "servers.d", peers / "http-state", token="inspector-token")
    yield gateway
    gateway.stop()


def inspect(target: list[str], era: str, *method: str, storage: Path) -> Any:
    """Run `mcp-inspector --cli`; return the parsed JSON result (it prints one line of JSON)."""
    node = node22()
    env = {**os.environ, "PATH": f"{Path(node).parent}{os.pathsep}{os.environ['PATH']}", "MCP_STORAGE_DIR": str(storage)}
    run = subprocess.run(
        [node, str(npm_bin("@modelcontextprotocol/inspector")), "--cli", "--format", "json", "-q",
         "--protocol-era", era, *method, *target],
        capture_output=True, text=True, timeout=120, env=env, cwd=ROOT,
    )
    assert run.returncode == 0, f"exit {run.returncode}: {run.stderr[-1500:]}"
    return json.loads(run.stdout)["result"]


def targets(transport: str, peers: Path, gateway: HttpGateway) -> list[str]:
    if transport == "http":
        return [f"{gateway.url}/mcp", "--header", f"Authorization: Bearer {gateway.token}"]  # --header takes several values
    return ["--", PY, *gateway_command(peers / "servers.d", peers / "stdio-state")]


@pytest.mark.parametrize("era", ERAS)
@pytest.mark.parametrize("transport", ["stdio", "http"])
def test_the_inspector_lists_and_calls_through_the_gateway(
    transport: str, era: str, peers: Path, http_gateway: HttpGateway, tmp_path: Path
) -> None:
    target = targets(transport, peers, http_gateway)
    tools = {t["name"] for t in inspect(target, era, "--method", "tools/list", storage=tmp_path)["tools"]}
    assert {"everything__echo", "everything__get-sum", "files__list_directory", "files__read_text_file"} <= tools
    echoed = inspect(target, era, "--method", "tools/call", "--tool-name", "everything__echo",
                     "--tool-args-json", '{"message": "through fmos"}', storage=tmp_path)
    assert echoed["content"][0]["text"] == "Echo: through fmos"
    listing = inspect(target, era, "--method", "tools/call", "--tool-name", "files__list_directory",
                      "--tool-args-json", json.dumps({"path": str(peers / "shared")}), storage=tmp_path)
    assert "runbook.md" in listing["content"][0]["text"]
