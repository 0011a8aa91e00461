"""Requests from downstream servers to the host (sampling, elicitation, roots) in all four combinations of
host era and downstream era; capability mirroring; list_changed and logging back to the host."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import mcp_types as types
import pytest
from mcp.shared.exceptions import MCPError

from conftest import MODES, RecordingHost, eventually, everything, fault, infra, stdio_gateway, text_of, write_servers

# infra (MCPServer) negotiates the modern era when asked with `auto`; `era: legacy` pins the handshake era.
# everything (TypeScript SDK 1.x) only speaks the handshake era and pushes its requests.
DOWNSTREAMS = {"modern": "infra", "handshake": "old"}


@pytest.fixture
def servers(tmp_path: Path) -> Path:
    return write_servers(tmp_path / "servers.d", {
        "infra": infra(),
        "old": infra(era="legacy"),
        "everything": everything(),
    })


@pytest.mark.parametrize("downstream", list(DOWNSTREAMS))
@pytest.mark.parametrize("mode", MODES)
async def test_sampling_elicitation_and_roots_reach_the_host_and_come_back(
    servers: Path, state_dir: Path, mode: str, downstream: str
) -> None:
    host = RecordingHost()
    prefix = DOWNSTREAMS[downstream]
    async with stdio_gateway(servers, state_dir, mode, **host.callbacks()) as client:
        drained = await client.call_tool(f"{prefix}__drain_node", {"name": "web-2", "reason": "kernel upgrade"})
        assert "Node web-2 drained" in text_of(drained), text_of(drained)
        assert host.elicited and "Drain production node 'web-2'" in host.elicited[-1].message

        summary = await client.call_tool(f"{prefix}__summarize_incident", {"incident": "disk full on db-1"})
        assert "Summary (recording-host): echo: Summarize this incident" in text_of(summary)
        assert "disk full on db-1" in host.sampled[-1].messages[0].content.text

        destinations = await client.call_tool(f"{prefix}__report_destinations", {})
        assert destinations.structured_content == {"result": ["file:///srv/workspace"]}
        assert host.roots_asked >= 1


@pytest.mark.parametrize("mode", MODES)
async def test_a_declined_elicitation_is_the_hosts_answer(servers: Path, state_dir: Path, mode: str) -> None:
    host = RecordingHost(decline=True)
    async with stdio_gateway(servers, state_dir, mode, **host.callbacks()) as client:
        result = await client.call_tool("infra__drain_node", {"name": "db-1", "reason": "test"})
        assert result.is_error and "decline" in text_of(result)
        node = await client.call_tool("infra__get_node", {"name": "db-1"})
        assert node.structured_content["status"] == "ready"  # nothing was drained


@pytest.mark.parametrize("mode", MODES)
async def test_pushing_reference_server_sampling_and_elicitation(servers: Path, state_dir: Path, mode: str) -> None:
    host = RecordingHost()
    async with stdio_gateway(servers, state_dir, mode, **host.callbacks()) as client:
        sampled = await client.call_tool("everything__trigger-sampling-request", {"prompt": "ping", "maxTokens": 20})
        assert '"model": "recording-host"' in text_of(sampled)
        assert "ping" in host.sampled[-1].messages[-1].content.text
        elicited = await client.call_tool("everything__trigger-elicitation-request", {})
        assert not elicited.is_error and "accept" in text_of(elicited)
        assert host.elicited and host.elicited[-1].requested_schema["properties"]


async def test_roots_asked_outside_any_call_reach_a_handshake_host(servers: Path, state_dir: Path) -> None:
    host = RecordingHost()
    async with stdio_gateway(servers, state_dir, "legacy", **host.callbacks()) as client:
        # server-everything asks for roots by itself right after start-up, outside any call
        async def roots() -> str:
            return text_of(await client.call_tool("everything__get-roots-list", {}))

        assert "file:///srv/workspace" in await eventually(lambda: _contains(roots, "file:///srv/workspace"))


async def _contains(probe: Any, needle: str) -> str | None:
    text = await probe()
    return text if needle in text else None


@pytest.mark.parametrize("mode", MODES)
async def test_a_host_without_sampling_is_never_asked(servers: Path, state_dir: Path, mode: str) -> None:
    host = RecordingHost()
    async with stdio_gateway(servers, state_dir, mode, **host.callbacks(sampling=False, roots=False)) as client:
        names = {t.name for t in (await client.list_tools()).tools}
        # server-everything registers these only for clients that declared the capability: it was not offered
        assert "everything__trigger-sampling-request" not in names
        assert "everything__get-roots-list" not in names
        assert "everything__trigger-elicitation-request" in names
        for prefix in DOWNSTREAMS.values():
            # infra checks the capability before asking; its protocol error passes through unchanged
            with pytest.raises(MCPError, match="did not declare the sampling capability"):
                await client.call_tool(f"{prefix}__summarize_incident", {"incident": "x"})
    assert host.sampled == [] and host.roots_asked == 0


@pytest.mark.parametrize("mode", MODES)
async def test_list_changed_resyncs_and_notifies_the_host(tmp_path: Path, state_dir: Path, mode: str) -> None:
    servers = write_servers(tmp_path / "servers.d", {"infra": infra(), "old": infra(era="legacy")})
    host = RecordingHost()
    async with stdio_gateway(servers, state_dir, mode, **host.callbacks()) as client:
        before = {t.name for t in (await client.list_tools()).tools}
        assert not {"infra__maintenance_window", "old__maintenance_window"} & before
        for prefix in ("infra", "old"):  # a modern-era downstream, then a handshake-era one
            host.notifications.clear()
            if mode == "legacy":
                await client.call_tool(f"{prefix}__enable_maintenance_tools", {})
                await eventually(lambda: _notified(host, types.ToolListChangedNotification))
            else:
                async with client.listen(tools_list_changed=True) as subscription:
                    await client.call_tool(f"{prefix}__enable_maintenance_tools", {})
                    with anyio.fail_after(15):
                        event = await subscription.__anext__()
                    assert type(event).__name__ == "ToolsListChanged"
            names = {t.name for t in (await client.list_tools()).tools}
            assert f"{prefix}__maintenance_window" in names
            window = await client.call_tool(f"{prefix}__maintenance_window", {"hours": 1})
            assert "Maintenance window open for 1 h" in text_of(window)


async def _notified(host: RecordingHost, kind: type) -> bool:
    return any(isinstance(n, kind) for n in host.notifications)


async def test_handshake_downstream_list_changed_reaches_a_modern_host(tmp_path: Path, state_dir: Path) -> None:
    servers = write_servers(tmp_path / "servers.d", {"faulty": fault()})
    async with stdio_gateway(servers, state_dir, "auto") as client:
        async with client.listen(tools_list_changed=True) as subscription:
            await client.call_tool("faulty__grow", {})
            with anyio.fail_after(15):
                await subscription.__anext__()
        names = {t.name for t in (await client.list_tools()).tools}
        assert any(n.startswith("faulty__grown_") for n in names)


async def test_log_levels_and_messages_pass_through(servers: Path, state_dir: Path) -> None:
    host = RecordingHost()
    async with stdio_gateway(servers, state_dir, "legacy", **host.callbacks()) as client:
        await client.set_logging_level("debug")
        await client.call_tool("everything__toggle-simulated-logging", {})
        await eventually(lambda: _has_log(host, "everything"), timeout=30)
        await client.call_tool("everything__toggle-simulated-logging", {})
    assert all(log.logger and log.logger.startswith("everything") for log in host.logs)


async def _has_log(host: RecordingHost, server: str) -> bool:
    return any((log.logger or "").startswith(server) for log in host.logs)


async def test_resource_subscriptions_reach_a_handshake_host(servers: Path, state_dir: Path) -> None:
    host = RecordingHost()
    uri = "demo://resource/dynamic/text/1"
    async with stdio_gateway(servers, state_dir, "legacy", **host.callbacks()) as client:
        await client.subscribe_resource(uri)
        await client.call_tool("everything__toggle-subscriber-updates", {})
        try:
            updates = await eventually(lambda: _updates(host), timeout=30)
        finally:
            await client.call_tool("everything__toggle-subscriber-updates", {})
        assert {str(u.params.uri) for u in updates} == {uri}
        await client.unsubscribe_resource(uri)


async def _updates(host: RecordingHost) -> list[Any]:
    return [n for n in host.notifications if isinstance(n, types.ResourceUpdatedNotification)]


async def test_resource_subscriptions_on_a_modern_hosts_listen_stream(servers: Path, state_dir: Path) -> None:
    uri = "demo://resource/dynamic/text/2"
    async with stdio_gateway(servers, state_dir, "auto") as client:
        await client.list_resource_templates()
        async with client.listen(resource_subscriptions=[uri]) as subscription:
            await client.call_tool("everything__toggle-subscriber-updates", {})
            try:
                with anyio.fail_after(30):
                    event = await subscription.__anext__()
            finally:
                await client.call_tool("everything__toggle-subscriber-updates", {})
        assert type(event).__name__ == "ResourceUpdated" and event.uri == uri


@pytest.mark.parametrize("mode", MODES)
async def test_resource_updates_from_a_modern_downstream(tmp_path: Path, state_dir: Path, mode: str) -> None:
    servers = write_servers(tmp_path / "servers.d", {"infra": infra()})
    host = RecordingHost()
    uri = "infra://nodes/stage-1"
    async with stdio_gateway(servers, state_dir, mode, **host.callbacks()) as client:
        await client.list_resource_templates()
        if mode == "legacy":
            await client.subscribe_resource(uri)
            await client.call_tool("infra__drain_node", {"name": "stage-1", "reason": "watch"})
            updates = await eventually(lambda: _updates(host))
            assert [str(u.params.uri) for u in updates] == [uri]
        else:
            async with client.listen(resource_subscriptions=[uri]) as subscription:
                await client.call_tool("infra__drain_node", {"name": "stage-1", "reason": "watch"})
                with anyio.fail_after(15):
                    event = await subscription.__anext__()
            assert event.uri == uri


async def test_the_hosts_progress_on_a_pushed_request_reaches_the_downstream(tmp_path: Path, state_dir: Path) -> None:
    """Progress in the other direction: the host reports on a sampling request a server sent it."""
    servers = write_servers(tmp_path / "servers.d", {"faulty": fault()})
    tokens: list[Any] = []

    async def slow_sampling(ctx: Any, params: types.CreateMessageRequestParams) -> types.CreateMessageResult:
        token = (ctx.meta or {}).get("progress_token")
        tokens.append(token)
        for step in (1, 2):
            await ctx.session.send_progress_notification(token, step, 2, f"thinking {step}/2")
        return types.CreateMessageResult(role="assistant", model="m", content=types.TextContent(type="text", text="done"))

    async with stdio_gateway(servers, state_dir, "legacy", sampling_callback=slow_sampling) as client:
        report = json.loads(text_of(await client.call_tool("faulty__sample_with_progress", {})))
    assert report["answer"].get("content", {}).get("text") == "done", report
    assert tokens and tokens[0] != "fault-progress"  # the host saw the gateway's token, not the server's
    assert [(p["progressToken"], p["progress"], p["message"]) for p in report["progress"]] == [
        ("fault-progress", 1, "thinking 1/2"), ("fault-progress", 2, "thinking 2/2"),
    ]
