"""The places fmos-mcp reaches below the SDK's public surface (fmos_mcp/gateway/sdk.py) still hold."""

from __future__ import annotations

import sys
from typing import Any

import anyio
import mcp_types as types
import pytest
from mcp import Client, StdioServerParameters
from mcp.client._memory import InMemoryTransport
from mcp.client.stdio import stdio_client
from mcp.server import Server
from mcp.shared.exceptions import MCPError

from conftest import FAULT
from fmos_mcp.gateway.sdk import MirroringClientSession, WatchedDispatcher, connection_of, host_capabilities, negotiate
from fmos_mcp.traps.request import HostCapabilities


@pytest.mark.parametrize("caps", [
    HostCapabilities(),
    HostCapabilities(sampling=True),
    HostCapabilities(sampling=True, sampling_tools=True, elicitation_form=True),
    HostCapabilities(elicitation_url=True, roots=True, roots_list_changed=True),
])
async def test_a_downstream_is_offered_exactly_the_hosts_capabilities(caps: HostCapabilities) -> None:
    seen: list[types.ClientCapabilities | None] = []

    async def list_tools(ctx: Any, params: Any) -> types.ListToolsResult:
        seen.append(ctx.session.client_capabilities)
        return types.ListToolsResult(tools=[])

    server = Server("probe", on_list_tools=list_tools)
    async with InMemoryTransport(server) as (read, write):
        session = MirroringClientSession(
            dispatcher=WatchedDispatcher(read, write),
            sampling_callback=_never, elicitation_callback=_never, list_roots_callback=_never, mirrored=caps,
        )
        async with session:
            await negotiate(session, "legacy")
            await session.list_tools()
    assert host_capabilities(seen[0]) == caps


async def _never(*args: Any) -> Any:
    raise AssertionError("not called")


async def test_the_watched_dispatcher_sees_a_server_die() -> None:
    params = StdioServerParameters(command=sys.executable, args=[str(FAULT)])
    async with stdio_client(params) as (read, write):
        dispatcher = WatchedDispatcher(read, write)
        async with MirroringClientSession(dispatcher=dispatcher, mirrored=HostCapabilities()) as session:
            await negotiate(session, "auto")
            assert session.protocol_version == "2025-06-18"  # discover refused, initialize accepted
            with pytest.raises(MCPError, match="Connection closed"):
                await session.call_tool("crash", {})
            with anyio.fail_after(5):
                await dispatcher.closed.wait()


async def test_connection_of_reaches_the_per_connection_state() -> None:
    found: list[Any] = []

    async def list_tools(ctx: Any, params: Any) -> types.ListToolsResult:
        conn = connection_of(ctx.session)
        conn.state["mark"] = conn.state.get("mark", 0) + 1
        found.append(conn.state["mark"])
        return types.ListToolsResult(tools=[])

    async with Client(Server("probe", on_list_tools=list_tools), mode="legacy") as client:
        await client.list_tools(cache_mode="bypass")
        await client.list_tools(cache_mode="bypass")
    assert found == [1, 2]  # one connection, state kept across its requests
