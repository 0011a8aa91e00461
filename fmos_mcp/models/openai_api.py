"""The VFM's OpenAI-compatible face on the HTTP transport: `/v1/chat/completions` and `/v1/models`.

A chat completion is the `vfm_generate` tool called through the tenant's pipeline, so non-MCP applications
get the same routing, reasoning levels, budgets, traps and traces as MCP hosts. Only non-streaming requests.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import Callable
from typing import Any

import mcp_types as types
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import ASGIApp

from fmos_mcp.gateway.own import OWN_SERVER
from fmos_mcp.gateway.pool import PoolKey
from fmos_mcp.gateway.upstream import IDENTITY_SCOPE_KEY, Identity
from fmos_mcp.traps.request import HostCapabilities, HostInfo, MediatedRequest

MODEL_META = "fmos/model"
DECISION_META = "fmos/decision"
VFM_MODEL = "vfm"  # "let the gateway route"
MAX_BODY = 4 << 20
_ROLES = {"system", "user", "assistant", "developer", "tool"}


class BadRequest(ValueError):
    pass


def openai_routes(gateway: Any, guard: Callable[[ASGIApp, str], ASGIApp], models: Callable[[], list[str]]) -> list[Route]:
    async def list_models(request: Request) -> JSONResponse:
        now = int(time.time())
        data = [{"id": name, "object": "model", "created": now, "owned_by": "fmos-mcp"} for name in [VFM_MODEL, *models()]]
        return JSONResponse({"object": "list", "data": data})

    async def chat(request: Request) -> JSONResponse:
        try:
            body = await _body(request)
            arguments = to_vfm_arguments(body)
        except BadRequest as exc:
            return _error(400, str(exc), "invalid_request_error")
        identity: Identity = request.scope.get(IDENTITY_SCOPE_KEY) or gateway.face.default_identity
        pool = await gateway.pool_for(PoolKey(identity.tenant, HostCapabilities()))
        result = await pool.pipeline(_vfm_call(identity, arguments, request, pool))
        return _completion(result, body)

    return [
        Route("/v1/models", endpoint=_asgi(guard, list_models), methods=["GET"]),
        Route("/v1/chat/completions", endpoint=_asgi(guard, chat), methods=["POST"]),
    ]


def _asgi(guard: Callable[[ASGIApp, str], ASGIApp], handler: Callable[[Request], Any]) -> ASGIApp:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        response = await handler(Request(scope, receive))
        await response(scope, receive, send)

    return guard(app, "openai")


async def _body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if len(raw) > MAX_BODY:
        raise BadRequest(f"the request body is larger than {MAX_BODY} bytes")
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadRequest(f"the body is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    return body


def to_vfm_arguments(body: dict[str, Any]) -> dict[str, Any]:
    """Chat completion parameters as `vfm_generate` arguments; errors name the field."""
    if body.get("stream"):
        raise BadRequest("'stream': streaming is not supported; send stream: false")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("'messages' must be a non-empty list")
    system, turns = [], []
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in _ROLES:
            raise BadRequest(f"'messages[{index}].role' must be one of {sorted(_ROLES)}")
        text = _text(message.get("content"), f"messages[{index}].content")
        if message["role"] in ("system", "developer"):
            system.append(text)
        else:
            turns.append({"role": "assistant" if message["role"] == "assistant" else "user", "content": text})
    if not turns:
        raise BadRequest("'messages' needs at least one user message")
    arguments: dict[str, Any] = {"messages": turns}
    if system:
        arguments["system"] = "\n\n".join(system)
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    if max_tokens is not None:
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
            raise BadRequest("'max_tokens' must be a positive integer")
        arguments["max_tokens"] = max_tokens
    effort = body.get("reasoning_effort")
    if effort is not None:
        level = {"minimal": "off", "none": "off"}.get(effort, effort)
        if level not in ("off", "low", "medium", "high"):
            raise BadRequest("'reasoning_effort' must be none, minimal, low, medium or high")
        arguments["reasoning_level"] = level
    for key in ("temperature",):
        if key in body:
            arguments[key] = body[key]
    model = body.get("model")
    if isinstance(model, str) and model and model != VFM_MODEL:
        arguments["model"] = model
    metadata = body.get("metadata")
    if isinstance(metadata, dict) and isinstance(metadata.get("task"), str):
        arguments["task"] = metadata["task"]
    return arguments


def _text(content: Any, where: str) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [p.get("text") for p in content if isinstance(p, dict) and p.get("type") == "text"]
        if all(isinstance(p, str) for p in parts) and parts:
            return "\n".join(parts)
    raise BadRequest(f"'{where}' must be a string or a list of text parts")


def _vfm_call(identity: Identity, arguments: dict[str, Any], request: Request, pool: Any) -> MediatedRequest:
    client = request.headers.get("user-agent", "openai-client")
    session = "oa-" + hashlib.sha256(f"{identity.tenant}\0{client}".encode()).hexdigest()[:12]
    host = HostInfo(session_id=session, tenant=identity.tenant, transport="openai", era="openai-v1",
                    capabilities=HostCapabilities(), roles=identity.roles, client_name=client)
    return MediatedRequest(
        method="tools/call", host=host, server=OWN_SERVER, name="vfm_generate", target="vfm_generate",
        arguments=arguments, params=types.CallToolRequestParams(name="vfm_generate", arguments=arguments), pool=pool,
    )


def _completion(result: types.CallToolResult, body: dict[str, Any]) -> JSONResponse:
    meta = result.meta or {}
    text = "".join(getattr(block, "text", "") for block in result.content)
    if result.is_error:
        decision = meta.get(DECISION_META) or {}
        trap = decision.get("trap")
        status = 429 if trap == "budget" else 403 if trap == "trust" else 502
        code = {"budget": "budget_exceeded", "trust": "policy_denied"}.get(trap or "", "model_error")
        return _error(status, text, code, decision or None)
    served = meta.get(MODEL_META) or {}
    usage = served.get("usage") or {}
    prompt, completion = int(usage.get("input_tokens", 0)), int(usage.get("output_tokens", 0))
    return JSONResponse({
        "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": served.get("model") or body.get("model") or VFM_MODEL,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                     "finish_reason": served.get("finish_reason") or "stop"}],
        "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion},
        "fmos": served,
    })


def _error(status: int, message: str, code: str, decision: dict[str, Any] | None = None) -> JSONResponse:
    error: dict[str, Any] = {"message": message, "type": "invalid_request_error" if status == 400 else code, "code": code}
    if decision:
        error["fmos_decision"] = decision
    return JSONResponse({"error": error}, status_code=status)
