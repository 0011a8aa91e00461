"""Shared pieces of the security bench: paths, the shared data sets, Wilson intervals, live servers and an
in-process gateway."""

from __future__ import annotations

import json
import math
import os
import sys
import tempfile
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import anyio

ROOT = Path(__file__).resolve().parents[2]
DATA = Path(os.environ.get("FMOS_BENCH_DATA") or ROOT.parent / "shared" / "data").resolve()  # ../shared/data
PEERS = ROOT / "tests" / "peers" / "node_modules" / "@modelcontextprotocol"
INFRA = ROOT / "examples" / "infra_server.py"
POLICIES = ROOT / "policies"
PY = sys.executable


def have_data() -> bool:
    return (DATA / "metatool" / "plugin_des.json").is_file() and (DATA / "msb" / "attack_task.jsonl").is_file()


def load_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# ----------------------------------------------------------------------------- statistics

def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a proportion k/n."""
    if n == 0:
        return (float("nan"), float("nan"))
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


@dataclass
class Rate:
    k: int
    n: int

    @property
    def value(self) -> float:
        return self.k / self.n if self.n else float("nan")

    def as_json(self) -> dict[str, Any]:
        lo, hi = wilson(self.k, self.n)
        return {"k": self.k, "n": self.n, "rate": round(self.value, 4), "ci95": [round(lo, 4), round(hi, 4)]}

    def __str__(self) -> str:
        if not self.n:
            return "-"
        lo, hi = wilson(self.k, self.n)
        return f"{self.k}/{self.n} {100 * self.value:5.1f}% [{100 * lo:4.1f}-{100 * hi:5.1f}]"


def table(headers: list[str], rows: list[list[Any]]) -> str:
    cells = [[str(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    line = lambda r: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))  # noqa: E731
    return "\n".join([line(headers), line(["-" * w for w in widths]), *(line(r) for r in cells)])


# ----------------------------------------------------------------------------- servers

def reference_servers(root: Path) -> dict[str, dict[str, Any]]:
    """servers.d entries of the peers the project ships for its tests (real processes)."""
    root.mkdir(parents=True, exist_ok=True)  # server-filesystem's one allowed directory
    return {
        "everything": {"command": "node", "args": [str(PEERS / "server-everything" / "dist" / "index.js"), "stdio"]},
        "files": {"command": "node", "args": [str(PEERS / "server-filesystem" / "dist" / "index.js"), str(root)]},
        "time": {"command": PY, "args": ["-m", "mcp_server_time", "--local-timezone", "UTC"]},
        "infra": {"command": PY, "args": [str(INFRA)]},
    }


async def list_live_tools(entries: dict[str, dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Each server's tools as it lists them itself, over stdio with the SDK's client."""
    from mcp import Client, StdioServerParameters
    from mcp.client.stdio import stdio_client

    out: dict[str, list[dict[str, Any]]] = {}
    for name, entry in entries.items():
        params = StdioServerParameters(command=entry["command"], args=entry["args"])
        with open(Path(tempfile.gettempdir()) / f"fmos-bench-{name}.stderr", "w") as errlog:
            async with Client(stdio_client(params, errlog=errlog), mode="legacy") as client:
                tools = (await client.list_tools()).tools
        out[name] = [t.model_dump(by_alias=True, mode="json", exclude_none=True) for t in tools]
    return out


def write_servers(directory: Path, servers: dict[str, Any]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "bench.json").write_text(json.dumps({"mcpServers": servers}, indent=2))
    return directory


@asynccontextmanager
async def gateway(servers_dir: Path, state_dir: Path, *, policies: Path = POLICIES, trust: bool = True,
                  roles: tuple[str, ...] | None = None, clock: Callable[[], datetime] | None = None,
                  expect_tools: int = 1, **client_kwargs: Any) -> AsyncIterator[tuple[Any, Any]]:
    """fmos-mcp in this process (as tests/conftest.py::inproc_gateway), with a legacy-mode SDK client."""
    from mcp import Client

    from fmos_mcp.app import AppConfig, build

    app = build(AppConfig(servers_dir, policies, state_dir, trust=trust, roles=roles))
    if clock is not None:
        app.trust.service.clock = clock
    async with anyio.create_task_group() as tasks:
        await tasks.start(app.background)
        await tasks.start(app.gateway.run)
        async with Client(app.gateway.face.server, mode="legacy", **client_kwargs) as client:
            with anyio.fail_after(60):
                while len((await client.list_tools()).tools) < expect_tools:
                    await anyio.sleep(0.1)
            yield app, client
        tasks.cancel_scope.cancel()
