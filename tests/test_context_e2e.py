"""The data plane end to end: a real client, the gateway in-process, a real SDK server with large results
and many tools (tests/servers/bulk_server.py), a real SQLite state."""

from __future__ import annotations

import base64
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import anyio
import mcp_types as types
import pytest
from mcp.shared.exceptions import MCPError

from conftest import MODES, PY, ROOT, RecordingHost, eventually, inproc_gateway, text_of, write_servers

BULK = ROOT / "tests" / "servers" / "bulk_server.py"
sys.path.insert(0, str(BULK.parent))
from bulk_server import record  # noqa: E402  (the server's own records: what the host must get back)


def bulk(tools: int = 0) -> dict[str, Any]:
    return {"command": PY, "args": [str(BULK)], "env": {"BULK_TOOLS": str(tools)}}


def gateway(tmp_path: Path, policy: str = "", *, tools: int = 0, mode: str = "legacy", tenant: str | None = None,
            **kwargs: Any) -> Any:
    policies = tmp_path / "policies"
    policies.mkdir(parents=True, exist_ok=True)
    (policies / "context.yaml").write_text(policy or "context: {exposure: flat}\n")
    servers = write_servers(tmp_path / "servers.d", {"bulk": bulk(tools)})
    return inproc_gateway(servers, tmp_path / "state", mode, policies_dir=policies, tenant=tenant, **kwargs)


def offload_meta(result: types.CallToolResult) -> dict[str, Any]:
    meta = (result.meta or {}).get("fmos/offload")
    assert meta, f"not offloaded: {text_of(result)[:200]}"
    return meta


async def read_bytes(client: Any, uri: str) -> bytes:
    contents = (await client.read_resource(uri)).contents[0]
    if isinstance(contents, types.BlobResourceContents):
        return base64.b64decode(contents.blob)
    return contents.text.encode()


@pytest.mark.parametrize("mode", MODES)
async def test_large_json_is_offloaded_and_every_read_back_path_returns_it(tmp_path: Path, mode: str) -> None:
    expected = {"total": 3000, "items": [record(i) for i in range(3000)]}
    async with gateway(tmp_path, mode=mode) as (app, client):
        result = await client.call_tool("bulk__records", {"count": 3000})
        assert not result.is_error
        text = text_of(result)
        assert len(text.encode()) < 4096 and "fmos://artifacts/" in text and "fmos_query" in text
        meta = offload_meta(result)
        assert meta["bytes"] > 20 * 1024 and meta["uri"].startswith("fmos://artifacts/")
        # The shape says what was there without the payload: types and array lengths.
        assert "3000" in text and "items" in text
        # Byte-exact resources/read, checked against the pointer's own digest and the server's data.
        data = await read_bytes(client, meta["uri"])
        assert hashlib.sha256(data).hexdigest() == meta["sha256"] and len(data) == meta["bytes"]
        assert json.loads(data) == expected
        # fmos_read pages through all of it; the pages join to the same bytes.
        pages, offset = [], 0
        while offset is not None:
            page = await client.call_tool("fmos_read", {"uri": meta["uri"], "offset": offset, "limit": 65536})
            assert not page.is_error, text_of(page)
            pages.append(page.structured_content["text"])
            offset = page.structured_content["next_offset"]
        assert "".join(pages).encode() == data
        # fmos_query in both path dialects; fmos_grep with context.
        query = await client.call_tool("fmos_query", {"uri": meta["uri"], "path": "$.items[2999].name"})
        assert query.structured_content["values"] == ["node-02999"]
        query = await client.call_tool("fmos_query", {"uri": meta["uri"], "path": ".items[9].tags.team"})
        assert query.structured_content["values"] == ["team 2"]
        # A bad path is an error naming the path, not a crash.
        bad = await client.call_tool("fmos_query", {"uri": meta["uri"], "path": "$.items[?"})
        assert bad.is_error and "$.items[?" in text_of(bad)
        # The trace recorded the offload.
        rows = await eventually(lambda: _offload_traces(app))
        assert rows[0]["decision"] == "offload"


async def _offload_traces(app: Any) -> list[dict[str, Any]]:
    await anyio.sleep(0.3)
    traps = [r["traps"] or [] for r in app.traces.recent(50)]
    return [t for row in traps for t in row if t.get("service") == "context"]


async def test_text_and_images_are_kept_as_they_came(tmp_path: Path) -> None:
    async with gateway(tmp_path) as (_, client):
        logs = await client.call_tool("bulk__log_text", {"kb": 64})
        meta = offload_meta(logs)
        data = await read_bytes(client, meta["uri"])
        assert hashlib.sha256(data).hexdigest() == meta["sha256"]
        assert "π=" in data.decode() and "…" in text_of(logs)  # a head-and-tail preview
        grep = await client.call_tool("fmos_grep", {"uri": meta["uri"], "pattern": "ERROR disk full", "context": 1})
        assert not grep.is_error and grep.structured_content["matches"]
        assert all("ERROR disk full" in m["text"] for m in grep.structured_content["matches"])
        bad = await client.call_tool("fmos_grep", {"uri": meta["uri"], "pattern": "(unclosed"})
        assert bad.is_error and "(unclosed" in text_of(bad)

        small = await client.call_tool("bulk__picture", {"kb": 1})  # below the threshold: untouched
        assert isinstance(small.content[0], types.ImageContent) and not (small.meta or {}).get("fmos/offload")
        big = await client.call_tool("bulk__picture", {"kb": 64})
        meta = offload_meta(big)
        contents = (await client.read_resource(meta["uri"])).contents[0]
        assert isinstance(contents, types.BlobResourceContents) and contents.mime_type == "image/png"
        direct = b"".join(hashlib.sha256(str(i).encode()).digest() for i in range(64 * 32))
        assert base64.b64decode(contents.blob) == direct


async def test_one_tenant_cannot_read_another_tenants_artifacts(tmp_path: Path) -> None:
    async with gateway(tmp_path, tenant="alpha") as (_, client):
        uri = offload_meta(await client.call_tool("bulk__log_text", {"kb": 40}))["uri"]
        assert (await client.call_tool("fmos_read", {"uri": uri, "limit": 10})).is_error is False
    async with gateway(tmp_path, tenant="beta") as (_, client):
        denied = await client.call_tool("fmos_read", {"uri": uri})
        assert denied.is_error and "no artifact" in text_of(denied)
        with pytest.raises(MCPError, match="no artifact"):
            await client.read_resource(uri)
        # The same payload offloaded by beta is beta's own copy, readable by beta.
        again = offload_meta(await client.call_tool("bulk__log_text", {"kb": 40}))
        assert again["uri"] == uri and not (await client.call_tool("fmos_read", {"uri": uri, "limit": 10})).is_error


async def test_retention_expires_pointers_clearly(tmp_path: Path) -> None:
    async with gateway(tmp_path, "context: {exposure: flat, retention: 1s}\n") as (_, client):
        uri = offload_meta(await client.call_tool("bulk__log_text", {"kb": 40}))["uri"]
        assert not (await client.call_tool("fmos_read", {"uri": uri, "limit": 10})).is_error
        await anyio.sleep(1.5)
        expired = await client.call_tool("fmos_read", {"uri": uri})
        assert expired.is_error and "expired" in text_of(expired)
        with pytest.raises(MCPError, match="expired"):
            await client.read_resource(uri)


async def test_offload_rules_per_tool(tmp_path: Path) -> None:
    policy = ("context:\n  exposure: flat\n  offload:\n    rules:\n"
              "      - {server: bulk, tool: log_text, never: true}\n"
              "      - {server: bulk, tool: records, threshold_bytes: 1024}\n")
    async with gateway(tmp_path, policy) as (_, client):
        kept = await client.call_tool("bulk__log_text", {"kb": 40})
        assert not (kept.meta or {}).get("fmos/offload") and len(text_of(kept).encode()) > 40 * 1024
        assert offload_meta(await client.call_tool("bulk__records", {"count": 30}))


@pytest.mark.parametrize("mode", MODES)
async def test_paged_tools_search_activate_and_list_changed(tmp_path: Path, mode: str) -> None:
    host = RecordingHost()
    policy = "context: {exposure: paged, max_active_tools: 3}\n"
    async with gateway(tmp_path, policy, tools=60, mode=mode, **host.callbacks()) as (app, client):
        seen = {t.name for t in (await client.list_tools()).tools}
        flat = next(iter(app.gateway.pools.values())).catalog.lists["tools"]
        assert {"fmos_search_tools", "fmos_activate_tools", "fmos_call_tool"} <= seen
        assert not any(n.startswith("bulk__") for n in seen) and len(flat) > 60
        found = await client.call_tool("fmos_search_tools", {"query": "convert stock prices", "k": 5})
        tools = found.structured_content["tools"]
        assert tools and all({"name", "score", "description"} <= set(t) for t in tools)
        assert [t["score"] for t in tools] == sorted((t["score"] for t in tools), reverse=True)
        assert "Convert stocks" in tools[0]["description"] and found.structured_content["servers"]
        names = [t["name"] for t in tools[:2]]

        async def activate(names: list[str]) -> Any:
            if mode == "legacy":
                host.notifications.clear()
                result = await client.call_tool("fmos_activate_tools", {"names": names})
                await eventually(lambda: _notified(host))
                return result
            async with client.listen(tools_list_changed=True) as subscription:
                result = await client.call_tool("fmos_activate_tools", {"names": names})
                with anyio.fail_after(10):
                    event = await subscription.__anext__()
                assert type(event).__name__ == "ToolsListChanged"
                return result

        await activate(names)
        assert set(names) <= {t.name for t in (await client.list_tools()).tools}
        # Past the limit the least recently used is paged out; it stays callable by name.
        more = [t.name for t in (await client.list_tools()).tools]
        result = await activate(["bulk__tool_0001", "bulk__tool_0002"])
        assert names[0] in result.structured_content["paged_out"]
        now = {t.name for t in (await client.list_tools()).tools}
        assert names[0] not in now and "bulk__tool_0002" in now and len(now - set(more)) >= 1
        called = await client.call_tool("fmos_call_tool", {"name": names[0], "arguments": {"query": "x"}})
        assert f"{names[0].removeprefix('bulk__')} ran with 'x'" in text_of(called)
        assert names[0] not in {t.name for t in (await client.list_tools()).tools}  # called, not paged in
        unknown = await client.call_tool("fmos_activate_tools", {"names": ["bulk__nope"]})
        assert unknown.is_error and "bulk__nope" in text_of(unknown)


async def _notified(host: RecordingHost) -> bool:
    return any(isinstance(n, types.ToolListChangedNotification) for n in host.notifications)


async def test_auto_exposure_pages_only_a_large_catalog(tmp_path: Path) -> None:
    async with gateway(tmp_path / "small", "context: {exposure: auto, auto_threshold_tokens: 4000}\n", tools=5) as (_, c):
        assert any(t.name.startswith("bulk__") for t in (await c.list_tools()).tools)
    async with gateway(tmp_path / "large", "context: {exposure: auto, auto_threshold_tokens: 4000}\n", tools=200) as (_, c):
        assert not any(t.name.startswith("bulk__") for t in (await c.list_tools()).tools)


async def test_search_works_without_the_semantic_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FMOS_SEMANTIC", "0")  # as if sentence-transformers were not installed
    async with gateway(tmp_path, "context: {exposure: paged}\n", tools=60) as (app, client):
        found = await client.call_tool("fmos_search_tools", {"query": "track flights", "k": 3})
        assert not found.is_error and "flights" in found.structured_content["tools"][0]["description"]
        assert app.data.tools.search.embedder is None


async def test_skills_load_read_and_unload(tmp_path: Path) -> None:
    skill = tmp_path / "skills" / "fleet-report"
    (skill / "references").mkdir(parents=True)
    (skill / "SKILL.md").write_text(
        "---\nname: fleet-report\ndescription: Write the weekly fleet report from logs and inventory.\n"
        "allowed-tools: bulk__log_text bulk__records\n---\n# Fleet report\nRead the logs first, then count nodes.\n")
    (skill / "references" / "format.md").write_text("Use three sections: health, capacity, incidents.\n")
    (tmp_path / "skills" / "broken").mkdir()
    (tmp_path / "skills" / "broken" / "SKILL.md").write_text("no front matter")
    async with gateway(tmp_path, "context: {exposure: paged, max_active_tools: 5}\n") as (app, client):
        listing = {t.name: t for t in (await client.list_tools()).tools}
        assert "fleet-report: Write the weekly fleet report" in listing["fmos_skill_load"].description
        catalog = await client.call_tool("fmos_skill_load", {})
        assert [s["name"] for s in catalog.structured_content["skills"]] == ["fleet-report"]
        loaded = await client.call_tool("fmos_skill_load", {"name": "fleet-report"})
        assert "Read the logs first" in text_of(loaded)
        uri = "fmos://skills/fleet-report/references/format.md"
        assert uri in loaded.structured_content["files"]
        assert "three sections" in (await client.read_resource(uri)).contents[0].text
        names = {t.name for t in (await client.list_tools()).tools}
        assert {"bulk__log_text", "bulk__records"} <= names  # the skill brought its tools
        await client.call_tool("bulk__records", {"count": 2})
        names = {t.name for t in (await client.list_tools()).tools}
        assert "bulk__log_text" not in names  # used: the skill is back to its header
        with pytest.raises(MCPError, match="no file"):
            await client.read_resource("fmos://skills/fleet-report/../../policies/context.yaml")


async def test_memory_is_per_tenant(tmp_path: Path) -> None:
    async with gateway(tmp_path, tenant="alpha") as (_, client):
        stored = await client.call_tool("fmos_remember", {"text": "The eu-west database fails over at 02:00 UTC.",
                                                          "tags": ["ops"]})
        assert not stored.is_error
        await client.call_tool("fmos_remember", {"text": "Lunch is at noon.", "tags": []})
        found = await client.call_tool("fmos_recall", {"query": "when does the database fail over", "k": 1})
        assert "02:00" in found.structured_content["memories"][0]["text"]
        bad = await client.call_tool("fmos_recall", {"query": ""})
        assert bad.is_error and "query" in text_of(bad)
    async with gateway(tmp_path, tenant="beta") as (_, client):
        found = await client.call_tool("fmos_recall", {"query": "database fail over", "k": 3})
        assert found.structured_content["memories"] == []


async def test_the_gateways_own_resource_templates_behave(tmp_path: Path) -> None:
    async with gateway(tmp_path) as (_, client):
        templates = {t.uri_template for t in (await client.list_resource_templates()).resource_templates}
        assert "fmos://artifacts/{id}" in templates
        ref = types.ResourceTemplateReference(type="ref/resource", uri="fmos://artifacts/{id}")
        completion = await client.complete(ref, {"name": "id", "value": "0"})
        assert completion.completion.values == []
        with pytest.raises(MCPError, match="fmos://artifacts/"):
            await client.read_resource("fmos://artifacts/not-an-id")
