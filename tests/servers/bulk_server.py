"""A real MCP server (SDK MCPServer) with large results and, on request, many tools: for the data plane.

- `records {count}`: JSON records (structured content and its text form);
- `log_text {kb}`: plain log lines, with a few multi-byte characters;
- `picture {kb}`: an image block of `kb` KB of deterministic bytes;
- `BULK_TOOLS=N` in the environment adds N generated tools (`tool_0001` ...) with distinct descriptions.
"""

from __future__ import annotations

import base64
import hashlib
import os
from typing import Any

import mcp_types as types
from mcp.server import MCPServer

mcp = MCPServer("bulk", log_level="WARNING")
TOPICS = ["weather", "stocks", "flights", "recipes", "translation", "calendar", "email", "maps", "music", "news",
          "currency", "fitness", "movies", "books", "shopping", "jobs", "hotels", "sports", "crypto", "podcasts"]
VERBS = ["search", "get", "list", "create", "update", "summarize", "compare", "track", "book", "convert"]


def record(i: int) -> dict[str, Any]:
    return {"id": i, "name": f"node-{i:05d}", "zone": ["eu-west", "us-east", "ap-south"][i % 3],
            "tags": {"team": f"team {i % 7}", "tier": "gold" if i % 11 == 0 else "std"},
            "metrics": [round((i * 37 % 101) / 7, 3), i % 13, None if i % 5 else True], "note": "Zürich ✓" if i % 9 == 0 else ""}


@mcp.tool(description="Inventory records of the fleet, as JSON.")
def records(count: int) -> dict[str, Any]:
    return {"total": count, "items": [record(i) for i in range(count)]}


@mcp.tool(description="Recent log lines of the fleet.")
def log_text(kb: int) -> str:
    lines, size, i = [], 0, 0
    while size < kb * 1024:
        line = f"2026-11-22T10:{i // 60 % 60:02d}:{i % 60:02d}Z node-{i % 97:05d} {'ERROR disk full' if i % 50 == 7 else 'INFO ok'} — π={i}"
        lines.append(line)
        size += len(line.encode()) + 1
        i += 1
    return "\n".join(lines)


@mcp.tool(description="A picture of the fleet map.")
def picture(kb: int) -> types.CallToolResult:
    data = b"".join(hashlib.sha256(str(i).encode()).digest() for i in range(kb * 32))
    return types.CallToolResult(content=[types.ImageContent(type="image", data=base64.b64encode(data).decode(),
                                                            mime_type="image/png")])


def _runner(name: str) -> Any:
    def run(query: str = "") -> str:
        return f"{name} ran with {query!r}"

    return run


def _generated(count: int) -> None:
    for n in range(count):
        verb, topic = VERBS[n % len(VERBS)], TOPICS[(n // len(VERBS)) % len(TOPICS)]
        name = f"tool_{n:04d}"
        mcp.add_tool(_runner(name), name=name, description=f"{verb.capitalize()} {topic} data, variant {n}: {verb}s {topic} for the user.")


_generated(int(os.environ.get("BULK_TOOLS", "0")))

if __name__ == "__main__":
    mcp.run()
