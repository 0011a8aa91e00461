"""The model plane end to end with a real model: SmolLM2-135M served by llama.cpp (xllamacpp) on localhost,
the gateway in-process or as an HTTP process, real clients, server-everything and the infra example.
The model is weak: these tests assert on structure (non-empty text, usage, which model served), never facts."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import anyio
import httpx2
import mcp_types as types
import pytest

from conftest import (
    PY,
    ROOT,
    HttpGateway,
    RecordingHost,
    eventually,
    everything,
    infra,
    inproc_gateway,
    text_of,
    write_servers,
)


def models_policy(base_url: str, budgets: str = "", sampling: str = "fallback") -> str:
    return f"""
models:
  backends:
    - {{name: local, kind: openai, base_url: "{base_url}", model: SmolLM2-135M-Instruct, knob: none,
       price_in: 0.1, price_out: 0.2, timeout: 60, cost: 0.0, speed: 0.9, intelligence: 0.1}}
    - {{name: big, kind: openai, base_url: "{base_url}", model: SmolLM2-135M-Instruct, knob: thinking_switch,
       price_in: 3, price_out: 15, timeout: 60, cost: 0.9, speed: 0.2, intelligence: 0.9}}
  default: big
  sampling: {{"*": {sampling}}}
  routes:
    - {{id: summaries-local, match: {{tasks: [summarize]}}, model: local, reasoning: "off"}}
{budgets}"""


def setup(tmp_path: Path, servers: dict[str, Any], policy: str) -> tuple[Path, Path]:
    policies = tmp_path / "policies"
    policies.mkdir(exist_ok=True)
    (policies / "models.yaml").write_text(policy)
    return write_servers(tmp_path / "servers.d", servers), policies


async def model_records(app: Any) -> list[dict[str, Any]]:
    """The model plane's routing records on the trace (written in batches: poll)."""
    await anyio.sleep(0.1)
    return [t for row in app.traces.recent(50) for t in (row["traps"] or []) if t.get("kind") == "model"]


def served(result: types.CallToolResult) -> dict[str, Any]:
    assert not result.is_error, text_of(result)
    return (result.meta or {})["fmos/model"]


async def test_vfm_generate_over_mcp_routes_and_accounts(tmp_path: Path, local_model: str) -> None:
    servers, policies = setup(tmp_path, {}, models_policy(local_model))
    async with inproc_gateway(servers, tmp_path / "state", "legacy", policies_dir=policies) as (app, client):
        tools = {t.name for t in (await client.list_tools()).tools}
        assert "vfm_generate" in tools
        result = await client.call_tool("vfm_generate", {"prompt": "Say hello.", "max_tokens": 16,
                                                         "reasoning_level": "high"})
        meta = served(result)
        assert text_of(result).strip() and meta["backend"] == "big" and meta["rule"] == "default"
        assert meta["usage"]["input_tokens"] > 0 and 0 < meta["usage"]["output_tokens"] <= 16
        assert not meta["usage"]["estimated"]
        # Cost follows the backend's own usage report and the declared prices (per 1M tokens).
        expected = (meta["usage"]["input_tokens"] * 3 + meta["usage"]["output_tokens"] * 15) / 1e6
        assert meta["cost_usd"] == pytest.approx(expected, rel=1e-6)
        assert meta["reasoning_applied"].get("applied") is True  # thinking_switch: enable_thinking sent
        # A route by task: summaries go to the local model with reasoning off.
        summary = served(await client.call_tool("vfm_generate", {"prompt": "Summarize: all good.", "max_tokens": 8,
                                                                 "task": "summarize"}))
        assert summary["backend"] == "local" and summary["rule"] == "summaries-local" and summary["reasoning"] == "off"
        # A model hint picks the backend when the preferences mode applies; a bad argument names itself.
        bad = await client.call_tool("vfm_generate", {"messages": [{"role": "system", "content": "x"}]})
        assert bad.is_error and "messages" in text_of(bad)
        # The routing record is on the trace, for the learned router.
        models = await eventually(lambda: model_records(app))
    assert models and {"features", "chosen", "input_tokens", "output_tokens", "cost_usd", "latency_ms"} <= set(models[0]["snapshot"])


@pytest.mark.node
async def test_sampling_of_a_host_without_sampling_is_answered_by_the_local_model(tmp_path: Path, local_model: str) -> None:
    servers, policies = setup(tmp_path, {"everything": everything()}, models_policy(local_model))
    host = RecordingHost()
    callbacks = host.callbacks(sampling=False)
    async with inproc_gateway(servers, tmp_path / "state", "legacy", policies_dir=policies, **callbacks) as (_, client):
        names = {t.name for t in (await client.list_tools()).tools}
        assert "everything__trigger-sampling-request" in names  # offered: the gateway can answer sampling
        result = await client.call_tool("everything__trigger-sampling-request", {"prompt": "Say hi.", "maxTokens": 12})
        text = text_of(result)
        assert not result.is_error and "SmolLM2" in text and '"text"' in text
    assert host.sampled == []


async def test_sampling_mode_model_keeps_requests_off_a_host_that_has_sampling(tmp_path: Path, local_model: str) -> None:
    servers, policies = setup(tmp_path, {"infra": infra()}, models_policy(local_model, sampling="model"))
    host = RecordingHost()
    async with inproc_gateway(servers, tmp_path / "state", "legacy", policies_dir=policies, **host.callbacks()) as (_, client):
        result = await client.call_tool("infra__summarize_incident", {"incident": "disk full on db-1"})
        assert not result.is_error and text_of(result).strip()
    assert host.sampled == []


async def test_budgets_deny_and_degrade(tmp_path: Path, local_model: str) -> None:
    budgets = """
budgets:
  limits:
    - {id: big-tokens, resource: tokens, limit: 260, window: 1h, per: tenant, scope: {models: big},
       on_exceed: degrade, degrade: {model: local, reasoning: "off"}}
    - {id: all-requests, resource: requests, limit: 3, window: 1h, per: tenant}
    - {id: infra-calls, resource: tool_calls, limit: 2, window: 1h, per: tenant_server, scope: {servers: infra}}
"""
    servers, policies = setup(tmp_path, {"infra": infra()}, models_policy(local_model, budgets))
    async with inproc_gateway(servers, tmp_path / "state", "legacy", policies_dir=policies) as (app, client):
        first = served(await client.call_tool("vfm_generate", {"prompt": "One word.", "max_tokens": 200}))
        assert first["backend"] == "big"
        second = served(await client.call_tool("vfm_generate", {"prompt": "One word.", "max_tokens": 200}))
        assert second["backend"] == "local" and second["degraded"]["budget"] == "big-tokens"
        assert second["reasoning"] == "off"
        served(await client.call_tool("vfm_generate", {"prompt": "One word.", "max_tokens": 8}))
        denied = await client.call_tool("vfm_generate", {"prompt": "One word.", "max_tokens": 8})
        decision = (denied.meta or {})["fmos/decision"]
        assert denied.is_error and decision["trap"] == "budget" and decision["rule"] == "budget:all-requests"
        for _ in range(2):
            assert not (await client.call_tool("infra__list_nodes", {})).is_error
        blocked = await client.call_tool("infra__list_nodes", {})
        assert blocked.is_error and (blocked.meta or {})["fmos/decision"]["rule"] == "budget:infra-calls"
        await app.models.budgets.flush()
    # Persisted, and shown by `fmos-mcp budget`.
    run = subprocess.run([PY, "-m", "fmos_mcp", "budget", "--state-dir", str(tmp_path / "state"),
                          "--policies-dir", str(policies), "--json"], capture_output=True, text=True, cwd=ROOT)
    assert run.returncode == 0, run.stderr
    shown = json.loads(run.stdout)
    used = {row["budget"]: row["used"] for row in shown["usage"]}
    assert used["all-requests"] == 3 and used["infra-calls"] == 2


async def test_openai_compatible_face(tmp_path: Path, local_model: str) -> None:
    servers, policies = setup(tmp_path, {}, models_policy(local_model))
    gateway = HttpGateway(servers, tmp_path / "state", "--policies-dir", str(policies), token="secret-token-123")
    try:
        async with httpx2.AsyncClient(base_url=gateway.url, timeout=120) as http:
            assert (await http.get("/v1/models")).status_code == 401
            headers = gateway.headers()
            listed = (await http.get("/v1/models", headers=headers)).json()
            assert {"vfm", "local", "big"} <= {m["id"] for m in listed["data"]}
            body = {"model": "vfm", "messages": [{"role": "system", "content": "Be brief."},
                                                 {"role": "user", "content": "Say hello."}], "max_tokens": 12}
            reply = await http.post("/v1/chat/completions", json=body, headers=headers)
            assert reply.status_code == 200, reply.text
            data = reply.json()
            assert data["object"] == "chat.completion" and data["choices"][0]["message"]["content"].strip()
            assert data["usage"]["completion_tokens"] > 0 and data["fmos"]["backend"] == "big"
            bad = await http.post("/v1/chat/completions", json={"messages": []}, headers=headers)
            assert bad.status_code == 400 and "messages" in bad.json()["error"]["message"]
            stream = await http.post("/v1/chat/completions", json={**body, "stream": True}, headers=headers)
            assert stream.status_code == 400 and "stream" in stream.json()["error"]["message"]
    finally:
        gateway.stop()


async def test_judges_route_to_a_configured_model_and_count_against_budgets(tmp_path: Path, local_model: str) -> None:
    budgets = """
budgets:
  limits:
    - {id: judge-calls, resource: judge_calls, limit: 1, window: 1h, per: tenant}
"""
    policy = models_policy(local_model, budgets).replace(
        "  routes:\n", "  routes:\n    - {id: judges-local, match: {tasks: [judge]}, model: local, reasoning: \"off\"}\n")
    policy += """
judges:
  - {id: drains, policy: "No drains of database nodes.", match: {servers: infra, tools: drain_node}, on_error: deny}
"""
    servers, policies = setup(tmp_path, {"infra": infra()}, policy)
    host = RecordingHost()  # it has sampling, but the route sends judges to the local model
    async with inproc_gateway(servers, tmp_path / "state", "legacy", policies_dir=policies, **host.callbacks()) as (app, client):
        first = await client.call_tool("infra__drain_node", {"name": "web-1", "reason": "kernel update"})
        second = await client.call_tool("infra__drain_node", {"name": "web-2", "reason": "kernel update"})
        judged = [t["snapshot"] for t in await eventually(lambda: model_records(app))]
    assert host.sampled == []  # the judge never asked the host
    assert any(s.get("features", {}).get("task") == "judge" and s.get("chosen") == "local" for s in judged)
    # The first call was judged by the real model (its verdict or, if unreadable, on_error: deny);
    # the second found the judge-call budget spent, so on_error decided without asking any model.
    reason = ((second.meta or {}).get("fmos/decision") or {}).get("reason", "")
    assert second.is_error and "judge-calls" in reason, text_of(second)
    first_reason = ((first.meta or {}).get("fmos/decision") or {}).get("reason", "")
    assert "judge-calls" not in first_reason and "does not offer sampling" not in first_reason
