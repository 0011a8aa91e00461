"""bench/context: what the host's context pays for tools, flat against paged, and offload through the gateway.

1. Tool definitions: a real SDK server with N generated tools (tests/servers/bulk_server.py, BULK_TOOLS=N;
   short one-line descriptions, so the flat list here is smaller than real servers' and the ratio conservative)
   behind the gateway, once with `exposure: flat` and once `paged`: bytes and estimated tokens (bytes / 4) of
   everything `tools/list` returns, for 50, 500 and 5,000 tools.
2. Search through the gateway: the first search (BM25, at once), the time until the semantic index is ready
   (built on a worker thread; every tool is new to this fresh state), then `fmos_search_tools` latency (p50,
   p95) as the host sees it, a new query each time, same catalogs.
3. Offload end to end: `records` results of 1 KB to ~20 MB through the gateway: time, bytes the host gets, and
   recoverability (byte-exact `resources/read` against the digest, `fmos_query` of sampled records).

Run: .venv/bin/python bench/context/tokens.py; writes bench/context/tokens_results.json.
"""

from __future__ import annotations

import hashlib
import json
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
from mcp import Client

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "servers"))

from bulk_server import record  # noqa: E402

from fmos_mcp.app import AppConfig, build  # noqa: E402

BULK = ROOT / "tests" / "servers" / "bulk_server.py"
# Every search a new query (a cached query embedding would flatter the figures): verb x topic x phrasing.
QUERIES = [f"{how} {verb} {topic}" for how in ("help me", "I want to", "please")
           for verb in ("find", "convert", "track", "book", "compare") for topic in
           ("stock prices", "flight status", "recipes for dinner", "hotel rooms", "exchange rates")]


def write(base: Path, tools: int, exposure: str) -> tuple[Path, Path]:
    servers, policies = base / "servers.d", base / "policies"
    servers.mkdir(parents=True, exist_ok=True)
    policies.mkdir(parents=True, exist_ok=True)
    spec = {"mcpServers": {"bulk": {"command": sys.executable, "args": [str(BULK)], "env": {"BULK_TOOLS": str(tools)}}}}
    (servers / "bulk.json").write_text(json.dumps(spec))
    (policies / "context.yaml").write_text(f"context: {{exposure: {exposure}}}\n")
    return servers, policies


def list_bytes(tools: list[Any]) -> int:
    return len(json.dumps([t.model_dump(by_alias=True, mode="json", exclude_none=True) for t in tools],
                          separators=(",", ":")).encode())


async def with_gateway(base: Path, tools: int, exposure: str, work: Any) -> Any:
    servers, policies = write(base, tools, exposure)
    app = build(AppConfig(servers, policies, base / "state", trust=False))
    async with anyio.create_task_group() as tasks:
        await tasks.start(app.background)
        await tasks.start(app.gateway.run)
        async with Client(app.gateway.face.server, mode="legacy") as client:
            await client.list_tools()
            with anyio.fail_after(120):  # a server with thousands of tools takes a while to come up
                while len(next(iter(app.gateway.pools.values())).catalog.tools) < tools:
                    await anyio.sleep(0.2)
            out = await work(app, client)
        tasks.cancel_scope.cancel()
    return out


async def exposure_part(tmp: Path) -> list[dict[str, Any]]:
    rows = []
    for n in (50, 500, 5000):
        async def listed(app: Any, client: Client) -> list[Any]:
            tools, cursor = [], None
            while True:  # every page: what a host that lists everything pays
                page = await client.list_tools(cursor=cursor)
                tools += page.tools
                cursor = page.next_cursor
                if not cursor:
                    return tools

        flat = await with_gateway(tmp / f"flat{n}", n, "flat", listed)

        async def paged_run(app: Any, client: Client) -> dict[str, Any]:
            tools = (await client.list_tools()).tools
            start = time.perf_counter()
            await client.call_tool("fmos_search_tools", {"query": "warm up", "k": 5})
            bm25_ready = (time.perf_counter() - start) * 1000
            search, pool = app.data.tools.search, next(iter(app.gateway.pools.values()))
            while search.embedder is not None:  # the semantic index is built on a worker thread
                index = search.cached(pool.catalog)
                if index is None:  # the catalog was rebuilt meanwhile: a search starts its index
                    await client.call_tool("fmos_search_tools", {"query": "warm up", "k": 5})
                elif index.semantic:
                    break
                await anyio.sleep(0.2)
            semantic_ready = time.perf_counter() - start
            times = []
            for i in range(len(QUERIES) + 1):
                start = time.perf_counter()
                result = await client.call_tool("fmos_search_tools", {"query": QUERIES[i % len(QUERIES)], "k": 5})
                times.append((time.perf_counter() - start) * 1000)
                assert not result.is_error, result
            rest = sorted(times)
            return {"tools": tools, "first_search_ms": round(bm25_ready, 1), "semantic_ready_s": round(semantic_ready, 1),
                    "search_p50_ms": round(rest[len(rest) // 2], 2), "search_p95_ms": round(rest[int(len(rest) * 0.95)], 2)}

        paged = await with_gateway(tmp / f"paged{n}", n, "paged", paged_run)
        fb, pb = list_bytes(flat), list_bytes(paged.pop("tools"))
        rows.append({"tools": n, "flat_bytes": fb, "flat_tokens": fb // 4, "paged_bytes": pb, "paged_tokens": pb // 4,
                     "paged_share_pct": round(100 * pb / fb, 2), **paged})
        print(rows[-1], flush=True)
    return rows


async def offload_part(tmp: Path) -> list[dict[str, Any]]:
    async def run(app: Any, client: Client) -> list[dict[str, Any]]:
        out = []
        for count in (5, 100, 1000, 10000, 50000, 110000):
            start = time.perf_counter()
            result = await client.call_tool("bulk__records", {"count": count})
            elapsed = (time.perf_counter() - start) * 1000
            frame = len(result.model_dump_json(by_alias=True, exclude_none=True).encode())
            meta = (result.meta or {}).get("fmos/offload")
            row: dict[str, Any] = {"records": count, "host_bytes": frame, "call_ms": round(elapsed, 1), "offloaded": bool(meta)}
            if meta:
                pointers = (result.meta or {}).get("fmos/offloads") or [meta]
                row["stored_bytes"] = sum(p["bytes"] for p in pointers)
                exact = True
                for pointer in pointers:
                    contents = (await client.read_resource(pointer["uri"])).contents[0]
                    exact &= hashlib.sha256(contents.text.encode()).hexdigest() == pointer["sha256"]
                picks = random.Random(count).sample(range(count), min(20, count))
                found = 0
                for i in picks:
                    q = await client.call_tool("fmos_query", {"uri": pointers[-1]["uri"], "path": f"$.items[{i}]"})
                    found += q.structured_content is not None and q.structured_content["values"] == [record(i)]
                row.update(byte_exact=exact, records_recovered=f"{found}/{len(picks)}",
                           saved_pct=round(100 * (1 - frame / row["stored_bytes"]), 2))
            out.append(row)
            print(row, flush=True)
        return out

    return await with_gateway(tmp / "offload", 0, "flat", run)


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        results = {"exposure": await exposure_part(Path(tmp)), "offload": await offload_part(Path(tmp))}
    out = Path(__file__).with_name("tokens_results.json")
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    anyio.run(main)
