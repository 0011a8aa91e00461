"""Fixtures for the model plane: a real local model (SmolLM2-135M-Instruct via xllamacpp) and a scripted
OpenAI-compatible endpoint (a real HTTP server on a real port that answers what a test tells it to)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from fmos_mcp.models.localmodel import LocalModelServer


@pytest.fixture(scope="session")
def local_model() -> Iterator[str]:
    """The base URL (…/v1) of SmolLM2 on a free localhost port, shared by the whole session (~1-2 s to start)."""
    with LocalModelServer(ctx=2048) as server:
        yield server.base_url


def completion(text: str = "hello", *, prompt_tokens: int = 7, completion_tokens: int = 2,
               finish_reason: str = "stop", model: str = "scripted-model") -> dict[str, Any]:
    return {
        "id": "chatcmpl-test", "object": "chat.completion", "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish_reason}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens},
    }


@dataclass
class Reply:
    status: int = 200
    body: Any = field(default_factory=completion)  # a dict is sent as JSON; "{auth}" in a str is the Authorization
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


@dataclass
class ScriptedEndpoint:
    """Answers POSTs with `replies` in order (the last one repeats) and keeps what it received."""

    replies: list[Reply]
    received: list[dict[str, Any]] = field(default_factory=list)
    port: int = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def next_reply(self) -> Reply:
        index = min(len(self.received) - 1, len(self.replies) - 1)
        return self.replies[index]


def _handler(endpoint: ScriptedEndpoint) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - the http.server naming
            length = int(self.headers.get("content-length", 0))
            body = json.loads(self.rfile.read(length) or b"{}")
            endpoint.received.append({"path": self.path, "headers": dict(self.headers), "json": body})
            reply = endpoint.next_reply()
            time.sleep(reply.delay)
            payload = reply.body if isinstance(reply.body, str) else json.dumps(reply.body)
            data = payload.replace("{auth}", self.headers.get("authorization", "")).encode()
            try:
                self.send_response(reply.status)
                for name, value in {"content-type": "application/json", **reply.headers}.items():
                    self.send_header(name, value)
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (a timeout test)

        def log_message(self, *args: Any) -> None:
            pass

    return Handler


@pytest.fixture
def scripted() -> Iterator[Any]:
    """`scripted(Reply(...), ...)` starts an endpoint; all are stopped after the test."""
    servers: list[ThreadingHTTPServer] = []

    def start(*replies: Reply) -> ScriptedEndpoint:
        endpoint = ScriptedEndpoint(list(replies) or [Reply()])
        server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(endpoint))
        server.daemon_threads = True
        endpoint.port = server.server_address[1]
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        servers.append(server)
        return endpoint

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()
