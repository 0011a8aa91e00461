"""The HTTP face: loopback by default, a token for anything else, DNS-rebinding protection, SSE, remote
downstream servers over streamable HTTP and SSE, and a clean stop that leaves no process behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx2
import pytest

from conftest import (
    EVERYTHING_JS,
    PY,
    ROOT,
    HttpGateway,
    RecordingHost,
    everything,
    free_port,
    gateway_command,
    infra,
    text_of,
    write_servers,
)

INIT = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "curl", "version": "1"}}}
MCP_HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


def test_any_address_but_loopback_requires_a_token(tmp_path: Path) -> None:
    servers = write_servers(tmp_path / "servers.d", {"infra": infra()})
    env = {k: v for k, v in os.environ.items() if k != "FMOS_AUTH_TOKEN"}
    run = subprocess.run(
        [PY, *gateway_command(servers, tmp_path / "state", "--transport", "http", "--host", "0.0.0.0", "--port", "1")],
        capture_output=True, text=True, timeout=60, cwd=ROOT, env=env,
    )
    assert run.returncode == 2
    assert "refusing to listen on 0.0.0.0 without a token" in run.stderr and "FMOS_AUTH_TOKEN" in run.stderr


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> HttpGateway:
    base = tmp_path_factory.mktemp("guarded")
    gateway = HttpGateway(write_servers(base / "servers.d", {"infra": infra()}), base / "state", token="s3cret-token")
    yield gateway
    gateway.stop()


def test_requests_without_the_token_get_401(guarded: HttpGateway) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic s3cret-token"}):
        for path in ("/mcp", "/sse", "/messages/?session_id=00000000000000000000000000000000"):
            method = "GET" if path == "/sse" else "POST"
            response = httpx2.request(method, guarded.url + path, headers={**MCP_HEADERS, **headers}, json=INIT, timeout=10)
            assert response.status_code == 401, (path, headers)
            assert response.headers["www-authenticate"].startswith("Bearer")
    ok = httpx2.post(guarded.url + "/mcp", headers={**MCP_HEADERS, "Authorization": "Bearer s3cret-token"}, json=INIT, timeout=10)
    assert ok.status_code == 200
    assert httpx2.get(guarded.url + "/healthz", timeout=10).json() == {"status": "ok"}  # says nothing more


def test_dns_rebinding_protection_stays_on(guarded: HttpGateway) -> None:
    headers = {**MCP_HEADERS, "Authorization": "Bearer s3cret-token", "Host": f"evil.example:{guarded.port}"}
    assert httpx2.post(guarded.url + "/mcp", headers=headers, json=INIT, timeout=10).status_code == 421
    origin = {**MCP_HEADERS, "Authorization": "Bearer s3cret-token", "Origin": "http://evil.example"}
    assert httpx2.post(guarded.url + "/mcp", headers=origin, json=INIT, timeout=10).status_code == 403


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_a_token_holder_gets_the_whole_gateway(guarded: HttpGateway, mode: str) -> None:
    host = RecordingHost()
    async with guarded.client(mode, **host.callbacks()) as client:
        drained = await client.call_tool("infra__drain_node", {"name": "stage-1", "reason": "patching"})
        assert "Node stage-1 drained" in text_of(drained)
        summary = await client.call_tool("infra__summarize_incident", {"incident": "latency spike"})
        assert "recording-host" in text_of(summary)
        roots = await client.call_tool("infra__report_destinations", {})
        assert roots.structured_content == {"result": ["file:///srv/workspace"]}


async def test_sse_hosts_are_served_too(guarded: HttpGateway) -> None:
    host = RecordingHost()
    async with guarded.client("legacy", transport="sse", **host.callbacks()) as client:
        names = {t.name for t in (await client.list_tools()).tools}
        assert "infra__get_node" in names
        summary = await client.call_tool("infra__summarize_incident", {"incident": "sse"})  # a relay over SSE
        assert "recording-host" in text_of(summary) and host.sampled


@pytest.fixture(scope="module")
def remote_everything() -> dict[str, str]:
    """server-everything served over streamable HTTP and over SSE, as remote downstream servers."""
    processes, urls = [], {}
    for mode, path in (("streamableHttp", "/mcp"), ("sse", "/sse")):
        port = free_port()
        env = {**os.environ, "PORT": str(port)}
        processes.append(subprocess.Popen(["node", str(EVERYTHING_JS), mode], env=env,
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        urls[mode] = f"http://127.0.0.1:{port}{path}"
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                httpx2.get(f"http://127.0.0.1:{port}/", timeout=1)
                break
            except httpx2.HTTPError:
                time.sleep(0.1)
    yield urls
    for process in processes:
        process.terminate()
        process.wait(timeout=10)


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_remote_downstream_servers_over_http_and_sse(
    tmp_path: Path, remote_everything: dict[str, str], mode: str
) -> None:
    servers = write_servers(tmp_path / "servers.d", {
        "remote": {"url": remote_everything["streamableHttp"]},
        "oldsse": {"url": remote_everything["sse"], "transport": "sse"},
    })
    host = RecordingHost()
    gateway = HttpGateway(servers, tmp_path / "state")
    try:
        async with gateway.client(mode, **host.callbacks()) as client:
            names = {t.name for t in (await client.list_tools()).tools}
            assert {"remote__echo", "oldsse__echo", "remote__trigger-sampling-request"} <= names
            assert text_of(await client.call_tool("remote__echo", {"message": "over http"})) == "Echo: over http"
            assert text_of(await client.call_tool("oldsse__echo", {"message": "over sse"})) == "Echo: over sse"
            sampled = await client.call_tool("remote__trigger-sampling-request", {"prompt": "remote", "maxTokens": 5})
            assert '"model": "recording-host"' in text_of(sampled)
    finally:
        gateway.stop()


def _descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def _alive(pids: set[int]) -> set[int]:
    alive = set()
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            alive.add(pid)
    return alive


def _stdio_gateway_with_servers(servers: Path, state: Path) -> tuple[subprocess.Popen[str], set[int]]:
    """A stdio gateway that has answered tools/list (so its servers run), and its descendant processes."""
    process = subprocess.Popen([PY, *gateway_command(servers, state)], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=ROOT, text=True)
    assert process.stdin and process.stdout
    for message in (INIT, {"jsonrpc": "2.0", "method": "notifications/initialized"},
                    {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}):
        process.stdin.write(json.dumps(message) + "\n")
        process.stdin.flush()
    while '"id":2' not in process.stdout.readline().replace(" ", ""):
        pass
    return process, _descendants(process.pid)


def _assert_gone(pids: set[int]) -> None:
    deadline = time.monotonic() + 10
    while _alive(pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(pids)


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads the process table from /proc")
def test_sigterm_stops_every_downstream_process(tmp_path: Path) -> None:
    servers = write_servers(tmp_path / "servers.d", {"infra": infra(), "everything": everything()})
    gateway = HttpGateway(servers, tmp_path / "state")
    body = httpx2.post(gateway.url + "/mcp", headers=MCP_HEADERS, json=INIT, timeout=10)
    session = body.headers["mcp-session-id"]
    headers = {**MCP_HEADERS, "mcp-session-id": session, "mcp-protocol-version": "2025-11-25"}
    httpx2.post(gateway.url + "/mcp", headers=headers, json={"jsonrpc": "2.0", "method": "notifications/initialized"}, timeout=10)
    httpx2.post(gateway.url + "/mcp", headers=headers, json={"jsonrpc": "2.0", "id": 2, "method": "tools/list"}, timeout=30)
    children = _descendants(gateway.process.pid)
    assert len(children) >= 2  # the downstream servers run
    assert gateway.stop() in (0, -signal.SIGTERM)
    _assert_gone(children)


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads the process table from /proc")
def test_closing_stdin_stops_a_stdio_gateway_and_its_servers(tmp_path: Path) -> None:
    process, children = _stdio_gateway_with_servers(write_servers(tmp_path / "servers.d", {"infra": infra()}), tmp_path / "state")
    assert children
    process.stdin.close()  # type: ignore[union-attr]
    assert process.wait(timeout=20) == 0
    _assert_gone(children)


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_list_changed_reaches_http_hosts(tmp_path: Path, mode: str) -> None:
    """A handshake host hears it on its standalone GET stream; a modern one on subscriptions/listen."""
    import anyio
    import mcp_types as types

    from conftest import eventually

    gateway = HttpGateway(write_servers(tmp_path / "servers.d", {"infra": infra()}), tmp_path / "state")
    host = RecordingHost()
    try:
        async with gateway.client(mode, **host.callbacks()) as client:
            await client.list_tools()
            if mode == "legacy":
                await client.call_tool("infra__enable_maintenance_tools", {})
                await eventually(lambda: _has(host, types.ToolListChangedNotification))
            else:
                async with client.listen(tools_list_changed=True) as subscription:
                    await client.call_tool("infra__enable_maintenance_tools", {})
                    with anyio.fail_after(15):
                        await subscription.__anext__()
            assert "infra__maintenance_window" in {t.name for t in (await client.list_tools()).tools}
    finally:
        gateway.stop()


async def _has(host: RecordingHost, kind: type) -> bool:
    return any(isinstance(n, kind) for n in host.notifications)


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads the process table from /proc")
def test_sigterm_stops_a_stdio_gateway_and_its_servers(tmp_path: Path) -> None:
    servers = write_servers(tmp_path / "servers.d", {"infra": infra(), "everything": everything()})
    process, children = _stdio_gateway_with_servers(servers, tmp_path / "state")
    assert len(children) >= 2
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=20) == 0
    _assert_gone(children)


async def test_a_push_that_could_belong_to_two_hosts_is_refused_not_misrouted(tmp_path: Path) -> None:
    """Two hosts of one tenant share a handshake-era server that pushes sampling without naming the call."""
    import anyio
    import mcp_types as types

    gateway = HttpGateway(write_servers(tmp_path / "servers.d", {"everything": everything()}), tmp_path / "state")
    first_asked, release = anyio.Event(), anyio.Event()
    asked: dict[str, int] = {"a": 0, "b": 0}

    def sampler(name: str) -> Any:
        async def sample(ctx: Any, params: Any) -> types.CreateMessageResult:
            asked[name] += 1
            if name == "a":
                first_asked.set()
                await release.wait()
            return types.CreateMessageResult(role="assistant", model=name, content=types.TextContent(type="text", text=name))
        return sample

    try:
        async with gateway.client("legacy", sampling_callback=sampler("a")) as a, \
                gateway.client("legacy", sampling_callback=sampler("b")) as b:
            results: dict[str, Any] = {}

            async def call(name: str, client: Any) -> None:
                results[name] = await client.call_tool("everything__trigger-sampling-request", {"prompt": name, "maxTokens": 5})

            async with anyio.create_task_group() as tg:
                tg.start_soon(call, "a", a)
                with anyio.fail_after(20):
                    await first_asked.wait()  # a's question is with host a; a's call is still in flight
                await call("b", b)  # b's server asks while both calls are in flight: nobody can tell whose
                release.set()
        assert '"model": "a"' in text_of(results["a"])
        assert asked == {"a": 1, "b": 0}  # host a was never shown b's question, host b never a's
        assert results["b"].is_error or "several hosts" in text_of(results["b"])
    finally:
        gateway.stop()


async def test_json_response_mode_answers_plain_json(tmp_path: Path) -> None:
    """--json-response: results come back as one JSON body (no SSE), so no event-size limit applies."""
    gateway = HttpGateway(write_servers(tmp_path / "servers.d", {"infra": infra()}), tmp_path / "state", "--json-response")
    try:
        response = httpx2.post(gateway.url + "/mcp", headers=MCP_HEADERS, json=INIT, timeout=30)
        assert response.headers["content-type"].startswith("application/json")
        assert response.json()["result"]["serverInfo"]["name"] == "fmos-mcp"
        async with gateway.client("legacy") as client:
            node = await client.call_tool("infra__get_node", {"name": "web-1"})
            assert node.structured_content["name"] == "web-1"
    finally:
        gateway.stop()
