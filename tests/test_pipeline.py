"""The mediator pipeline and tracing, in-process with real downstream servers and a real SQLite database."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mcp_types as types
import pytest
from mcp.shared.exceptions import MCPError
from mcp_types import INVALID_REQUEST

from conftest import MODES, fault, infra, inproc_gateway, text_of, write_servers
from fmos_mcp.gateway.core import GatewaySettings
from fmos_mcp.state.db import StateDB
from fmos_mcp.state.traces import TraceStore
from fmos_mcp.traps import CallNext, MediatedRequest, TrapKind, TrapRecord


class Recorder:
    def __init__(self, name: str, seen: list[str]) -> None:
        self.name, self.seen = name, seen

    async def __call__(self, request: MediatedRequest, call_next: CallNext) -> Any:
        self.seen.append(f"{self.name}>{request.method}")
        result = await call_next(request)
        self.seen.append(f"{self.name}<{request.method}")
        return result


class DenyRunCommand:
    """Answers by itself (never calls call_next) and records why: how a trust service denies."""

    name = "deny-run-command"

    async def __call__(self, request: MediatedRequest, call_next: CallNext) -> Any:
        if request.method == "tools/call" and request.target == "exec_on_node":
            request.trail.append(TrapRecord(TrapKind.TRUST, self.name, "deny", reason="exec is not allowed"))
            return types.CallToolResult(content=[types.TextContent(type="text", text="denied: exec")], is_error=True)
        return await call_next(request)


class PinNode:
    """Changes the request on its way through: every get_node asks for db-1."""

    name = "pin-node"

    async def __call__(self, request: MediatedRequest, call_next: CallNext) -> Any:
        if request.target == "get_node":
            request = request.evolve(arguments={"name": "db-1"})
        return await call_next(request)


@pytest.mark.parametrize("mode", MODES)
async def test_interceptors_run_in_order_can_change_answer_and_are_traced(tmp_path: Path, mode: str) -> None:
    servers = write_servers(tmp_path / "servers.d", {"infra": infra()})
    seen: list[str] = []
    chain = [Recorder("outer", seen), DenyRunCommand(), PinNode(), Recorder("inner", seen)]
    async with inproc_gateway(servers, tmp_path / "state", mode, interceptors=chain, trust=False) as (app, client):
        node = await client.call_tool("infra__get_node", {"name": "web-1"})
        assert node.structured_content["name"] == "db-1"  # PinNode rewrote the arguments
        denied = await client.call_tool("infra__exec_on_node", {"node": "web-1", "command": "rm -rf /"})
        assert denied.is_error and text_of(denied) == "denied: exec"
        await app.traces.flush()
        rows = app.traces.recent(10)
    calls = [s for s in seen if "tools/call" in s]
    # outer and inner wrap the allowed call; the denied one never reaches the inner recorder or the server
    assert calls == ["outer>tools/call", "inner>tools/call", "inner<tools/call", "outer<tools/call",
                     "outer>tools/call", "outer<tools/call"]
    by_name = {r["name"]: r for r in rows if r["method"] == "tools/call"}
    assert by_name["infra__get_node"]["outcome"] == "ok" and by_name["infra__get_node"]["server"] == "infra"
    assert by_name["infra__get_node"]["result_bytes"] > 0 and by_name["infra__get_node"]["arg_bytes"] > 0
    denied_row = by_name["infra__exec_on_node"]
    assert denied_row["outcome"] == "denied"
    assert denied_row["traps"] == [{"kind": "trust", "service": "deny-run-command", "decision": "deny",
                                    "reason": "exec is not allowed"}]
    assert all(r["tenant"] == "local" and r["latency_ms"] >= 0 for r in rows)
    assert {r["era"] for r in rows} == {"2025-11-25" if mode == "legacy" else "2026-07-28"}


async def test_traces_survive_shutdown_and_reopen(tmp_path: Path) -> None:
    servers = write_servers(tmp_path / "servers.d", {"faulty": fault()})
    async with inproc_gateway(servers, tmp_path / "state", "legacy") as (_app, client):
        for _ in range(5):
            await client.call_tool("faulty__ok", {})
    # no explicit flush: the trace writer flushes on shutdown
    rows = TraceStore(StateDB(tmp_path / "state")).recent(50)
    assert sum(1 for r in rows if r["name"] == "faulty__ok") == 5


@pytest.mark.parametrize("mode", MODES)
async def test_every_list_paginates_on_both_sides(tmp_path: Path, mode: str) -> None:
    # The fault server lists 261 tools in pages of 100; the gateway serves pages of 7.
    servers = write_servers(tmp_path / "servers.d", {"faulty": fault("--tools", "250")})
    settings = GatewaySettings(page_size=7)
    async with inproc_gateway(servers, tmp_path / "state", mode, settings=settings) as (app, client):
        names, cursor, pages = [], None, 0
        while True:
            page = await client.list_tools(cursor=cursor)
            names += [t.name for t in page.tools]
            pages += 1
            cursor = page.next_cursor
            if not cursor:
                break
        own = len(app.own.tools)  # the gateway's own tools (fmos_*, vfm_generate) are on the list too
        assert len(names) == len(set(names)) == 261 + own
        assert pages == -(-(261 + own) // 7)
        assert "faulty__bulk_0249" in names
        with pytest.raises(Exception, match="invalid cursor"):
            await client.list_tools(cursor="garbage")


class NoWatching:
    name = "no-watching"

    async def __call__(self, request: MediatedRequest, call_next: CallNext) -> Any:
        if request.method == "subscriptions/listen":
            raise MCPError(code=INVALID_REQUEST, message="watching is not allowed here")
        return await call_next(request)


async def test_listen_and_log_levels_pass_through_the_pipeline_too(tmp_path: Path) -> None:
    servers = write_servers(tmp_path / "servers.d", {"infra": infra()})
    async with inproc_gateway(servers, tmp_path / "state", "auto", interceptors=[NoWatching()]) as (app, client):
        with pytest.raises(MCPError, match="watching is not allowed here"):
            async with client.listen(tools_list_changed=True):
                pass
    async with inproc_gateway(servers, tmp_path / "state2", "legacy") as (app, client):
        await client.set_logging_level("warning")
        await app.traces.flush()
        rows = app.traces.recent(10)
        assert any(r["method"] == "logging/setLevel" and r["outcome"] == "ok" for r in rows)


async def test_pools_in_use_are_never_evicted_for_a_new_profile(tmp_path: Path) -> None:
    servers = write_servers(tmp_path / "servers.d", {"faulty": fault()})
    settings = GatewaySettings(max_pools=1)
    async with inproc_gateway(servers, tmp_path / "state", "legacy", settings=settings) as (app, client):
        assert not (await client.call_tool("faulty__ok", {})).is_error
        async def sampling(ctx: Any, params: Any) -> Any:
            raise AssertionError("never asked")

        from mcp import Client

        async with Client(app.gateway.face.server, mode="legacy", sampling_callback=sampling) as other:
            with pytest.raises(MCPError, match="host profiles in use"):
                await other.list_tools()
        assert not (await client.call_tool("faulty__ok", {})).is_error  # the first host kept its servers


async def test_a_twenty_megabyte_result_arrives_whole(tmp_path: Path) -> None:
    """One very large message: read in linear time and passed on unchanged (the host side is in memory).
    Offload is off for it here: the data plane's tests cover what happens by default."""
    servers = write_servers(tmp_path / "servers.d", {"faulty": fault()})
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "context.yaml").write_text("context: {offload: {rules: [{server: faulty, tool: huge, never: true}]}}\n")
    async with inproc_gateway(servers, tmp_path / "state", "legacy") as (_app, client):
        result = await client.call_tool("faulty__huge", {"mb": 20})
    body = text_of(result)
    assert not result.is_error
    assert len(body) == 20 * 1024 * 1024 + len("BEGIN") + len("END")
    assert body.startswith("BEGIN0123456789abcdef") and body.endswith("abcdefEND")
