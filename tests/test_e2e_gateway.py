"""End to end: real reference servers behind the gateway, reached with the SDK's Client over stdio and
streamable HTTP, as a handshake-era host (`legacy`) and a modern-era host (`auto`)."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import mcp_types as types
import pytest
from mcp.shared.exceptions import MCPError

from conftest import (
    HttpGateway,
    RecordingHost,
    eventually,
    everything,
    filesystem,
    infra,
    stdio_gateway,
    text_of,
    time_server,
    write_servers,
)
from fmos_mcp.gateway.naming import VALID_NAME

COMBOS = [("stdio", "legacy"), ("stdio", "auto"), ("http", "legacy"), ("http", "auto")]


@pytest.fixture(scope="module")
def peers(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("e2e")
    shared = base / "shared"
    shared.mkdir()
    (shared / "notes.txt").write_text("fmos notes\nline two\n")
    write_servers(base / "servers.d", {
        "everything": everything(),
        "files": filesystem(shared),
        "infra": infra(),
        "time": time_server(),
    })
    return base


@pytest.fixture(scope="module")
def http_gateway(peers: Path) -> Iterator[HttpGateway]:
    gateway = HttpGateway(peers / "servers.d", peers / "http-state")
    yield gateway
    assert gateway.stop() in (0, -15)


class Connect:
    def __init__(self, transport: str, mode: str, peers: Path, http: HttpGateway, state: Path) -> None:
        self.transport, self.mode, self.peers, self.http, self.state = transport, mode, peers, http, state

    def __call__(self, **client_kwargs: Any) -> Any:
        if self.transport == "stdio":
            return stdio_gateway(self.peers / "servers.d", self.state, self.mode, **client_kwargs)
        return self.http.client(self.mode, **client_kwargs)


@pytest.fixture(params=COMBOS, ids=[f"{t}-{m}" for t, m in COMBOS])
def connect(request: pytest.FixtureRequest, peers: Path, http_gateway: HttpGateway, tmp_path: Path) -> Connect:
    transport, mode = request.param
    return Connect(transport, mode, peers, http_gateway, tmp_path / "state")


async def test_one_endpoint_lists_every_servers_tools_prompts_and_resources(connect: Connect) -> None:
    host = RecordingHost()
    async with connect(**host.callbacks()) as client:
        assert client.server_info is None or client.server_info.name == "fmos-mcp"
        tools = (await client.list_tools()).tools
        names = {t.name for t in tools}
        by_server: dict[str, set[str]] = {}
        for name in names:
            assert VALID_NAME.match(name), name
            server, _, tool = name.partition("__")
            by_server.setdefault(server if tool else "(gateway)", set()).add(tool or server)
        assert set(by_server) == {"everything", "files", "infra", "time", "(gateway)"}
        assert {"fmos_search_tools", "fmos_read", "vfm_generate"} <= by_server["(gateway)"]  # its own services
        assert by_server["time"] == {"get_current_time", "convert_time"}
        assert {"list_nodes", "get_node", "drain_node", "deploy_service", "summarize_incident"} <= by_server["infra"]
        assert {"read_text_file", "list_directory", "write_file"} <= by_server["files"]
        # the host declared sampling, elicitation and roots, so the capability-gated tools are offered too
        assert {"echo", "get-sum", "trigger-sampling-request", "trigger-elicitation-request"} <= by_server["everything"]
        prompts = {p.name for p in (await client.list_prompts()).prompts}
        assert {"infra__incident_report", "everything__simple-prompt", "everything__args-prompt"} <= prompts
        resources = {str(r.uri) for r in (await client.list_resources()).resources}
        assert "infra://inventory" in resources
        templates = {t.uri_template for t in (await client.list_resource_templates()).resource_templates}
        assert {"infra://nodes/{name}", "infra://runbooks/{topic}"} <= templates
        assert any(t.startswith("demo://resource/dynamic/text/") for t in templates)


async def test_calls_route_to_the_right_server_and_results_pass_through(connect: Connect, peers: Path) -> None:
    async with connect() as client:
        assert text_of(await client.call_tool("everything__get-sum", {"a": 2, "b": 3})) == "The sum of 2 and 3 is 5."
        assert text_of(await client.call_tool("everything__echo", {"message": "hi"})) == "Echo: hi"
        image = await client.call_tool("everything__get-tiny-image", {})
        png = next(b for b in image.content if b.type == "image")
        assert png.mime_type == "image/png" and base64.b64decode(png.data)[:4] == b"\x89PNG"
        node = await client.call_tool("infra__get_node", {"name": "db-1"})
        assert node.structured_content == {"name": "db-1", "environment": "production", "role": "database",
                                           "status": "ready", "pods": 3}
        now = json.loads(text_of(await client.call_tool("time__get_current_time", {"timezone": "UTC"})))
        assert now["timezone"] == "UTC"
        notes = await client.call_tool("files__read_text_file", {"path": str(peers / "shared" / "notes.txt")})
        assert "fmos notes" in text_of(notes)
        structured = await client.call_tool("everything__get-structured-content", {"location": "New York"})
        assert structured.structured_content and "temperature" in structured.structured_content


async def test_downstream_tool_errors_stay_tool_errors(connect: Connect) -> None:
    async with connect() as client:
        result = await client.call_tool("infra__get_node", {"name": "no-such-node"})
        assert result.is_error and "unknown node" in text_of(result)
        unknown = await client.call_tool("nobody__nothing", {})
        assert unknown.is_error and "Unknown tool: nobody__nothing" in text_of(unknown)


async def test_resources_are_routed_by_uri_and_template(connect: Connect) -> None:
    async with connect() as client:
        inventory = await client.read_resource("infra://inventory")
        assert "web-1" in json.loads(inventory.contents[0].text)["nodes"]
        node = await client.read_resource("infra://nodes/web-2")
        assert json.loads(node.contents[0].text)["name"] == "web-2"
        dynamic = await client.read_resource("demo://resource/dynamic/text/7")
        assert "7" in dynamic.contents[0].text
        blob = await client.read_resource("demo://resource/dynamic/blob/3")
        assert blob.contents[0].blob
        with pytest.raises(MCPError, match="Resource not found"):
            await client.read_resource("nowhere://x")


async def test_prompts_and_completions(connect: Connect) -> None:
    async with connect() as client:
        prompt = await client.get_prompt("infra__incident_report", {"service": "checkout", "severity": "sev1"})
        assert "sev1 incident report for checkout" in prompt.messages[0].content.text
        args = await client.get_prompt("everything__args-prompt", {"city": "Paris"})
        assert "Paris" in args.messages[0].content.text
        services = await client.complete(types.PromptReference(name="infra__incident_report"), {"name": "service", "value": "pa"})
        assert services.completion.values == ["payments"]
        nodes = await client.complete(types.ResourceTemplateReference(uri="infra://nodes/{name}"), {"name": "name", "value": "we"})
        assert nodes.completion.values == ["web-1", "web-2"]
        departments = await client.complete(
            types.PromptReference(name="everything__completable-prompt"), {"name": "department", "value": "E"}
        )
        assert "Engineering" in departments.completion.values
        with pytest.raises(MCPError):
            await client.get_prompt("nobody__nothing", {})


async def test_the_host_sees_one_server_fmos_mcp(connect: Connect) -> None:
    async with connect() as client:
        result = await client.call_tool("infra__list_nodes", {})
        stamp = (result.meta or {}).get("io.modelcontextprotocol/serverInfo")
        if connect.mode == "auto":  # modern results carry a stamp: it must be the gateway's, not infra's
            assert stamp["name"] == "fmos-mcp"
        else:
            assert stamp is None and client.server_info.name == "fmos-mcp"


async def test_progress_flows_from_the_downstream_to_the_host(connect: Connect) -> None:
    seen: list[tuple[float, float | None, str | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append((progress, total, message))

    async with connect() as client:
        result = await client.call_tool(
            "infra__deploy_service", {"service": "search", "version": "2.1.0", "environment": "staging", "steps": 3},
            progress_callback=on_progress,
        )
        assert "Deployed search 2.1.0" in text_of(result)
        assert [p[:2] for p in seen] == [(1, 3), (2, 3), (3, 3)]
        assert seen[-1][2] == "search 2.1.0: step 3/3"


async def test_cancelling_a_call_cancels_it_downstream(connect: Connect) -> None:
    version = f"9.9.{connect.transport}-{connect.mode}"
    started = anyio.Event()

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        started.set()  # the operation is running downstream now

    async with connect() as client:
        async with anyio.create_task_group() as tasks:
            async def deploy() -> None:
                await client.call_tool(
                    "infra__deploy_service",
                    {"service": "inventory", "version": version, "environment": "staging", "steps": 100},
                    progress_callback=on_progress,
                )

            tasks.start_soon(deploy)
            with anyio.fail_after(30):
                await started.wait()
            tasks.cancel_scope.cancel()  # the host gives up on the call

        async def status() -> str | None:
            result = await client.call_tool("infra__list_operations", {})
            mine = [op for op in (result.structured_content or {}).get("result", []) if op.get("version") == version]
            return mine[0]["status"] if mine and mine[0]["status"] != "running" else None

        assert await eventually(status, timeout=10) == "cancelled"
