"""Hosts: install into and import from real configuration files in a temporary home directory, then start
what the written configuration says to start and talk to it with a real client."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from mcp import Client, StdioServerParameters

from conftest import INFRA, PY, ROOT, text_of
from fmos_mcp.hostconfig import config_path

HOST_FILES = {
    "claude-desktop": Path(".config/Claude/claude_desktop_config.json"),
    "claude-code": Path(".claude.json"),
    "cursor": Path(".cursor/mcp.json"),
}


def fmos(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config")}
    env.pop("APPDATA", None)
    return subprocess.run([PY, "-m", "fmos_mcp", *args], capture_output=True, text=True, cwd=home, env=env, timeout=120)


def host_config(home: Path, host: str, servers: dict[str, Any], **other: Any) -> Path:
    path = home / HOST_FILES[host]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**other, "mcpServers": servers}, indent=2))
    return path


def original_servers() -> dict[str, Any]:
    return {
        "time": {"command": PY, "args": ["-m", "mcp_server_time", "--local-timezone", "UTC"]},
        "infra": {"command": PY, "args": [str(INFRA)], "env": {"INFRA_API_TOKEN": "tok-very-secret-1"}},
    }


async def start_entry(entry: dict[str, Any]) -> tuple[set[str], str]:
    """Start what the host's file says, as the host would, and use it."""
    params = StdioServerParameters(command=entry["command"], args=entry["args"], env=entry.get("env") or None)
    async with Client(params, mode="legacy") as client:
        names = {t.name for t in (await client.list_tools()).tools}
        node = text_of(await client.call_tool("infra__get_node", {"name": "db-1"}))
    return names, node


@pytest.mark.parametrize("host", list(HOST_FILES))
async def test_import_then_install_then_the_host_reaches_everything_through_fmos(tmp_path: Path, host: str) -> None:
    home = tmp_path / "home"
    path = host_config(home, host, original_servers(), theme="dark", projects={"/x": {"allowedTools": []}})
    original_text = path.read_text()
    servers_dir, state_dir = home / "fmos" / "servers.d", home / "fmos" / "state"

    imported = fmos(home, "config", "import", "--from", host, "--servers-dir", str(servers_dir))
    assert imported.returncode == 0, imported.stderr
    assert sorted(p.name for p in servers_dir.iterdir()) == ["infra.json", "time.json"]
    infra_file = json.loads((servers_dir / "infra.json").read_text())
    assert infra_file["mcpServers"]["infra"]["env"] == {"INFRA_API_TOKEN": "tok-very-secret-1"}
    assert (servers_dir / "infra.json").stat().st_mode & 0o077 == 0  # a literal secret stays private

    installed = fmos(home, "install", host, "--servers-dir", str(servers_dir), "--state-dir", str(state_dir),
                     "--policies-dir", str(home / "fmos" / "policies"))
    assert installed.returncode == 0, installed.stderr
    document = json.loads(path.read_text())
    assert document["theme"] == "dark" and document["projects"] == {"/x": {"allowedTools": []}}  # untouched
    assert list(document["mcpServers"]) == ["fmos"]
    entry = document["mcpServers"]["fmos"]
    assert Path(entry["command"]).is_absolute() and all(Path(a).is_absolute() for a in entry["args"][4::2])
    assert (entry.get("type") == "stdio") == (host == "claude-code")
    assert path.with_name(path.name + ".fmos-backup").read_text() == original_text

    names, node = await start_entry(entry)
    assert {"time__get_current_time", "infra__get_node"} <= names
    assert "db-1" in node

    again = fmos(home, "install", host, "--servers-dir", str(servers_dir), "--state-dir", str(state_dir),
                 "--policies-dir", str(home / "fmos" / "policies"))
    assert "already up to date" in again.stdout
    assert path.with_name(path.name + ".fmos-backup").read_text() == original_text  # still the original

    removed = fmos(home, "uninstall", host)
    assert removed.returncode == 0, removed.stderr
    restored = json.loads(path.read_text())
    assert restored["mcpServers"] == original_servers() and restored["theme"] == "dark"
    assert not path.with_name(path.name + ".fmos-backup").exists()


def test_dry_run_prints_the_change_and_writes_nothing(tmp_path: Path) -> None:
    home = tmp_path / "home"
    path = host_config(home, "cursor", {"time": original_servers()["time"]})
    before = path.read_text()
    run = fmos(home, "install", "cursor", "--dry-run", "--servers-dir", str(home / "s"), "--state-dir", str(home / "t"),
               "--policies-dir", str(home / "p"))
    assert run.returncode == 0
    assert '+    "fmos": {' in run.stdout and run.stdout.startswith("will create")
    assert path.read_text() == before and not (home / "s").exists()
    assert not path.with_name(path.name + ".fmos-backup").exists()
    dry_import = fmos(home, "config", "import", "--from", "cursor", "--dry-run", "--servers-dir", str(home / "s"))
    assert "would write" in dry_import.stdout and path.read_text() == before and not (home / "s").exists()


def test_secrets_can_be_left_as_references(tmp_path: Path) -> None:
    home = tmp_path / "home"
    remote = {"type": "http", "url": "https://mcp.example/mcp", "headers": {"Authorization": "Bearer hdr-secret-2"}}
    host_config(home, "claude-code", {**original_servers(), "remote": remote})
    servers_dir = home / "servers.d"
    run = fmos(home, "config", "import", "--from", "claude-code", "--secrets-as-env", "--servers-dir", str(servers_dir))
    assert "INFRA_API_TOKEN" in run.stdout and "REMOTE_AUTHORIZATION" in run.stdout
    assert "tok-very-secret-1" not in run.stdout + run.stderr and "hdr-secret-2" not in run.stdout + run.stderr
    infra = json.loads((servers_dir / "infra.json").read_text())["mcpServers"]["infra"]
    assert infra["env"] == {"INFRA_API_TOKEN": "${INFRA_API_TOKEN}"}
    converted = json.loads((servers_dir / "remote.json").read_text())["mcpServers"]["remote"]
    assert converted == {"url": "https://mcp.example/mcp", "headers": {"Authorization": "${REMOTE_AUTHORIZATION}"}}
    probe = fmos(home, "servers", "--json", "--servers-dir", str(servers_dir), "--state-dir", str(home / "st"), "--timeout", "20")
    errors = json.loads(probe.stdout)["config_errors"]
    assert any("environment variable INFRA_API_TOKEN is not set" in e for e in errors)


def test_a_broken_host_file_is_reported_and_left_alone(tmp_path: Path) -> None:
    home = tmp_path / "home"
    path = home / HOST_FILES["claude-desktop"]
    path.parent.mkdir(parents=True)
    path.write_text('{"mcpServers": {"x": ')
    run = fmos(home, "install", "claude-desktop", "--servers-dir", str(home / "s"), "--state-dir", str(home / "t"))
    assert run.returncode == 1 and "not valid JSON" in run.stderr and str(path) in run.stderr
    assert path.read_text() == '{"mcpServers": {"x": '
    clash = host_config(home, "cursor", {"fmos": {"command": "something-else"}})
    run = fmos(home, "install", "cursor", "--servers-dir", str(home / "s"), "--state-dir", str(home / "t"))
    assert run.returncode == 1 and "exists and is not fmos-mcp" in run.stderr
    assert json.loads(clash.read_text())["mcpServers"]["fmos"] == {"command": "something-else"}


def test_configuration_paths_per_operating_system(tmp_path: Path) -> None:
    home = Path("/home/u")
    assert config_path("claude-desktop", home=home, platform="darwin") == \
        home / "Library/Application Support/Claude/claude_desktop_config.json"
    assert config_path("claude-desktop", home=home, platform="win32", environ={"APPDATA": "C:/Users/u/AppData/Roaming"}) == \
        Path("C:/Users/u/AppData/Roaming/Claude/claude_desktop_config.json")
    assert config_path("claude-desktop", home=home, platform="linux", environ={}) == home / ".config/Claude/claude_desktop_config.json"
    assert config_path("claude-code", home=home) == home / ".claude.json"
    assert config_path("cursor", home=home) == home / ".cursor/mcp.json"
    assert ROOT.exists()
