"""bench/overhead: what fmos-mcp adds to every call, side by side with a direct connection and with
FastMCP's proxy, in one run.

Every path reaches the same downstream (bench/servers/bench_server.py, an MCPServer) in the same protocol
era: `legacy` rows are handshake era end to end, `modern` rows are 2026-07-28 end to end. Rounds are
interleaved (each round runs every path) so that drift hits all paths alike.

    .venv/bin/python bench/overhead.py [--calls 600] [--rounds 6] [--skip-fastmcp] [--only latency|throughput|scale]

FastMCP runs in its own virtual environment, bench/.venv-fastmcp (created on first use, fastmcp 4.0.10:
4.1.6 requires a certifi release the package index does not have).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx2
from mcp import Client, StdioServerParameters

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
SERVER = ROOT / "bench" / "servers" / "bench_server.py"
PROXY = ROOT / "bench" / "peers" / "fastmcp_proxy.py"
FASTMCP_VENV = ROOT / "bench" / ".venv-fastmcp"
FASTMCP_VERSION = "4.0.10"
ERAS = {"legacy": ("legacy", "legacy", "legacy"), "modern": ("auto", "modern", "auto")}  # client, fmos, fastmcp


# ----------------------------------------------------------------------------- processes

def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def fastmcp_python() -> Path | None:
    python = FASTMCP_VENV / "bin" / "python"
    if not python.exists():
        print(f"creating {FASTMCP_VENV} with fastmcp {FASTMCP_VERSION} ...", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(FASTMCP_VENV)], check=True)
        install = subprocess.run([str(python), "-m", "pip", "install", "-q", f"fastmcp=={FASTMCP_VERSION}"],
                                 capture_output=True, text=True)
        if install.returncode != 0:
            print(f"fastmcp could not be installed; its rows are skipped:\n{install.stderr[-800:]}", file=sys.stderr)
            return None
    return python


class Background:
    """HTTP servers this run starts, stopped (with their children) at the end."""

    def __init__(self) -> None:
        self.processes: list[subprocess.Popen[bytes]] = []

    def start(self, args: list[str], url: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        process = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                   env={**os.environ, **(env or {})})
        self.processes.append(process)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                httpx2.get(url, timeout=1)
                return process
            except httpx2.HTTPError:
                if process.poll() is not None:
                    raise RuntimeError(f"{args[:4]} exited with {process.returncode}") from None
                time.sleep(0.1)
        raise RuntimeError(f"{args[:4]} did not come up")

    def stop(self) -> None:
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()


def servers_d(directory: Path, entries: dict[str, Any]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "bench.json").write_text(json.dumps({"mcpServers": entries}))
    return directory


def fmos_args(servers: Path, state: Path, *extra: str) -> list[str]:
    """Policies of the bench's own: the proxy path as such, so no offload of the 100 KB results (bench/context
    measures offload) and no budgets of the repository's example policies."""
    policies = state.parent / "bench-policies"
    policies.mkdir(parents=True, exist_ok=True)
    (policies / "context.yaml").write_text("context: {exposure: flat, offload: {rules: [{never: true}]}}\n")
    return ["-m", "fmos_mcp", "serve", "--servers-dir", str(servers), "--state-dir", str(state), "--log-level", "error",
            "--policies-dir", str(policies), *extra]


# ----------------------------------------------------------------------------- paths

@dataclass
class Contender:
    name: str
    open: Callable[[], Any]  # -> async context manager yielding a Client
    tool: str  # the echo tool's name on this path (fmos prefixes it)
    client: Client | None = None
    samples: dict[str, list[float]] = field(default_factory=lambda: {"small": [], "100KB": []})


def stdio_paths(era: str, tmp: Path, fastmcp: Path | None) -> list[Contender]:
    client_mode, fmos_era, fastmcp_mode = ERAS[era]
    downstream = [PY, str(SERVER), "stdio"]
    servers = servers_d(tmp / f"stdio-{era}", {"bench": {"command": PY, "args": [str(SERVER), "stdio"], "era": fmos_era}})
    paths = [
        Contender("direct", lambda: Client(StdioServerParameters(command=PY, args=downstream[1:]), mode=client_mode), ""),
        Contender("fmos-mcp", lambda: Client(StdioServerParameters(command=PY, args=fmos_args(servers, tmp / f"state-{era}"),
                                                               cwd=str(ROOT)), mode=client_mode), "bench__"),
    ]
    if fastmcp is not None:
        proxy = [str(PROXY), "--transport", "stdio", "--backend-mode", fastmcp_mode, "--", *downstream]
        paths.append(Contender("fastmcp", lambda: Client(StdioServerParameters(command=str(fastmcp), args=proxy,
                                                                            env=dict(os.environ)), mode=client_mode), ""))
    return paths


def http_paths(era: str, tmp: Path, fastmcp: Path | None, bg: Background) -> list[Contender]:
    client_mode, fmos_era, fastmcp_mode = ERAS[era]
    port = free_port()
    direct_url = f"http://127.0.0.1:{port}/mcp"
    bg.start([PY, str(SERVER), "http", str(port)], direct_url)
    servers = servers_d(tmp / f"http-{era}", {"bench": {"url": direct_url, "era": fmos_era}})
    gw_port = free_port()
    bg.start([PY, *fmos_args(servers, tmp / f"hstate-{era}", "--transport", "http", "--port", str(gw_port))],
             f"http://127.0.0.1:{gw_port}/healthz")
    paths = [
        Contender("direct", lambda: Client(direct_url, mode=client_mode), ""),
        Contender("fmos-mcp", lambda: Client(f"http://127.0.0.1:{gw_port}/mcp", mode=client_mode), "bench__"),
    ]
    if fastmcp is not None:
        proxy_port = free_port()
        bg.start([str(fastmcp), str(PROXY), "--transport", "http", "--port", str(proxy_port),
                  "--backend-mode", fastmcp_mode, "--url", direct_url], f"http://127.0.0.1:{proxy_port}/mcp")
        paths.append(Contender("fastmcp", lambda: Client(f"http://127.0.0.1:{proxy_port}/mcp", mode=client_mode), ""))
    return paths


# ----------------------------------------------------------------------------- measurements

def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def latency(paths: list[Contender], calls: int, rounds: int) -> None:
    async with AsyncExitStack() as stack:
        for path in paths:
            path.client = await stack.enter_async_context(path.open())
            for _ in range(30):  # warm up: imports, caches, first listings
                await path.client.call_tool(path.tool + "echo", {"text": "warm"})
                await path.client.call_tool(path.tool + "blob", {})
        per_round = max(1, calls // rounds)
        for _ in range(rounds):
            for path in paths:
                assert path.client is not None
                for payload, tool, arguments in (("small", "echo", {"text": "ping"}), ("100KB", "blob", {})):
                    count = per_round if payload == "small" else max(1, per_round // 4)
                    for _ in range(count):
                        start = time.perf_counter()
                        result = await path.client.call_tool(path.tool + tool, arguments)
                        path.samples[payload].append((time.perf_counter() - start) * 1000)
                        if result.is_error:
                            raise RuntimeError(f"{path.name}: {result.content}")


def latency_rows(transport: str, era: str, paths: list[Contender]) -> list[dict[str, Any]]:
    rows = []
    direct = paths[0]
    fastmcp = next((p for p in paths if p.name == "fastmcp"), None)
    for payload in ("small", "100KB"):
        base50 = pct(direct.samples[payload], 0.5)
        for path in paths:
            p50, p99 = pct(path.samples[payload], 0.5), pct(path.samples[payload], 0.99)
            row = {"transport": transport, "era": era, "payload": payload, "path": path.name, "p50": p50, "p99": p99,
                   "added_p50": p50 - base50, "x_direct": p50 / base50}
            if fastmcp is not None and path.name == "fmos-mcp":
                fastmcp_added = pct(fastmcp.samples[payload], 0.5) - base50
                row["vs_fastmcp_added"] = (p50 - base50) / fastmcp_added if fastmcp_added > 0 else float("nan")
            rows.append(row)
    return rows


async def throughput(paths: list[Contender], clients: int, calls: int, repeats: int) -> dict[str, float]:
    """Calls per second with `clients` concurrent sessions of `calls` each, best of `repeats` interleaved runs."""
    best: dict[str, float] = {}
    for _ in range(repeats):
        for path in paths:
            async with AsyncExitStack() as stack:
                sessions = [await stack.enter_async_context(path.open()) for _ in range(clients)]
                for session in sessions:
                    await session.call_tool(path.tool + "echo", {"text": "warm"})

                async def run(session: Client, tool: str = path.tool + "echo") -> None:
                    for _ in range(calls):
                        await session.call_tool(tool, {"text": "ping"})

                start = time.perf_counter()
                async with anyio.create_task_group() as tasks:
                    for session in sessions:
                        tasks.start_soon(run, session)
                rate = clients * calls / (time.perf_counter() - start)
            best[path.name] = max(best.get(path.name, 0.0), rate)
    return best


async def list_all(client: Client) -> list[Any]:
    tools, cursor = [], None
    while True:
        page = await client.list_tools(cursor=cursor)
        tools += page.tools
        cursor = page.next_cursor
        if not cursor:
            return tools


INIT = {"jsonrpc": "2.0", "id": 0, "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "bench", "version": "1"}}}


_NEXT = re.compile(r'"nextCursor":\s*"([^"]+)"')


def raw_listing(send: Callable[[dict[str, Any]], str], parse: bool = False) -> int:
    """Every page of tools/list with a client that only finds the cursor (no JSON parsing, which for a
    thousand tools costs the client more than the gateway spends): the gateway's answer time."""
    count, cursor, ident = 0, None, 100
    while True:
        ident += 1
        params = {"cursor": cursor} if cursor else {}
        text = send({"jsonrpc": "2.0", "id": ident, "method": "tools/list", "params": params})
        if parse:
            count += len(json.loads(text)["result"]["tools"])
        found = _NEXT.search(text)
        cursor = found.group(1) if found else None
        if not cursor:
            return count


def raw_stdio(directory: Path, state: Path) -> tuple[int, list[float]]:
    process = subprocess.Popen([PY, *fmos_args(directory, state, "--startup-grace", "60")], cwd=ROOT,
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
    assert process.stdin and process.stdout

    def send(message: dict[str, Any]) -> str:
        process.stdin.write(json.dumps(message) + "\n")  # type: ignore[union-attr]
        process.stdin.flush()  # type: ignore[union-attr]
        marker = f'"id":{message["id"]}'
        while True:
            line = process.stdout.readline()  # type: ignore[union-attr]
            if marker in line[:200].replace(" ", ""):
                return line

    try:
        send(INIT)
        process.stdin.write(json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"}) + "\n")
        total = raw_listing(send, parse=True)
        timings = []
        for _ in range(40):
            start = time.perf_counter()
            raw_listing(send)
            timings.append((time.perf_counter() - start) * 1000)
        return total, timings
    finally:
        process.stdin.close()
        process.wait(timeout=30)


def raw_http(url: str) -> list[float]:
    headers = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
    with httpx2.Client(timeout=60) as http:
        session = http.post(url, headers=headers, json=INIT).headers["mcp-session-id"]
        headers |= {"mcp-session-id": session, "mcp-protocol-version": "2025-11-25"}
        http.post(url, headers=headers, json={"jsonrpc": "2.0", "method": "notifications/initialized"})

        def send(message: dict[str, Any]) -> str:
            return http.post(url, headers=headers, json=message).text

        raw_listing(send)
        timings = []
        for _ in range(40):
            start = time.perf_counter()
            raw_listing(send)
            timings.append((time.perf_counter() - start) * 1000)
        return timings


async def scale(tmp: Path, bg: Background, servers: int, tools_each: int) -> dict[str, float]:
    entries = {f"s{i:02d}": {"command": PY, "args": [str(SERVER), "stdio", "--tools", str(tools_each)]} for i in range(servers)}
    directory = servers_d(tmp / "scale", entries)
    total, stdio_timings = raw_stdio(directory, tmp / "scale-stdio")
    port = free_port()
    gateway = bg.start([PY, *fmos_args(directory, tmp / "scale-state", "--transport", "http", "--port", str(port),
                                       "--startup-grace", "60")], f"http://127.0.0.1:{port}/healthz")
    url = f"http://127.0.0.1:{port}/mcp"
    async with Client(url, mode="legacy") as client:
        assert len(await list_all(client)) == total
        sdk_timings = []
        for _ in range(20):
            start = time.perf_counter()
            await list_all(client)
            sdk_timings.append((time.perf_counter() - start) * 1000)
    http_timings = raw_http(url)
    rss_kb = next(int(line.split()[1]) for line in Path(f"/proc/{gateway.pid}/status").read_text().splitlines()
                  if line.startswith("VmRSS:"))
    return {"tools": total, "servers": servers, "stdio_p50_ms": pct(stdio_timings, 0.5),
            "http_p50_ms": pct(http_timings, 0.5), "sdk_client_p50_ms": pct(sdk_timings, 0.5), "rss_mb": rss_kb / 1024}


# ----------------------------------------------------------------------------- report

def print_latency(rows: list[dict[str, Any]]) -> None:
    print("\n| transport | era | payload | path | p50 ms | p99 ms | added p50 ms | x direct | fmos added / fastmcp added |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        vs = f"{r['vs_fastmcp_added']:.2f}" if "vs_fastmcp_added" in r else ""
        print(f"| {r['transport']} | {r['era']} | {r['payload']} | {r['path']} | {r['p50']:.2f} | {r['p99']:.2f} | "
              f"{r['added_p50']:+.2f} | {r['x_direct']:.2f} | {vs} |")


async def main(opts: argparse.Namespace) -> None:
    fastmcp = None if opts.skip_fastmcp else fastmcp_python()
    bg = Background()
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        try:
            if opts.only in (None, "latency"):
                rows: list[dict[str, Any]] = []
                for transport in ("stdio", "http"):
                    for era in ("legacy", "modern"):
                        paths = stdio_paths(era, tmp, fastmcp) if transport == "stdio" else http_paths(era, tmp, fastmcp, bg)
                        await latency(paths, opts.calls, opts.rounds)
                        rows += latency_rows(transport, era, paths)
                print_latency(rows)
            if opts.only in (None, "throughput"):
                print(f"\nstreamable HTTP throughput, {opts.clients} clients x {opts.per_client} calls (best of 3):")
                for era in ("legacy", "modern"):
                    rates = await throughput(http_paths(era, tmp, fastmcp, bg), opts.clients, opts.per_client, 3)
                    ratio = f", fmos/fastmcp {rates['fmos-mcp'] / rates['fastmcp']:.2f}x" if "fastmcp" in rates else ""
                    print(f"  {era}: " + ", ".join(f"{k} {v:.0f} calls/s" for k, v in rates.items()) + ratio)
            if opts.only in (None, "scale"):
                r = await scale(tmp, bg, 20, 50)
                print(f"\nscale: {r['servers']} downstream servers, {r['tools']} tools; full tools/list (every page), p50: "
                      f"{r['stdio_p50_ms']:.2f} ms over stdio and {r['http_p50_ms']:.2f} ms over streamable HTTP "
                      f"(raw client, the gateway's answer), {r['sdk_client_p50_ms']:.2f} ms as an SDK client sees it "
                      f"(its own parsing included); gateway resident memory {r['rss_mb']:.0f} MB")
        finally:
            bg.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=600, help="small calls per path per scenario")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--per-client", type=int, default=50)
    parser.add_argument("--skip-fastmcp", action="store_true")
    parser.add_argument("--only", choices=["latency", "throughput", "scale"])
    anyio.run(main, parser.parse_args())
