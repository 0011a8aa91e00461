"""The model service: the pipeline's interceptor for generation and budgets.

- a downstream server's `sampling/createMessage` is routed: relayed to the host, or answered by a configured
  model, as the `models` section says; the trust plane has already checked it (it comes earlier);
- `vfm_generate` (the VFM as an MCP tool, and the OpenAI-compatible face) is answered through the model plane;
- every downstream tool call is counted against tool-call and bytes budgets; crossing one is a budget trap.
"""

from __future__ import annotations

from typing import Any

import anyio.to_thread
import mcp_types as types
from mcp.shared.exceptions import MCPError
from mcp_types import INVALID_REQUEST

from fmos_mcp import logs
from fmos_mcp.gateway.own import OWN_SERVER, OwnTool, tool_error
from fmos_mcp.models.backends import BackendError, GenerationRequest, Message, Preferences, estimate_tokens
from fmos_mcp.models.budgets import Charge, Usage
from fmos_mcp.models.plane import BudgetRefused, ModelPlane, features_of
from fmos_mcp.models.reasoning import ReasoningSetting
from fmos_mcp.models.routing import RoutingError
from fmos_mcp.traps.pipeline import CallNext
from fmos_mcp.traps.request import Direction, MediatedRequest
from fmos_mcp.traps.sizes import content_bytes, json_bytes
from fmos_mcp.traps.trap import TrapKind, TrapRecord
from fmos_mcp.trust.decision import DECISION_META
from fmos_mcp.trust.judge import NoJudgeModel, ask_host

log = logs.get("fmos.models")
MODEL_META = "fmos/model"
MAX_TOKENS = 512  # vfm_generate's default answer length
KNOWLEDGE_HITS = 3


class ModelService:
    name = "models"

    def __init__(self, plane: ModelPlane, knowledge: Any = None) -> None:
        self.plane = plane
        self.knowledge = knowledge  # recall(tenant, query, k) -> [{"text": ...}]: the data plane's memory
        # Tool calls are metered only when a budget counts them (sizing a 20 MB result is not free).
        resources = {b.resource for b in plane.budgets.config.budgets}
        self.meter_calls = bool(resources & {"tool_calls", "bytes"})
        self.meter_bytes = "bytes" in resources

    async def __call__(self, request: MediatedRequest, call_next: CallNext) -> Any:
        if request.direction is Direction.TO_HOST:
            if request.method == "sampling/createMessage":
                return await self._sampling(request, call_next)
            return await call_next(request)
        if request.method == "tools/call" and self.meter_calls and request.server and request.server != OWN_SERVER:
            return await self._tool_call(request, call_next)
        return await call_next(request)

    # ----------------------------------------------------------------- downstream sampling

    async def _sampling(self, request: MediatedRequest, call_next: CallNext) -> Any:
        params: types.CreateMessageRequestParams = request.params
        try:
            generation = GenerationRequest.from_sampling(params)
        except ValueError:
            generation = None  # images or tool use in the request: only the host can take it
        features = features_of(request, generation or _text_only(params), server=request.server, task="sampling")
        try:
            decision = self.plane.route(features)
        except RoutingError as exc:
            raise MCPError(code=INVALID_REQUEST, message=str(exc)) from None
        host = self.plane.config.backends[decision.model].kind == "host"
        if host or generation is None:
            return await self._relay(request, call_next, features)
        try:
            served = await self.plane.generate(generation, features, request.trail, channel=request.channel,
                                               decision=decision)
        except BudgetRefused as exc:
            raise MCPError(code=INVALID_REQUEST, message=f"budget: {exc}", data=exc.verdict.meta()) from None
        except (RoutingError, BackendError) as exc:
            raise MCPError(code=INVALID_REQUEST, message=str(exc)) from None
        return served.generation.to_sampling_result()

    async def _relay(self, request: MediatedRequest, call_next: CallNext, features: Any) -> Any:
        """To the host, as before the model plane; counted against budgets with estimated tokens."""
        if not request.host.capabilities.sampling:
            raise MCPError(code=INVALID_REQUEST, message="the host did not declare support for 'sampling/createMessage'")
        params = request.params
        estimate = Usage(tokens_in=estimate_tokens(json_bytes(params.model_dump(mode="json", exclude_none=True))),
                         tokens_out=params.max_tokens, requests=1)
        verdict = self.plane.budgets.check(Charge(request.host.tenant, estimate, server=request.server,
                                                  model=self.plane.config.host))
        if not verdict.allowed:  # degrading a request the host must answer is not possible: deny
            if verdict.trap():
                request.trail.append(verdict.trap())
            raise MCPError(code=INVALID_REQUEST, message=f"budget: {verdict.reason}", data=verdict.meta())
        try:
            result = await call_next(request)
        except BaseException:
            self.plane.budgets.release(verdict)
            raise
        out = estimate_tokens(content_bytes(result))
        self.plane.budgets.commit(verdict, Usage(tokens_in=estimate.tokens_in, tokens_out=out, requests=1))
        request.trail.append(TrapRecord(TrapKind.MODEL, self.name, "relay", "answered by the host",
                                        {"features": features.to_record(), "chosen": self.plane.config.host,
                                         "input_tokens": estimate.tokens_in, "output_tokens": out,
                                         "usage_estimated": True}))
        return result

    # ----------------------------------------------------------------- the trust plane's judges

    async def judge_ask(self, request: MediatedRequest, params: types.CreateMessageRequestParams) -> Any:
        """A judge's model request: counted as a judge call, routed as task `judge` (a route may send judges
        to a configured model; otherwise the host's sampling, as before)."""
        verdict = self.plane.budgets.check(Charge(request.host.tenant, Usage(judge_calls=1)))
        if not verdict.allowed:
            if verdict.trap():
                request.trail.append(verdict.trap())
            raise NoJudgeModel(f"budget '{verdict.budget}' for judge calls is spent: {verdict.reason}")
        generation = GenerationRequest.from_sampling(params)
        features = features_of(request, generation, task="judge")
        try:
            decision = self.plane.route(features)
            if self.plane.config.backends[decision.model].kind == "host":
                result = await ask_host(request, params)
            else:
                result = (await self.plane.generate(generation, features, request.trail, channel=request.channel,
                                                    decision=decision)).generation.to_sampling_result()
        except (RoutingError, BudgetRefused) as exc:
            self.plane.budgets.release(verdict)
            raise NoJudgeModel(str(exc)) from None
        except BaseException:
            self.plane.budgets.release(verdict)
            raise
        self.plane.budgets.commit(verdict)
        return result

    # ----------------------------------------------------------------- tool-call budgets

    async def _tool_call(self, request: MediatedRequest, call_next: CallNext) -> Any:
        sent = json_bytes(dict(request.arguments)) if self.meter_bytes else None
        verdict = self.plane.budgets.check(Charge(request.host.tenant, Usage(tool_calls=1, bytes=sent),
                                                  server=request.server))
        if not verdict.allowed:
            verdict.action = "deny"  # a tool call has no cheaper model to degrade to
            if verdict.trap():
                request.trail.append(verdict.trap())
            return budget_blocked(verdict, request.name or "")
        try:
            result = await call_next(request)
        except BaseException:
            self.plane.budgets.release(verdict)
            raise
        moved = sent + content_bytes(result) if sent is not None else None
        self.plane.budgets.commit(verdict, Usage(tool_calls=1, bytes=moved))
        return result

    # ----------------------------------------------------------------- vfm_generate

    def own_tools(self) -> list[OwnTool]:
        schema = {
            "type": "object",
            "properties": {
                "prompt": {"type": "string", "description": "the request, when there is no conversation"},
                "messages": {"type": "array", "description": "the conversation: [{role: user|assistant, content}]",
                             "items": {"type": "object", "properties": {"role": {"enum": ["user", "assistant"]},
                                                                        "content": {"type": "string"}},
                                       "required": ["role", "content"]}},
                "system": {"type": "string"},
                "reasoning_level": {"enum": ["off", "low", "medium", "high"]},
                "reasoning_tokens": {"type": "integer", "minimum": 0, "description": "a thinking budget instead of a level"},
                "max_tokens": {"type": "integer", "minimum": 1, "maximum": 32768, "default": MAX_TOKENS},
                "temperature": {"type": "number", "minimum": 0, "maximum": 2},
                "model": {"type": "string", "description": "a hint: a model name or part of one"},
                "task": {"type": "string", "description": "what kind of work (summarize, classify, code, ...): routes use it"},
                "knowledge": {"type": "boolean", "description": "add what the gateway remembers about the request"},
            },
            "additionalProperties": False,
        }
        tool = types.Tool(
            name="vfm_generate", title="Generate with the Virtual Foundation Model",
            description="Generate text with the model the gateway routes to (by policy, budget and reasoning level). "
                        "_meta['fmos/model'] says which model served it and what it cost.",
            input_schema=schema,
            annotations=types.ToolAnnotations(read_only_hint=True, destructive_hint=False, open_world_hint=False),
        )
        return [OwnTool(tool, self.generate_tool, meta_tool=True)]

    async def generate_tool(self, request: MediatedRequest, args: dict[str, Any]) -> types.CallToolResult:
        try:
            generation = await self._generation(request, args)
        except ValueError as exc:
            return tool_error(str(exc))
        features = features_of(request, generation, task=args.get("task"))
        try:
            served = await self.plane.generate(generation, features, request.trail, channel=request.channel)
        except BudgetRefused as exc:
            return budget_blocked(exc.verdict, "vfm_generate")
        except (RoutingError, BackendError) as exc:
            return tool_error(f"no model could answer: {exc}")
        return types.CallToolResult(content=[types.TextContent(type="text", text=served.generation.text)],
                                    meta={MODEL_META: served.meta()})

    async def _generation(self, request: MediatedRequest, args: dict[str, Any]) -> GenerationRequest:
        """vfm_generate's arguments as a generation request; a wrong one raises ValueError naming it."""
        messages = args.get("messages")
        if messages is None:
            prompt = args.get("prompt")
            if not isinstance(prompt, str) or not prompt.strip():
                raise ValueError("give 'prompt' (text) or 'messages' ([{role, content}])")
            messages = [{"role": "user", "content": prompt}]
        if not isinstance(messages, list) or not messages or not all(
                isinstance(m, dict) and m.get("role") in ("user", "assistant") and isinstance(m.get("content"), str)
                for m in messages):
            raise ValueError("argument 'messages' must be a non-empty list of {role: user|assistant, content: text}")
        reasoning = ReasoningSetting.parse(args["reasoning_tokens"] if "reasoning_tokens" in args
                                           else args.get("reasoning_level"))
        max_tokens = args.get("max_tokens", MAX_TOKENS)
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
            raise ValueError("argument 'max_tokens' must be a positive integer")
        system = args.get("system")
        if args.get("knowledge") and self.knowledge is not None:
            system = await self._with_knowledge(request, system, messages[-1]["content"])
        hint = args.get("model")
        return GenerationRequest(
            tuple(Message(m["role"], m["content"]) for m in messages), system, max_tokens, args.get("temperature"),
            reasoning, preferences=Preferences(hints=(hint,)) if isinstance(hint, str) and hint else None,
        )

    async def _with_knowledge(self, request: MediatedRequest, system: str | None, query: str) -> str | None:
        found = await anyio.to_thread.run_sync(self.knowledge.recall, request.host.tenant, query, KNOWLEDGE_HITS)
        if not found:
            return system
        notes = "\n".join(f"- {m['text']}" for m in found)
        request.trail.append(TrapRecord(TrapKind.KNOWLEDGE, self.name, "augment", "memory added to the system text",
                                        {"memories": len(found)}))
        return ((system + "\n\n") if system else "") + f"What the gateway remembers that may help:\n{notes}"


def budget_blocked(verdict: Any, tool: str) -> types.CallToolResult:
    text = (f"fmos-mcp refused '{tool}': budget '{verdict.budget}' is spent: {verdict.reason}. "
            "Wait for the budget window to reset or ask the operator to raise it.")
    return types.CallToolResult(content=[types.TextContent(type="text", text=text)], is_error=True,
                                meta={DECISION_META: verdict.meta()})


def _text_only(params: types.CreateMessageRequestParams) -> GenerationRequest:
    """Features of a sampling request we cannot turn into text (its size is all the router needs)."""
    return GenerationRequest((Message("user", "x" * len(params.model_dump_json())),), max_tokens=params.max_tokens)
