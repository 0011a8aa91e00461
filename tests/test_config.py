"""servers.d: Claude Desktop's format, merging, `${VAR}`, per-server options, and errors that say where."""

from __future__ import annotations

import json
from pathlib import Path

from fmos_mcp.config import load_servers_dir


def write(directory: Path, name: str, document: object) -> Path:
    directory.mkdir(exist_ok=True)
    path = directory / name
    path.write_text(document if isinstance(document, str) else json.dumps(document))
    return path


def test_stdio_and_remote_entries_with_options(tmp_path: Path) -> None:
    d = tmp_path / "servers.d"
    write(d, "a.json", {"mcpServers": {
        "local": {"command": "python", "args": ["-m", "x"], "env": {"A": "1"}, "cwd": "sub",
                  "timeout": 5, "tools": {"allow": ["get_*"], "deny": ["get_secret"]}, "prefix": "loc"},
        "remote": {"url": "https://example.com/mcp", "headers": {"X-Key": "k"}},
        "legacy_sse": {"url": "http://127.0.0.1:9/sse", "transport": "sse", "prefix": False, "enabled": False},
        "claude_code_style": {"type": "sse", "url": "http://127.0.0.1:9/sse", "era": "legacy"},
    }})
    config = load_servers_dir(d, environ={})
    assert config.errors == []
    local, remote = config.servers["local"], config.servers["remote"]
    assert (local.transport, local.command, local.args, local.env) == ("stdio", "python", ("-m", "x"), {"A": "1"})
    assert local.cwd == str((d / "sub").resolve())  # relative to the file that says it
    assert (local.timeout, local.allow, local.deny, local.prefix) == (5.0, ("get_*",), ("get_secret",), "loc")
    assert (remote.transport, remote.url, remote.headers, remote.prefix) == ("http", "https://example.com/mcp", {"X-Key": "k"}, "remote")
    assert config.servers["legacy_sse"].transport == "sse"
    assert config.servers["legacy_sse"].prefix is None and config.servers["legacy_sse"].enabled is False
    assert config.servers["claude_code_style"].transport == "sse" and config.servers["claude_code_style"].era == "legacy"


def test_files_merge_and_a_name_defined_twice_is_reported_with_both_files(tmp_path: Path) -> None:
    d = tmp_path / "servers.d"
    write(d, "10-first.json", {"mcpServers": {"one": {"command": "a"}, "shared": {"command": "first"}}})
    write(d, "20-second.json", {"mcpServers": {"two": {"command": "b"}, "shared": {"command": "second"}}})
    config = load_servers_dir(d, environ={})
    assert sorted(config.servers) == ["one", "shared", "two"]
    assert config.servers["shared"].command == "first"  # file order decides, deterministically
    [error] = config.errors
    assert error.server == "shared" and error.file.endswith("20-second.json")
    assert "defined twice" in str(error) and "10-first.json" in str(error)


def test_unknown_key_missing_command_and_wrong_types_name_file_server_and_key(tmp_path: Path) -> None:
    d = tmp_path / "servers.d"
    path = write(d, "bad.json", {"mcpServers": {
        "typo": {"command": "x", "argz": []},
        "nocommand": {"args": ["x"]},
        "types": {"command": "x", "enabled": "yes", "timeout": -1, "tools": {"alow": []}},
        "both": {"command": "x", "url": "http://h/mcp"},
        "badurl": {"url": "ftp://h"},
        "badprefix": {"command": "x", "prefix": "has space"},
        "good": {"command": "x"},
    }})
    config = load_servers_dir(d, environ={})
    assert list(config.servers) == ["good"]  # the broken entries are skipped, the good one survives
    found = {(e.server, e.key) for e in config.errors}
    assert ("typo", "argz") in found
    assert ("nocommand", "command") in found
    assert {("types", "enabled"), ("types", "timeout"), ("types", "tools.alow")} <= found
    assert ("badurl", "url") in found and ("badprefix", "prefix") in found
    assert any(e.server == "both" for e in config.errors)
    assert all(e.file == str(path) for e in config.errors)
    typo = next(e for e in config.errors if e.server == "typo")
    assert str(typo) == f"{path}: server 'typo': key 'argz': unknown key"


def test_one_broken_file_does_not_stop_the_others(tmp_path: Path) -> None:
    d = tmp_path / "servers.d"
    write(d, "a.json", "{not json")
    write(d, "b.json", {"mcpServers": {"fine": {"command": "x"}}})
    write(d, "c.json", ["not", "an", "object"])
    write(d, "d.json", '{"mcpServers": {"x": {"command": "a", "command": "b"}}}')
    write(d, "e.json", {"servers": {}})
    config = load_servers_dir(d, environ={})
    assert list(config.servers) == ["fine"]
    messages = {Path(e.file).name: str(e) for e in config.errors}
    assert "not valid JSON" in messages["a.json"] and "line 1" in messages["a.json"]
    assert "mcpServers" in messages["c.json"]
    assert "appears twice" in messages["d.json"]
    assert "unknown top-level key" in messages["e.json"] or "mcpServers" in messages["e.json"]


def test_environment_references(tmp_path: Path) -> None:
    d = tmp_path / "servers.d"
    write(d, "a.json", {"mcpServers": {
        "s": {"command": "${TOOL_BIN}/run", "args": ["--token", "${API_TOKEN}", "${MISSING_OK:-fallback}"],
              "env": {"HOME_DIR": "${HOME}"}},
        "r": {"url": "https://${HOST}/mcp", "headers": {"Authorization": "Bearer ${API_TOKEN}"}},
        "missing": {"command": "x", "env": {"K": "${NOT_SET_ANYWHERE}"}},
    }})
    env = {"TOOL_BIN": "/opt/bin", "API_TOKEN": "t0k", "HOME": "/home/u", "HOST": "mcp.example"}
    config = load_servers_dir(d, environ=env)
    s, r = config.servers["s"], config.servers["r"]
    assert s.command == "/opt/bin/run" and s.args == ("--token", "t0k", "fallback") and s.env == {"HOME_DIR": "/home/u"}
    assert r.url == "https://mcp.example/mcp" and r.headers["Authorization"] == "Bearer t0k"
    [error] = config.errors
    assert (error.server, error.key) == ("missing", "env.K") and "NOT_SET_ANYWHERE" in error.message


def test_fmos_python_names_this_interpreter_unless_set(tmp_path: Path) -> None:
    import sys

    d = tmp_path / "servers.d"
    write(d, "a.json", {"mcpServers": {"s": {"command": "${FMOS_PYTHON}"}}})
    assert load_servers_dir(d, environ={}).servers["s"].command == sys.executable
    assert load_servers_dir(d, environ={"FMOS_PYTHON": "/x/python"}).servers["s"].command == "/x/python"


def test_missing_directory_is_an_error_not_a_crash(tmp_path: Path) -> None:
    config = load_servers_dir(tmp_path / "nope")
    assert config.servers == {} and "does not exist" in str(config.errors[0])


def test_shipped_examples_are_valid() -> None:
    root = Path(__file__).resolve().parent.parent
    config = load_servers_dir(root / "servers.d")
    assert config.errors == []
    assert {"infra", "time", "everything", "files"} <= set(config.servers)


def test_the_gateways_own_server_name_is_reserved(tmp_path: Path) -> None:
    (tmp_path / "s.json").write_text('{"mcpServers": {"fmos": {"command": "x"}, "ok": {"command": "y"}}}')
    config = load_servers_dir(tmp_path)
    assert list(config.servers) == ["ok"]
    assert any("'fmos' is the gateway's own" in str(e) and "fmos" in str(e) for e in config.errors)
