"""stdio transports on the event loop itself: the host side (`stdio_streams`) and the server side
(`spawn_stdio`).

Host side: the SDK's stdio server reads stdin through a worker thread: every message costs thread hops,
and a read blocked in a thread cannot be cancelled, so a signal could not stop the gateway while a host
kept stdin open. This transport reads and writes the pipes with asyncio. Like the SDK's, it claims fds 0
and 1 while serving (0 reads /dev/null, 1 writes to stderr), so nothing else in the process can touch the
wire. Where stdin is not a pipe, socket or terminal (a regular file), or on Windows, the SDK's is used.

Server side: the SDK's stdio client joins every chunk to the line read so far, which is quadratic for one
large message (a 20 MB result took seconds), and hands each message over unbuffered. This one joins a
line once, at its newline, and buffers. Process handling is the SDK's: a session of its own, stdin closed
first, then the whole process group terminated and killed.
"""

from __future__ import annotations

import asyncio
import os
import stat
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from typing import IO, Any

import anyio
import anyio.abc
import mcp_types as types
from mcp.os.posix.utilities import terminate_posix_process_tree
from mcp.server.stdio import stdio_server as sdk_stdio_server
from mcp.shared.message import SessionMessage

MAX_MESSAGE = 256 * 1024 * 1024  # one JSON-RPC line; longer input is refused, not buffered without bound


@asynccontextmanager
async def stdio_streams() -> AsyncIterator[tuple[Any, Any]]:
    if sys.platform == "win32" or not _is_stream(0) or not _is_stream(1):
        async with sdk_stdio_server() as streams:
            yield streams
        return
    wire_in, wire_out = _claim(0, os.open(os.devnull, os.O_RDONLY)), _claim(1, os.dup(2))
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=MAX_MESSAGE)
    read_transport, _ = await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(wire_in, "rb", buffering=0)
    )
    write_transport, write_protocol = await loop.connect_write_pipe(
        asyncio.streams.FlowControlMixin, os.fdopen(wire_out, "wb", buffering=0)
    )
    writer = asyncio.StreamWriter(write_transport, write_protocol, None, loop)
    # Buffered, so reading a message never waits for the server to take the previous one (a rendezvous
    # costs a context switch per message); the pipe's own flow control still bounds what is in flight.
    to_server, from_wire = anyio.create_memory_object_stream[SessionMessage | Exception](64)
    to_wire, from_server = anyio.create_memory_object_stream[SessionMessage](64)
    try:
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(_read, reader, to_server)
            tasks.start_soon(_write, writer, from_server)
            yield from_wire, to_wire
            tasks.cancel_scope.cancel()
    finally:
        read_transport.close()
        write_transport.close()
        _restore(0, wire_in)
        _restore(1, wire_out)


async def _read(reader: asyncio.StreamReader, out: Any) -> None:
    async with out:
        while True:
            try:
                line = await reader.readuntil(b"\n")
            except asyncio.IncompleteReadError as end:
                line = end.partial
                if not line.strip():
                    return  # the host closed stdin
            except asyncio.LimitOverrunError:
                await _skip_line(reader)
                await out.send(ValueError(f"a message longer than {MAX_MESSAGE} bytes was discarded"))
                continue
            if not line.strip():
                continue
            try:
                message = types.jsonrpc_message_adapter.validate_json(line, by_name=False)
            except ValueError as exc:  # the SDK answers what it can and logs the rest
                await out.send(exc)
                continue
            await out.send(SessionMessage(message))


async def _skip_line(reader: asyncio.StreamReader) -> None:
    while True:
        try:
            await reader.readuntil(b"\n")
            return
        except asyncio.LimitOverrunError as over:
            await reader.readexactly(over.consumed)
        except asyncio.IncompleteReadError:
            return


async def _write(writer: asyncio.StreamWriter, messages: Any) -> None:
    async with messages:
        async for message in messages:
            data = message.message.model_dump_json(by_alias=True, exclude_unset=True)
            writer.write(data.encode("utf-8") + b"\n")
            await writer.drain()


def _is_stream(fd: int) -> bool:
    try:
        mode = os.fstat(fd).st_mode
    except OSError:
        return False
    return stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or stat.S_ISCHR(mode)


def _claim(fd: int, diversion: int) -> int:
    """Move the wire to a private descriptor and point `fd` at the diversion."""
    private = os.dup(fd)
    os.set_inheritable(private, False)
    os.dup2(diversion, fd)
    os.close(diversion)
    return private


def _restore(fd: int, private: int) -> None:
    with suppress(OSError):
        os.dup2(private, fd)


# ----------------------------------------------------------------------------- the server side

STOP_GRACE = 2.0  # seconds a server gets to exit after its stdin closes, and again after SIGTERM


@asynccontextmanager
async def spawn_stdio(
    command: str, args: list[str], env: dict[str, str], cwd: str | None, errlog: IO[str]
) -> AsyncIterator[tuple[Any, Any]]:
    process = await anyio.open_process([command, *args], env=env, cwd=cwd, stderr=errlog, start_new_session=True)
    to_session, from_server = anyio.create_memory_object_stream[SessionMessage | Exception](64)
    to_server, from_session = anyio.create_memory_object_stream[SessionMessage](64)
    try:
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(_read_server, process, to_session)
            tasks.start_soon(_write_server, process, from_session, to_session)
            try:
                yield from_server, to_server
            finally:
                tasks.cancel_scope.cancel()
    finally:
        with anyio.CancelScope(shield=True):
            await _stop(process)
            for stream in (from_server, to_server, to_session, from_session):
                await stream.aclose()


async def _read_server(process: anyio.abc.Process, out: Any) -> None:
    assert process.stdout is not None
    pending: list[bytes] = []
    size = 0
    try:
        async for chunk in process.stdout:
            start = 0
            while (end := chunk.find(b"\n", start)) >= 0:
                pending.append(chunk[start:end])
                line = b"".join(pending)
                pending.clear()
                size = 0
                start = end + 1
                if line.strip():
                    await out.send(_parse(line))
            if start < len(chunk):
                pending.append(chunk[start:])
                size += len(chunk) - start
                if size > MAX_MESSAGE:  # refuse, don't buffer without bound
                    pending.clear()
                    size = 0
                    await out.send(ValueError(f"the server sent a message longer than {MAX_MESSAGE} bytes"))
    except (anyio.ClosedResourceError, anyio.BrokenResourceError, anyio.EndOfStream):
        pass
    finally:
        await out.aclose()  # end of the server's output: the session sees the connection close


def _parse(line: bytes) -> SessionMessage | Exception:
    # One invalid UTF-8 byte must not end the connection: it is replaced, and the message still parsed.
    try:
        return SessionMessage(types.jsonrpc_message_adapter.validate_json(line.decode("utf-8", "replace"), by_name=False))
    except ValueError as exc:
        return exc


async def _write_server(process: anyio.abc.Process, messages: Any, readers: Any) -> None:
    assert process.stdin is not None
    try:
        async with messages:
            async for message in messages:
                data = message.message.model_dump_json(by_alias=True, exclude_unset=True)
                await process.stdin.send(data.encode("utf-8") + b"\n")
    except (anyio.ClosedResourceError, anyio.BrokenResourceError, OSError):
        await readers.aclose()  # the server is gone: let the session notice


async def _stop(process: anyio.abc.Process) -> None:
    """The MCP shutdown sequence: close stdin, give the server a moment, then end its whole process group."""
    with suppress(OSError, anyio.BrokenResourceError, anyio.ClosedResourceError):
        if process.stdin is not None:
            await process.stdin.aclose()
    with anyio.move_on_after(STOP_GRACE):
        while process.returncode is None:
            await anyio.sleep(0.01)
    if process.returncode is None or _group_alive(process.pid):
        await terminate_posix_process_tree(process, STOP_GRACE)
    with suppress(OSError, anyio.BrokenResourceError, anyio.ClosedResourceError):
        await process.aclose()


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
