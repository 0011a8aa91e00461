"""FastMCP's proxy in front of one downstream server, for side-by-side benchmarks. Runs in its own venv.

    python fastmcp_proxy.py --transport stdio|http [--port N] --backend-mode legacy|2026-07-28 \\
        (--url URL | -- COMMAND ARGS...)

The backend mode is pinned (FastMCP's default follows the host's era, which respawns the downstream when
hosts of both eras use one proxy), and the downstream session is kept alive between calls.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys


def main() -> None:
    argv = sys.argv[1:]
    command = argv[argv.index("--") + 1 :] if "--" in argv else []
    parser = argparse.ArgumentParser()
    parser.add_argument("--transport", choices=["stdio", "http"], default="stdio")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--backend-mode", default="legacy")
    parser.add_argument("--url")
    opts = parser.parse_args(argv[: argv.index("--")] if "--" in argv else argv)
    os.environ.setdefault("FASTMCP_SHOW_SERVER_BANNER", "false")
    os.environ.setdefault("FASTMCP_LOG_LEVEL", "WARNING")

    from fastmcp.client.transports import StdioTransport
    from fastmcp.server import create_proxy

    if opts.url:
        backend = opts.url
    else:
        backend = StdioTransport(
            command=shutil.which(command[0]) or command[0], args=command[1:], env=dict(os.environ), keep_alive=True
        )
    proxy = create_proxy(backend, mode=opts.backend_mode, name="fastmcp-proxy")
    if opts.transport == "stdio":
        proxy.run("stdio", show_banner=False, log_level="WARNING")
    else:
        proxy.run("http", show_banner=False, log_level="WARNING", host="127.0.0.1", port=opts.port, path="/mcp")


if __name__ == "__main__":
    main()
