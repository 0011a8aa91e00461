"""Per-call latency: a direct stdio connection to a server against the same server through fmos-mcp.

Rounds are interleaved (direct, gateway, direct, gateway, ...) so machine drift hits both alike.
Prints p50/p99 per path and the gateway's added time. Run: `.venv/bin/python bench/latency.py [--calls N]`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
from mcp import Client, StdioServerParameters

ROOT = Path(__file__).resolve().parent.parent
SERVERS = {
    # a raw JSON-RPC server (handshake era): measures the gateway, not the server
    "fault": ([str(ROOT / "tests" / "servers" / "fault_server.py")], "ok", {}),
    # the example server on the SDK's MCPServer (modern era when asked with auto)
    "infra": ([str(ROOT / "examples" / "infra_server.py")], "get_node", {"name": "web-1"}),
}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def measure(calls: int, rounds: int, mode: str) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        servers_dir = Path(tmp) / "servers.d"
        servers_dir.mkdir()
        entries = {name: {"command": sys.executable, "args": args} for name, (args, _, _) in SERVERS.items()}
        (servers_dir / "bench.json").write_text(json.dumps({"mcpServers": entries}))
        gateway = StdioServerParameters(command=sys.executable, args=[
            "-m", "fmos_mcp", "serve", "--servers-dir", str(servers_dir), "--state-dir", str(Path(tmp) / "state"),
            "--log-level", "error",
        ], cwd=str(ROOT))
        report: dict[str, Any] = {}
        for name, (args, tool, arguments) in SERVERS.items():
            direct = StdioServerParameters(command=sys.executable, args=args)
            samples: dict[str, list[float]] = {"direct": [], "gateway": []}
            async with Client(direct, mode=mode) as d, Client(gateway, mode=mode) as g:
                era = d.protocol_version
                targets = {"direct": (d, tool), "gateway": (g, f"{name}__{tool}")}
                for client, target in targets.values():  # warm up both paths
                    for _ in range(20):
                        await client.call_tool(target, arguments)
                for _ in range(rounds):
                    for path, (client, target) in targets.items():
                        for _ in range(calls // rounds):
                            start = time.perf_counter()
                            result = await client.call_tool(target, arguments)
                            samples[path].append((time.perf_counter() - start) * 1000)
                            assert not result.is_error
            row = {path: {"p50": percentile(s, 0.5), "p99": percentile(s, 0.99), "mean": statistics.fmean(s)}
                   for path, s in samples.items()}
            row["added_p50_ms"] = row["gateway"]["p50"] - row["direct"]["p50"]
            row["added_p99_ms"] = row["gateway"]["p99"] - row["direct"]["p99"]
            row["era"] = era
            report[name] = row
        return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=1000, help="calls per path per server")
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    print(f"{'server':8} {'host':6} {'era':11} {'direct p50':>10} {'gw p50':>8} {'added p50':>9} "
          f"{'direct p99':>10} {'gw p99':>8} {'added p99':>9}  (ms, stdio, {args.calls} calls/path)")
    for mode in ("legacy", "auto"):
        report = anyio.run(measure, args.calls, args.rounds, mode)
        for name, row in report.items():
            print(f"{name:8} {mode:6} {row['era']:11} {row['direct']['p50']:10.3f} {row['gateway']['p50']:8.3f} "
                  f"{row['added_p50_ms']:9.3f} {row['direct']['p99']:10.3f} {row['gateway']['p99']:8.3f} "
                  f"{row['added_p99_ms']:9.3f}")


if __name__ == "__main__":
    main()
