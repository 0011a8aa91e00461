"""The downstream server every benchmark path talks to: an MCPServer (SDK 2.3) with a small tool, a 100 KB
tool and, for the scale test, N filler tools.

    python bench/servers/bench_server.py stdio [--tools N]
    python bench/servers/bench_server.py http PORT [--tools N]
"""

from __future__ import annotations

import argparse

from mcp.server import MCPServer

parser = argparse.ArgumentParser()
parser.add_argument("transport", choices=["stdio", "http"])
parser.add_argument("port", type=int, nargs="?", default=0)
parser.add_argument("--tools", type=int, default=0)
args = parser.parse_args()

mcp = MCPServer("bench", log_level="WARNING")
BLOB = "".join(f"line {i:06d}: the quick brown fox jumps over the lazy dog\n" for i in range(1600))[:100 * 1024]


@mcp.tool()
def echo(text: str) -> str:
    """Return the text unchanged."""
    return text


@mcp.tool()
def blob() -> str:
    """Return 100 KB of text."""
    return BLOB


def _filler(i: int):  # noqa: ANN202
    def tool(query: str, limit: int = 10) -> str:
        return f"tool {i}: {query} ({limit})"

    tool.__name__ = f"tool_{i:04d}"
    tool.__doc__ = f"Filler tool number {i}: looks something up in dataset {i % 37} and returns at most `limit` rows."
    return tool


for number in range(args.tools):
    mcp.add_tool(_filler(number))

if __name__ == "__main__":
    if args.transport == "http":
        mcp.run("streamable-http", port=args.port)
    else:
        mcp.run("stdio")
