"""Which physical model serves a request: rules first, then MCP model preferences, then the default.

Order of evaluation for one request (its `Features`):

1. The sampling policy of the asking server (`sampling: {SERVER: mode}`, `"*"` for the rest and for the
   gateway's own requests) is a hard constraint: `host` relays to the host and nothing else; `model` never
   uses the host. The host is also left out whenever it has not declared sampling (some clients hang on it).
2. Routes, in order: the first whose tenants, servers and tasks match picks the model, its fallback list and
   the reasoning level (the route's level wins over the requested one).
3. No route: mode `fallback` uses the host when it has sampling; mode `preferences` scores the backends by
   the request's modelPreferences (hints first, by substring, then cost, speed and intelligence priorities
   against each backend's declared scores); otherwise the `default` backend.
4. The chain is the chosen backend then the fallback list, without backends excluded in 1 and without those
   whose context window is too small for the request (prompt estimated at characters / 4).

`Dispatcher` runs a decision through a `FallbackChain` and hands a record of every request (features,
decision, backend that answered, usage, cost, latency, outcome) to `on_record`: what a learned router needs.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from fmos_mcp import logs
from fmos_mcp.models.backends import (
    Backend, BackendError, FallbackChain, Generation, GenerationRequest, Preferences, build_all, estimate_tokens,
)
from fmos_mcp.models.config import BackendSpec, ModelsConfig, RouteSpec
from fmos_mcp.models.reasoning import ReasoningSetting

log = logs.get("fmos.models")


@dataclass(frozen=True, slots=True)
class Features:
    """What the router knows about a request; also the features a learned router will train on."""

    tenant: str = "default"
    server: str | None = None  # the downstream server asking (sampling), None for the gateway's own requests
    task: str | None = None  # a tag the caller gives: summarize, classify, judge, ...
    preferences: Preferences | None = None
    host_has_sampling: bool = False
    reasoning: ReasoningSetting = field(default_factory=ReasoningSetting)
    input_chars: int = 0
    max_tokens: int | None = None

    @classmethod
    def of(cls, request: GenerationRequest, **known: Any) -> Features:
        """Features of a request; `known` adds tenant, server, task and host_has_sampling."""
        return cls(preferences=request.preferences, reasoning=request.reasoning, input_chars=request.chars(),
                   max_tokens=request.max_tokens, **known)

    def to_record(self) -> dict[str, Any]:
        record = asdict(self)
        record["reasoning"] = self.reasoning.label()
        return record


@dataclass(frozen=True, slots=True)
class RouteDecision:
    model: str  # the backend tried first
    chain: tuple[str, ...]  # every backend to try, in order (starts with `model`)
    reasoning: ReasoningSetting
    rule: str  # a route id, or default | preferences | sampling:host | sampling:fallback
    why: str


class RoutingError(Exception):
    """No backend may serve this request under the configuration (the message says why)."""


class Router:
    def __init__(self, config: ModelsConfig) -> None:
        self.config = config

    def choose(self, features: Features) -> RouteDecision:
        mode = self.config.sampling_mode(features.server)
        use_host = features.host_has_sampling and mode != "model"
        who = f"server '{features.server}'" if features.server else "the gateway's own requests"
        if mode == "host":
            if not features.host_has_sampling:
                raise RoutingError(f"the sampling policy of {who} is host, and the host offers no sampling")
            return self._decide([self.config.host], features.reasoning, "sampling:host",
                                f"the sampling policy of {who} is host", features, use_host)
        route = next((r for r in self.config.routes if r.matches(features.tenant, features.server, features.task)), None)
        if route is not None:
            return self._routed(route, features, use_host)
        if mode == "fallback" and use_host:
            return self._decide([self.config.host], features.reasoning, "sampling:fallback",
                                f"no route matched and the host has sampling (policy of {who}: fallback)",
                                features, use_host)
        if mode == "preferences" and features.preferences is not None:
            best, why = self._preferred(features.preferences, use_host)
            return self._decide([best, *self.config.fallback], features.reasoning, "preferences", why, features,
                                use_host)
        return self._decide([self.config.default, *self.config.fallback], features.reasoning, "default",
                            f"no route matched (policy of {who}: {mode})", features, use_host)

    def _routed(self, route: RouteSpec, features: Features, use_host: bool) -> RouteDecision:
        fallback = route.fallback if route.fallback is not None else self.config.fallback
        reasoning = route.reasoning if route.reasoning.requested else features.reasoning
        origin = "the route" if route.reasoning.requested else "the request"
        return self._decide([route.model, *fallback], reasoning, route.id,
                            f"route '{route.id}' matched; reasoning {reasoning.label()} from {origin}",
                            features, use_host)

    def _decide(self, names: list[str], reasoning: ReasoningSetting, rule: str, why: str, features: Features,
                use_host: bool) -> RouteDecision:
        chain, dropped = [], []
        for name in dict.fromkeys(names):
            spec = self.config.backends[name]
            if spec.kind == "host" and not use_host:
                dropped.append(f"{name} (no host sampling here)")
            elif not _fits(spec, features):
                dropped.append(f"{name} (context window {spec.context_window} too small)")
            else:
                chain.append(name)
        if dropped:
            why += "; left out: " + ", ".join(dropped)
        if not chain:
            raise RoutingError(f"no backend can serve this request: {why}")
        return RouteDecision(chain[0], tuple(chain), reasoning, rule, why)

    def _preferred(self, prefs: Preferences, use_host: bool) -> tuple[str, str]:
        candidates = [s for s in self.config.backends.values() if s.kind != "host" or use_host]
        if not candidates:
            raise RoutingError("no backend to choose from by preferences")
        why = "by modelPreferences"
        for hint in prefs.hints:
            matching = [s for s in candidates if any(hint.lower() in n for n in s.names())]
            if matching:  # MCP: hints come before the numeric priorities, which then break ties
                candidates, why = matching, f"by modelPreferences, hint '{hint}'"
                break
        order = {name: i for i, name in enumerate(self.config.backends)}
        best = max(candidates, key=lambda s: (score(s, prefs), s.name == self.config.default, -order[s.name]))
        return best.name, f"{why} (score {score(best, prefs):.2f})"


def score(spec: BackendSpec, prefs: Preferences) -> float:
    """Sum of priority x fitness: cheap is fit for cost, fast for speed, capable for intelligence."""
    return ((prefs.cost or 0.0) * (1 - spec.cost) + (prefs.speed or 0.0) * spec.speed
            + (prefs.intelligence or 0.0) * spec.intelligence)


def _fits(spec: BackendSpec, features: Features) -> bool:
    if spec.context_window is None:
        return True
    return estimate_tokens(features.input_chars) + (features.max_tokens or 0) <= spec.context_window


# ----------------------------------------------------------------------------- running a decision, recording it


Recorder = Callable[[dict[str, Any]], None]


class Dispatcher:
    """Router + backends: choose, generate through the chain, record. One per configuration."""

    def __init__(self, config: ModelsConfig, backends: Mapping[str, Backend] | None = None,
                 on_record: Recorder | None = None) -> None:
        self.config = config
        self.router = Router(config)
        self.backends = dict(backends) if backends is not None else build_all(config)
        self.on_record = on_record

    async def generate(self, request: GenerationRequest, features: Features, *, channel: Any = None) -> Generation:
        started = time.perf_counter()
        try:
            decision = self.router.choose(features)
        except RoutingError as exc:
            self._record(record(features, None, error=str(exc), latency_ms=_since(started)))
            raise
        chain = FallbackChain([self.backends[name] for name in decision.chain])
        try:
            generation = await chain.generate(replace(request, reasoning=decision.reasoning), channel=channel)
        except BackendError as exc:
            self._record(record(features, decision, error=str(exc), latency_ms=_since(started)))
            raise
        self._record(record(features, decision, generation, cost=chain.cost(generation)))
        return generation

    async def aclose(self) -> None:
        for backend in self.backends.values():
            close = getattr(backend, "aclose", None)
            if close is not None:
                await close()

    def _record(self, row: dict[str, Any]) -> None:
        log.debug("model request", **{k: v for k, v in row.items() if k != "features"})
        if self.on_record is not None:
            self.on_record(row)


def record(features: Features, decision: RouteDecision | None, generation: Generation | None = None, *,
           cost: float | None = None, error: str | None = None, latency_ms: float | None = None) -> dict[str, Any]:
    """One routing record (JSON-ready): features, the decision, and what came of it."""
    row: dict[str, Any] = {
        "ts": time.time(),
        "features": features.to_record(),
        "rule": decision.rule if decision else None,
        "chain": list(decision.chain) if decision else [],
        "chosen": decision.model if decision else None,
        "reasoning": decision.reasoning.label() if decision else features.reasoning.label(),
        "outcome": "error",
        "error": error,
        "latency_ms": latency_ms,
    }
    if generation is not None:
        row.update({
            "outcome": "truncated" if generation.finish_reason == "length" else "ok",
            "backend": generation.backend, "model": generation.model, "failed": list(generation.failed),
            "input_tokens": generation.usage.input_tokens, "output_tokens": generation.usage.output_tokens,
            "usage_estimated": generation.usage.estimated, "cost_usd": cost,
            "latency_ms": generation.latency_ms, "reasoning_applied": generation.reasoning_applied,
        })
    return row


def _since(started: float) -> float:
    return (time.perf_counter() - started) * 1000
