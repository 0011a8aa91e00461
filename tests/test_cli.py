"""The command line: servers, tools, trace, and python -m."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from conftest import PY, ROOT, fault, infra, stdio_gateway, write_servers


def fmos(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PY, "-m", "fmos_mcp", *args], capture_output=True, text=True, cwd=ROOT, timeout=timeout)


def test_version_and_help() -> None:
    assert fmos("--version").stdout.startswith("fmos-mcp ")
    run = fmos()
    assert run.returncode == 2 and "serve" in run.stderr and "trace" in run.stderr


def test_servers_reports_status_era_tool_count_and_last_error(tmp_path: Path) -> None:
    servers = write_servers(tmp_path / "servers.d", {
        "infra": infra(),
        "faulty": fault("--tools", "3"),
        "ghost": {"command": "no-such-binary-fmos"},
        "off": {"command": "whatever", "enabled": False},
    })
    run = fmos("servers", "--json", "--servers-dir", str(servers), "--state-dir", str(tmp_path / "state"), "--timeout", "20")
    report = {s["name"]: s for s in json.loads(run.stdout)["servers"]}
    assert run.returncode == 1  # one server is down
    assert report["infra"]["status"] == "up" and report["infra"]["era"] == "2026-07-28" and report["infra"]["tools"] == 15
    assert report["faulty"]["status"] == "up" and report["faulty"]["era"] == "2025-06-18" and report["faulty"]["tools"] == 14
    assert report["ghost"]["status"] == "down" and "no-such-binary-fmos' was not found" in report["ghost"]["last_error"]
    assert report["off"]["status"] == "disabled"
    table = fmos("servers", "--servers-dir", str(servers), "--state-dir", str(tmp_path / "state"), "--timeout", "20")
    assert table.stdout.splitlines()[0].split() == ["NAME", "STATUS", "ERA", "TOOLS", "LAST_ERROR"]
    assert "ghost" in table.stdout and "infra" in table.stdout


def test_tools_lists_every_aggregated_tool_with_its_server_and_status(tmp_path: Path) -> None:
    servers = write_servers(tmp_path / "servers.d", {
        "infra": infra(tools={"deny": ["exec_on_node", "rotate_*"]}),
        "plain": fault(prefix=False),
    })
    run = fmos("tools", "--json", "--servers-dir", str(servers), "--state-dir", str(tmp_path / "state"))
    report = json.loads(run.stdout)
    tools = {(t["server"], t["original"]): t for t in report["tools"]}
    assert tools[("infra", "get_node")]["name"] == "infra__get_node" and tools[("infra", "get_node")]["status"] == "active"
    assert tools[("infra", "exec_on_node")]["status"] == "filtered"
    assert tools[("infra", "rotate_credentials")]["status"] == "filtered"
    assert tools[("plain", "ok")]["name"] == "ok"  # prefix: false
    assert run.returncode == 0


async def test_trace_shows_what_the_gateway_recorded(tmp_path: Path) -> None:
    servers = write_servers(tmp_path / "servers.d", {"infra": infra()})
    state = tmp_path / "state"
    assert fmos("trace", "--state-dir", str(state)).returncode == 1  # nothing recorded yet: says so
    async with stdio_gateway(servers, state, "legacy") as client:
        await client.call_tool("infra__get_node", {"name": "web-1"})
        await client.call_tool("infra__get_node", {"name": "nope"})
    rows = json.loads(fmos("trace", "--json", "--last", "5", "--state-dir", str(state)).stdout)
    calls = [r for r in rows if r["method"] == "tools/call"]
    assert [r["outcome"] for r in calls] == ["ok", "tool_error"]
    assert all(r["server"] == "infra" and r["name"] == "infra__get_node" and r["session"] for r in calls)
    table = fmos("trace", "--last", "5", "--state-dir", str(state)).stdout
    assert "infra__get_node" in table and "tool_error" in table
