"""The model plane assembled: which physical model serves a generation, at what reasoning level, within which
budget (paper: the Composition Optimizer and its reasoning knob).

One path for every face (`vfm_generate`, a downstream's sampling request, `/v1/chat/completions`):
route -> budget check (deny, or degrade to a cheaper model / lower level) -> the backend chain -> settle the
budget with the backend's own usage -> a routing record on the request's trail (what a learned router needs).
`set_learned` swaps in the route table learned from those records (`fmos_mcp.evolve.routes`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc

from fmos_mcp import logs
from fmos_mcp.models.backends import BackendError, FallbackChain, Generation, GenerationRequest, build_all, estimate_tokens
from fmos_mcp.models.budget_config import BudgetConfig
from fmos_mcp.models.budgets import BudgetBook, BudgetVerdict, Charge, Usage
from fmos_mcp.models.config import ModelsConfig
from fmos_mcp.models.reasoning import ReasoningSetting
from fmos_mcp.models.routing import Features, RouteDecision, Router, RoutingError, record
from fmos_mcp.state.db import StateDB
from fmos_mcp.traps.request import MediatedRequest
from fmos_mcp.traps.trap import TrapKind, TrapRecord

if TYPE_CHECKING:
    from fmos_mcp.evolve.routes import RouteTable

log = logs.get("fmos.models")
# Chat templates wrap every prompt (role markers, a default system text): what characters / 4 misses. An
# estimate below the real input lets concurrent requests overshoot a budget, so reserve on the high side.
TEMPLATE_TOKENS, MESSAGE_TOKENS = 32, 4


class BudgetRefused(Exception):
    def __init__(self, verdict: BudgetVerdict) -> None:
        super().__init__(verdict.reason)
        self.verdict = verdict


@dataclass
class Served:
    generation: Generation
    decision: RouteDecision
    cost: float
    degraded: dict[str, Any] | None = None

    def meta(self) -> dict[str, Any]:
        """`_meta["fmos/model"]`: which model served it, at what level, and what it cost."""
        g = self.generation
        out = {"model": g.model, "backend": g.backend, "rule": self.decision.rule,
               "reasoning": self.decision.reasoning.label(), "reasoning_applied": g.reasoning_applied,
               "usage": {"input_tokens": g.usage.input_tokens, "output_tokens": g.usage.output_tokens,
                         "estimated": g.usage.estimated},
               "cost_usd": round(self.cost, 8), "latency_ms": round(g.latency_ms, 2), "finish_reason": g.finish_reason}
        if self.decision.explored:
            out["explored"] = True
        if g.failed:
            out["failed"] = list(g.failed)
        if self.degraded:
            out["degraded"] = self.degraded
        return out


class ModelPlane:
    def __init__(self, config: ModelsConfig, budgets: BudgetBook, backends: dict[str, Any] | None = None) -> None:
        self.config = config
        self.router = Router(config)
        self.backends = backends if backends is not None else build_all(config)
        self.budgets = budgets

    @classmethod
    def build(cls, models: dict | None, budgets: dict | None, db: StateDB | None) -> ModelPlane:
        try:
            config = ModelsConfig.from_section(models)
        except ValueError as exc:
            log.error("models section unusable; only the host's model is available", detail=str(exc))
            config = ModelsConfig.from_section(None)
        return cls(config, BudgetBook(db, BudgetConfig.from_section(budgets)))

    @property
    def serves_sampling(self) -> bool:
        """Whether a configured model can answer a downstream's sampling when the host cannot."""
        return any(spec.kind != "host" for spec in self.config.backends.values())

    def model_names(self) -> list[str]:
        """Models an OpenAI-compatible client may name: not the host's (that face has no MCP session)."""
        return [name for name, spec in self.config.backends.items() if spec.kind != "host"]

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        await self.budgets.run(task_status=task_status)

    def set_learned(self, table: RouteTable | None) -> None:
        """Route by a learned table from now on (None: by the operator's rules alone). One assignment: a request
        being routed sees the old table or the new one, never a mix."""
        self.router.learned = table
        log.info("learned routes", tasks=sorted(table.tasks) if table is not None else [])

    # ----------------------------------------------------------------- the one path

    def route(self, features: Features) -> RouteDecision:
        return self.router.choose(features)

    def admit(self, tenant: str, server: str | None, decision: RouteDecision,
              request: GenerationRequest) -> tuple[RouteDecision, BudgetVerdict, dict[str, Any] | None]:
        """The budget check; a degrade verdict turns the decision into the cheaper one, checked again."""
        estimate = Usage(tokens_in=input_estimate(request), tokens_out=request.max_tokens, requests=1)
        verdict = self.budgets.check(Charge(tenant, estimate, server=server, model=decision.model))
        if verdict.action == "deny":
            raise BudgetRefused(verdict)
        if verdict.action != "degrade" or verdict.degrade is None:
            return decision, verdict, None
        target = verdict.degrade
        model = target.model or decision.model
        if model not in self.backends:
            raise BudgetRefused(replace(verdict, action="deny", reason=f"{verdict.reason}; degrade model '{model}' is not configured"))
        reasoning = ReasoningSetting.parse(target.reasoning) if target.reasoning is not None else decision.reasoning
        cheaper = RouteDecision(model, (model,), reasoning, f"budget:{verdict.budget}", verdict.reason)
        again = self.budgets.check(Charge(tenant, estimate, server=server, model=model, degraded=True))
        if not again.allowed:
            raise BudgetRefused(replace(again, action="deny"))
        return cheaper, again, {"budget": verdict.budget, "reason": verdict.reason, "from": decision.model}

    async def generate(self, request: GenerationRequest, features: Features, trail: list[TrapRecord] | None = None,
                       *, channel: Any = None, decision: RouteDecision | None = None) -> Served:
        """`decision`: a route the caller already took (routing twice would spend a learned table's
        exploration twice)."""
        started = time.perf_counter()
        try:
            decision = decision or self.route(features)
            decision, verdict, degraded = self.admit(features.tenant, features.server, decision, request)
        except (RoutingError, BudgetRefused) as exc:
            self._trail(trail, record(features, None, error=str(exc), latency_ms=_ms(started)), exc)
            raise
        chain = FallbackChain([self.backends[name] for name in decision.chain])
        try:
            generation = await chain.generate(replace(request, reasoning=decision.reasoning), channel=channel)
        except BaseException as exc:
            self.budgets.release(verdict)
            if isinstance(exc, BackendError):
                self._trail(trail, record(features, decision, error=str(exc), latency_ms=_ms(started)), exc)
            raise
        usage = generation.usage
        self.budgets.commit(verdict, Usage(tokens_in=usage.input_tokens, tokens_out=usage.output_tokens, requests=1))
        cost = chain.cost(generation)
        row = record(features, decision, generation, cost=cost)
        if degraded:
            row["degraded"] = degraded
        self._trail(trail, row, None)
        return Served(generation, decision, cost, degraded)

    @staticmethod
    def _trail(trail: list[TrapRecord] | None, row: dict[str, Any], error: BaseException | None) -> None:
        if trail is None:
            return
        if isinstance(error, BudgetRefused):
            trap = error.verdict.trap()
            if trap is not None:
                trail.append(trap)
        decision = "error" if error else ("degrade" if row.get("degraded") else "route")
        trail.append(TrapRecord(TrapKind.MODEL, "models", decision, str(error or ""), row))


def features_of(request: MediatedRequest, generation: GenerationRequest, *, task: str | None = None,
                server: str | None = None) -> Features:
    return Features.of(generation, tenant=request.host.tenant, server=server, task=task,
                       host_has_sampling=request.host.capabilities.sampling)


def input_estimate(request: GenerationRequest) -> int:
    return estimate_tokens(request.chars()) + TEMPLATE_TOKENS + MESSAGE_TOKENS * len(request.messages)


def _ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000
