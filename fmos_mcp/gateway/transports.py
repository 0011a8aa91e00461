"""Opening the transport to one downstream server: a subprocess over stdio, streamable HTTP, or SSE."""

from __future__ import annotations

import os
import shutil
import sys
import threading
from collections import deque
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import Any

from mcp.client.sse import sse_client
from mcp.client.stdio import StdioServerParameters, get_default_environment, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

from fmos_mcp import logs
from fmos_mcp.config import ServerSpec
from fmos_mcp.gateway.stdio import spawn_stdio

log = logs.get("fmos.downstream")


class StartError(Exception):
    """A server could not be started; the message says why in the user's terms."""


class StderrTail:
    """Reads a child's stderr on a thread: each line goes to the debug log, the last few are kept for errors."""

    def __init__(self, server: str, secrets: Iterable[str] = (), keep: int = 20) -> None:
        self.server = server
        self.secrets = tuple(secrets)  # the server's own env and header values: never repeated anywhere
        self.lines: deque[str] = deque(maxlen=keep)
        self._read_fd, self._write_fd = os.pipe()
        # Our copy of the write end is closed once the child holds its own, or EOF would never come.
        self.writer = os.fdopen(self._write_fd, "w", buffering=1, encoding="utf-8", errors="replace")
        threading.Thread(target=self._pump, name=f"stderr-{server}", daemon=True).start()

    def _pump(self) -> None:
        with os.fdopen(self._read_fd, "r", encoding="utf-8", errors="replace") as reader:
            for line in reader:
                line = logs.redact_text(line.rstrip(), self.secrets)
                if line:
                    self.lines.append(line)
                    log.debug("server stderr", server=self.server, line=line[:2000])

    def tail(self, n: int = 5) -> str:
        return " | ".join(list(self.lines)[-n:])


@asynccontextmanager
async def open_transport(spec: ServerSpec, stderr: StderrTail | None) -> AsyncIterator[tuple[Any, Any]]:
    if spec.transport == "stdio":
        async with _stdio(spec, stderr) as streams:
            yield streams
    elif spec.transport == "sse":
        async with sse_client(spec.url or "", headers=dict(spec.headers) or None) as streams:
            yield streams
    else:
        async with (
            create_mcp_http_client(headers=dict(spec.headers) or None) as http,
            streamable_http_client(spec.url or "", http_client=http) as streams,
        ):
            yield streams


@asynccontextmanager
async def _stdio(spec: ServerSpec, stderr: StderrTail | None) -> AsyncIterator[tuple[Any, Any]]:
    # The write end of the stderr pipe is ours until the child holds its copy; it is closed on every path,
    # or the reader thread never sees end-of-file and the pipe leaks with every failed start.
    errlog = stderr.writer if stderr is not None else open(os.devnull, "w")  # noqa: SIM115
    try:
        env = get_default_environment() | dict(spec.env)
        command = spec.command or ""
        if shutil.which(command, path=env.get("PATH")) is None and not os.path.isfile(command):
            raise StartError(f"command '{command}' was not found on the PATH the server gets")
        if spec.cwd and not os.path.isdir(spec.cwd):
            raise StartError(f"working directory '{spec.cwd}' does not exist")
        params = StdioServerParameters(
            command=command,
            args=list(spec.args),
            env=env,
            cwd=spec.cwd,
            # One invalid UTF-8 byte would otherwise kill the SDK's reader for good.
            encoding_error_handler="replace",
        )
        if sys.platform == "win32":  # the SDK's transport knows Windows process trees (Job Objects)
            async with stdio_client(params, errlog=errlog) as streams:
                errlog.close()  # the child holds its own copy now
                yield streams
            return
        async with spawn_stdio(command, list(spec.args), env, spec.cwd, errlog) as streams:
            errlog.close()  # the child holds its own copy now
            yield streams
    finally:
        errlog.close()
