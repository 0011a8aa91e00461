"""A deliberately misbehaving MCP server (handshake era, raw JSON-RPC over stdio).

This is the one fake among the test peers: it injects faults that real servers cannot produce on demand,
so the tests can show the gateway survives them. Written without the SDK so it can send what the SDK
would refuse to send.

Options: --tools N (tool count, listed in pages of 100), --slow-start S (seconds before answering),
--name NAME.
Tools: ok, crash (exits mid-call), freeze (stops the whole process), hang (never answers that call),
malformed (result of the wrong shape), bad_structured (violates its own output schema), bad_utf8 (invalid
bytes on the wire), grow (adds a tool and sends list_changed), echo_meta (returns the request's _meta),
sample_with_progress (asks the client to sample with a progress token, returns the progress it received),
huge (one text block of `mb` megabytes, in one line of JSON).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time

parser = argparse.ArgumentParser()
parser.add_argument("--tools", type=int, default=0)
parser.add_argument("--slow-start", type=float, default=0.0)
parser.add_argument("--name", default="faulty")
opts = parser.parse_args()

OBJECT = {"type": "object"}
TOOLS = [{"name": n, "description": f"fault: {n}", "inputSchema": OBJECT} for n in (
    "ok", "crash", "freeze", "hang", "malformed", "bad_utf8", "grow", "echo_meta", "sample_with_progress", "huge",
)]
TOOLS.append({
    "name": "bad_structured", "description": "violates its output schema", "inputSchema": OBJECT,
    "outputSchema": {"type": "object", "properties": {"count": {"type": "integer"}}, "required": ["count"]},
})
TOOLS += [{"name": f"bulk_{i:04d}", "description": f"bulk tool number {i}", "inputSchema": OBJECT} for i in range(opts.tools)]
PAGE = 100
out_lock = threading.Lock()
WAITING: dict[str, object] = {}  # our request id -> the tools/call id waiting for its answer
PROGRESS: list[dict] = []  # progress the client reported on our requests


def send(message: dict) -> None:
    write(json.dumps(message).encode() + b"\n")


def write(data: bytes) -> None:
    with out_lock:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()


def result(msg_id, value: dict) -> None:
    send({"jsonrpc": "2.0", "id": msg_id, "result": value})


def text(value: str) -> dict:
    return {"content": [{"type": "text", "text": value}]}


def call(msg_id, params: dict) -> None:
    name = params.get("name")
    if name == "ok":
        result(msg_id, text(f"ok from {opts.name}"))
    elif name == "crash":
        sys.stderr.write("fault_server: crashing on purpose\n")
        sys.stderr.flush()
        os._exit(3)
    elif name == "freeze":
        os.kill(os.getpid(), signal.SIGSTOP)
    elif name == "hang":
        return  # never answer this call; the server itself stays responsive
    elif name == "malformed":
        result(msg_id, {"content": "this should be a list"})
    elif name == "bad_structured":
        result(msg_id, {"content": [{"type": "text", "text": "{}"}], "structuredContent": {"count": "many"}})
    elif name == "bad_utf8":
        write(b'{"jsonrpc": "2.0", "id": ' + json.dumps(msg_id).encode()
              + b', "result": {"content": [{"type": "text", "text": "broken \xff\xfe bytes"}]}}\n')
    elif name == "grow":
        TOOLS.append({"name": f"grown_{len(TOOLS)}", "description": "added at run time", "inputSchema": OBJECT})
        result(msg_id, text("grown"))
        send({"jsonrpc": "2.0", "method": "notifications/tools/list_changed"})
    elif name == "huge":
        size = int((params.get("arguments") or {}).get("mb", 20)) * 1024 * 1024
        body = ("0123456789abcdef" * (size // 16 + 1))[:size]
        result(msg_id, text("BEGIN" + body + "END"))
    elif name == "echo_meta":
        result(msg_id, text(json.dumps(params.get("_meta") or {})))
    elif name == "sample_with_progress":
        WAITING["sample-1"] = msg_id
        send({"jsonrpc": "2.0", "id": "sample-1", "method": "sampling/createMessage", "params": {
            "messages": [{"role": "user", "content": {"type": "text", "text": "think slowly"}}],
            "maxTokens": 10, "_meta": {"progressToken": "fault-progress"},
        }})
    else:
        send({"jsonrpc": "2.0", "id": msg_id, "error": {"code": -32602, "message": f"Unknown tool: {name}"}})


def handle(message: dict) -> None:
    method, msg_id, params = message.get("method"), message.get("id"), message.get("params") or {}
    if method is None and msg_id in WAITING:  # the answer to our sampling request
        answer = message.get("result") or message.get("error")
        result(WAITING.pop(msg_id), text(json.dumps({"answer": answer, "progress": PROGRESS})))
        return
    if method == "notifications/progress":
        PROGRESS.append(params)
    if msg_id is None:
        return  # notifications (initialized, cancelled, progress) need no answer
    if method == "initialize":
        result(msg_id, {
            "protocolVersion": "2025-06-18",
            "capabilities": {"tools": {"listChanged": True}},
            "serverInfo": {"name": opts.name, "version": "0.0.1"},
        })
    elif method == "tools/list":
        start = int(params.get("cursor") or 0)
        page = {"tools": TOOLS[start : start + PAGE]}
        if start + PAGE < len(TOOLS):
            page["nextCursor"] = str(start + PAGE)
        result(msg_id, page)
    elif method == "tools/call":
        call(msg_id, params)
    elif method == "ping":
        result(msg_id, {})
    else:
        send({"jsonrpc": "2.0", "id": msg_id, "error": {"code": -32601, "message": f"Method not found: {method}"}})


def main() -> None:
    if opts.slow_start:
        time.sleep(opts.slow_start)
    for line in sys.stdin.buffer:
        if line.strip():
            handle(json.loads(line))


if __name__ == "__main__":
    main()
