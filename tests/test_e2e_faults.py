"""Faults: a downstream that crashes, hangs, freezes, fails to start, starts slowly, or sends garbage.
The gateway reports each in plain words, recovers what can be recovered, and never goes down itself."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import anyio
import mcp_types as types
import pytest

from conftest import PY, ROOT, RecordingHost, eventually, fault, gateway_command, infra, stdio_gateway, text_of, write_servers


async def _tool_names(client: object) -> set[str]:
    return {t.name for t in (await client.list_tools()).tools}  # type: ignore[attr-defined]


async def test_a_crash_mid_call_is_reported_and_the_server_comes_back(tmp_path: Path, state_dir: Path) -> None:
    servers = write_servers(tmp_path / "servers.d", {"faulty": fault(), "infra": infra()})
    host = RecordingHost()
    async with stdio_gateway(servers, state_dir, "legacy", **host.callbacks()) as client:
        assert "faulty__ok" in await _tool_names(client)
        crashed = await client.call_tool("faulty__crash", {})
        assert crashed.is_error and "faulty" in text_of(crashed) and "closed the connection" in text_of(crashed)

        async def gone() -> bool:
            return "faulty__ok" not in await _tool_names(client)

        await eventually(gone, timeout=10)  # its tools left the list...
        assert any(isinstance(n, types.ToolListChangedNotification) for n in host.notifications)
        host.notifications.clear()
        await eventually(lambda: _ok(client), timeout=30)  # ...it was restarted with backoff...
        assert "faulty__ok" in await _tool_names(client)  # ...and its tools came back, announced again
        assert any(isinstance(n, types.ToolListChangedNotification) for n in host.notifications)


async def test_while_down_its_tools_leave_the_list_and_calls_say_why(tmp_path: Path, state_dir: Path) -> None:
    # A server that dies at once keeps dying: its tools stay out and calls explain.
    crashing = write_servers(tmp_path / "servers.d", {
        "broken": {"command": PY, "args": ["-c", "import sys; sys.stderr.write('boom: missing config\\n'); sys.exit(4)"]},
        "infra": infra(),
    })
    async with stdio_gateway(crashing, state_dir, "auto") as client:
        names = await _tool_names(client)
        assert "infra__get_node" in names and not any(n.startswith("broken__") for n in names)
        result = await client.call_tool("broken__anything", {})
        assert result.is_error
        assert "server 'broken' is" in text_of(result) and "boom: missing config" in text_of(result)


async def test_a_hung_call_times_out_and_is_cancelled_the_server_stays(tmp_path: Path, state_dir: Path) -> None:
    servers = write_servers(tmp_path / "servers.d", {"faulty": fault(timeout=1)})
    async with stdio_gateway(servers, state_dir, "legacy") as client:
        started = time.monotonic()
        hung = await client.call_tool("faulty__hang", {})
        elapsed = time.monotonic() - started
        assert hung.is_error and "did not answer tools/call 'hang' within 1 s; the call was cancelled" in text_of(hung)
        assert elapsed < 10
        assert text_of(await client.call_tool("faulty__ok", {})) == "ok from faulty"  # still the same, healthy server


async def test_a_frozen_server_is_restarted(tmp_path: Path, state_dir: Path) -> None:
    servers = write_servers(tmp_path / "servers.d", {"faulty": fault(timeout=1)})
    async with stdio_gateway(servers, state_dir, "legacy") as client:
        frozen = await client.call_tool("faulty__freeze", {})  # SIGSTOP: the whole process stops answering
        assert frozen.is_error and "within 1 s" in text_of(frozen)

        async def healthy() -> bool:
            result = await client.call_tool("faulty__ok", {})
            return not result.is_error

        await eventually(healthy, timeout=40)  # the health probe failed, the process was replaced


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_garbage_from_a_server_becomes_a_clear_tool_error(tmp_path: Path, state_dir: Path, mode: str) -> None:
    servers = write_servers(tmp_path / "servers.d", {"faulty": fault()})
    async with stdio_gateway(servers, state_dir, mode) as client:
        malformed = await client.call_tool("faulty__malformed", {})
        assert malformed.is_error and "returned a malformed result for tools/call 'malformed'" in text_of(malformed)
        schema = await client.call_tool("faulty__bad_structured", {})
        assert schema.is_error and "violates its output schema" in text_of(schema)
        broken = await client.call_tool("faulty__bad_utf8", {})  # invalid UTF-8 must not kill the reader
        assert not broken.is_error and text_of(broken).startswith("broken ") and "\ufffd" in text_of(broken)
        assert text_of(await client.call_tool("faulty__ok", {})) == "ok from faulty"


async def test_a_server_that_cannot_start_does_not_stop_the_others(tmp_path: Path, state_dir: Path) -> None:
    servers = write_servers(tmp_path / "servers.d", {
        "ghost": {"command": "definitely-not-a-command-fmos"},
        "infra": infra(),
    })
    async with stdio_gateway(servers, state_dir, "legacy") as client:
        assert "infra__get_node" in await _tool_names(client)
        ghost = await client.call_tool("ghost__anything", {})
        assert ghost.is_error and "command 'definitely-not-a-command-fmos' was not found" in text_of(ghost)


async def test_start_up_does_not_wait_for_slow_servers(tmp_path: Path, state_dir: Path) -> None:
    # the fast server is the raw fault server (no SDK to import): up in well under the grace, even under load
    servers = write_servers(tmp_path / "servers.d", {"slow": fault("--slow-start", "6"), "fast": fault()})
    host = RecordingHost()
    async with stdio_gateway(servers, state_dir, "legacy", "--startup-grace", "2", **host.callbacks()) as client:
        started = time.monotonic()
        first = await _tool_names(client)
        assert time.monotonic() - started < 5
        assert "fast__ok" in first and "slow__ok" not in first

        async def arrived() -> bool:
            return "slow__ok" in await _tool_names(client)

        await eventually(arrived, timeout=30)
        assert any(isinstance(n, types.ToolListChangedNotification) for n in host.notifications)


async def test_a_malformed_servers_d_is_reported_and_the_good_servers_serve(tmp_path: Path, state_dir: Path) -> None:
    servers = tmp_path / "servers.d"
    write_servers(servers, {"infra": infra()}, "good.json")
    (servers / "broken.json").write_text('{"mcpServers": {"oops": {"command": "x", "argz": []}')  # truncated
    (servers / "typo.json").write_text(json.dumps({"mcpServers": {"typo": {"command": "x", "argz": []}}}))
    async with stdio_gateway(servers, state_dir, "legacy") as client:
        assert "infra__get_node" in await _tool_names(client)
    # the same configuration through the CLI: every error names its file, server and key
    probe = subprocess.run(
        [PY, "-m", "fmos_mcp", "servers", "--json", "--servers-dir", str(servers), "--state-dir", str(state_dir)],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
    )
    report = json.loads(probe.stdout)
    assert probe.returncode == 1
    assert [s["name"] for s in report["servers"]] == ["infra"] and report["servers"][0]["status"] == "up"
    errors = report["config_errors"]
    assert any("broken.json" in e and "not valid JSON" in e for e in errors)
    assert any("typo.json: server 'typo': key 'argz': unknown key" in e for e in errors)


async def test_the_gateway_process_survives_everything(tmp_path: Path, state_dir: Path) -> None:
    """All the faults above in one session: the host's connection stays up throughout."""
    servers = write_servers(tmp_path / "servers.d", {"faulty": fault(timeout=1), "infra": infra()})
    async with stdio_gateway(servers, state_dir, "auto") as client:
        for tool in ("malformed", "bad_structured", "bad_utf8", "hang", "crash"):
            await client.call_tool(f"faulty__{tool}", {})
        assert text_of(await client.call_tool("infra__get_node", {"name": "web-1"})).count("web-1") >= 1
        with anyio.fail_after(30):
            await eventually(lambda: _ok(client), timeout=30)


async def _ok(client: object) -> bool:
    result = await client.call_tool("faulty__ok", {})  # type: ignore[attr-defined]
    return not result.is_error


def test_stdio_stdout_carries_json_rpc_only(tmp_path: Path) -> None:
    """Downstream servers write to stderr and the gateway logs; none of it may reach the host's stdout."""
    servers = write_servers(tmp_path / "servers.d", {"infra": infra(), "faulty": fault()})
    log = tmp_path / "stderr.log"
    process = subprocess.Popen(
        [PY, *gateway_command(servers, tmp_path / "state")[:-2], "--log-level", "debug"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log.open("w"), cwd=ROOT, text=True,
    )
    requests = [
        {"jsonrpc": "2.0", "id": 1, "method": "initialize",
         "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "raw", "version": "1"}}},
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        {"jsonrpc": "2.0", "id": 2, "method": "tools/list"},
        {"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "faulty__crash", "arguments": {}}},
        {"jsonrpc": "2.0", "id": 4, "method": "tools/call", "params": {"name": "infra__get_node", "arguments": {"name": "db-1"}}},
    ]
    assert process.stdin and process.stdout
    process.stdin.write("\n".join(json.dumps(r) for r in requests) + "\n")
    process.stdin.flush()
    lines: list[str] = []
    deadline = time.monotonic() + 60
    while len({json.loads(line).get("id") for line in lines} & {1, 2, 3, 4}) < 4 and time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        if line.strip():
            lines.append(line)
            message = json.loads(line)  # every line is JSON-RPC and nothing else
            assert message["jsonrpc"] == "2.0"
    process.stdin.close()  # the host leaves; the gateway exits cleanly
    lines += [line for line in process.stdout.read().splitlines() if line.strip()]
    assert process.wait(timeout=30) == 0
    stderr = log.read_text()
    for line in lines:
        assert json.loads(line)["jsonrpc"] == "2.0"
    answered = {json.loads(line).get("id") for line in lines}
    assert {1, 2, 3, 4} <= answered
    assert "server" in stderr  # the logs went to stderr, as JSON lines
    for line in stderr.splitlines():
        if line.startswith("{"):
            json.loads(line)


async def test_a_servers_own_secrets_never_reach_the_host(tmp_path: Path, state_dir: Path) -> None:
    leaky = {"command": PY, "args": ["-c", "import os, sys; sys.stderr.write('bad key ' + os.environ['SERVICE_KEY'] + '\\n'); sys.exit(2)"],
             "env": {"SERVICE_KEY": "zq-very-private-value"}}
    servers = write_servers(tmp_path / "servers.d", {"leaky": leaky, "infra": infra()})
    async with stdio_gateway(servers, state_dir, "legacy") as client:
        result = await client.call_tool("leaky__anything", {})
    assert result.is_error and "bad key [redacted]" in text_of(result)
    assert "zq-very-private-value" not in text_of(result)
