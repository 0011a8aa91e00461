"""Which physical model serves a request: rules first, then MCP model preferences, then the default.

Order of evaluation for one request (its `Features`):

1. The sampling policy of the asking server (`sampling: {SERVER: mode}`, `"*"` for the rest and for the
   gateway's own requests) is a hard constraint: `host` relays to the host and nothing else; `model` never
   uses the host. The host is also left out whenever it has not declared sampling (some clients hang on it).
2. A learned route table (`fmos_mcp.evolve.routes.RouteTable`, swapped in at run time by `set_learned`) with an
   entry for the request's task (None: `default`) picks the backend and the reasoning level, or, within its
   exploration share, tries another arm. The share is a hard cap: since the table was set, explored requests
   of a task never exceed that share of the task's requests. The pick must be a backend the operator's rule
   (3, 4) names for this request, the route's model or its fallbacks; then those follow it in the chain. Rule
   `learned:<task>` or `explore:<task>`; the table's level wins over the route's and the requested one.
3. Routes, in order: the first whose tenants, servers and tasks match picks the model, its fallback list and
   the reasoning level (the route's level wins over the requested one).
4. No route: mode `fallback` uses the host when it has sampling; mode `preferences` scores the backends by
   the request's modelPreferences (hints first, by substring, then cost, speed and intelligence priorities
   against each backend's declared scores); otherwise the `default` backend.
5. The chain is the chosen backend then the fallback list, without backends excluded in 1 and without those
   whose context window is too small for the request (prompt estimated at characters / 4).

`Dispatcher` runs a decision through a `FallbackChain` and hands a record of every request (features,
decision, backend that answered, usage, cost, latency, outcome) to `on_record`: what a learned router needs.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any

from fmos_mcp import logs
from fmos_mcp.models.backends import (
    Backend, BackendError, FallbackChain, Generation, GenerationRequest, Preferences, build_all, estimate_tokens,
)
from fmos_mcp.models.config import BackendSpec, ModelsConfig, RouteSpec
from fmos_mcp.models.reasoning import ReasoningSetting

if TYPE_CHECKING:
    from fmos_mcp.evolve.routes import RouteTable

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
    rule: str  # a route id, or default | preferences | sampling:host | sampling:fallback | learned:T | explore:T
    why: str
    explored: bool = False  # an exploration arm of the learned table, not its chosen one


@dataclass(frozen=True, slots=True)
class Rule:
    """What the operator's configuration says for a request, before a learned table and before dropping
    backends: the backends it names (the first, then its fallbacks), the reasoning level, the rule, why."""

    names: tuple[str, ...]
    reasoning: ReasoningSetting
    rule: str
    why: str


class RoutingError(Exception):
    """No backend may serve this request under the configuration (the message says why)."""


class Router:
    def __init__(self, config: ModelsConfig, learned: RouteTable | None = None,
                 rng: random.Random | None = None) -> None:
        self.config = config
        self.learned = learned
        self.rng = rng or random.Random()

    @property
    def learned(self) -> RouteTable | None:
        return self._learned_state[0]

    @learned.setter
    def learned(self, table: RouteTable | None) -> None:
        # One assignment: a table with fresh counts of (requests, explored) per task for its exploration cap.
        self._learned_state: tuple[RouteTable | None, dict[str, list[int]]] = (table, {})

    def choose(self, features: Features) -> RouteDecision:
        use_host = features.host_has_sampling and self.config.sampling_mode(features.server) != "model"
        rule = self.rule_of(features)
        learned = self._learned(features, rule, use_host) if rule.rule != "sampling:host" else None
        return self._decide(*(learned or (rule, False)), features, use_host)

    def rule_of(self, features: Features) -> Rule:
        """The operator's rule for a request: sampling mode host, then routes, then fallback/preferences/default.
        RoutingError when mode host meets a host without sampling."""
        mode = self.config.sampling_mode(features.server)
        use_host = features.host_has_sampling and mode != "model"
        who = f"server '{features.server}'" if features.server else "the gateway's own requests"
        if mode == "host":
            if not features.host_has_sampling:
                raise RoutingError(f"the sampling policy of {who} is host, and the host offers no sampling")
            return Rule((self.config.host,), features.reasoning, "sampling:host", f"the sampling policy of {who} is host")
        route = next((r for r in self.config.routes if r.matches(features.tenant, features.server, features.task)), None)
        if route is not None:
            return self._routed(route, features)
        if mode == "fallback" and use_host:
            return Rule((self.config.host,), features.reasoning, "sampling:fallback",
                        f"no route matched and the host has sampling (policy of {who}: fallback)")
        if mode == "preferences" and features.preferences is not None:
            best, why = self._preferred(features.preferences, use_host)
            return Rule((best, *self.config.fallback), features.reasoning, "preferences", why)
        return Rule((self.config.default, *self.config.fallback), features.reasoning, "default",
                    f"no route matched (policy of {who}: {mode})")

    def _learned(self, features: Features, rule: Rule, use_host: bool) -> tuple[Rule, bool] | None:
        """The learned table's pick, when it is one of the backends the operator's rule names and may serve
        this request (a host without sampling, a context window too small: the operator's rule then)."""
        table, counts = self._learned_state  # read once: a swap mid-request changes nothing for this one
        task = features.task or "default"
        if table is None or task not in table.tasks:
            return None
        count = counts.setdefault(task, [0, 0])  # requests, explored
        count[0] += 1
        pick = table.pick(task, self.rng, may_explore=count[1] + 1 <= table.tasks[task].explore * count[0])
        if pick is None:
            return None
        backend, reasoning, label, explored = pick
        if backend not in rule.names or self._unusable(backend, features, use_host):
            log.debug("learned pick not usable here", task=task, backend=backend, rule=rule.rule)
            return None
        count[1] += explored
        names = (backend, *(n for n in rule.names if n != backend))
        why = (f"{'exploring' if explored else 'learned for'} task '{task}': {backend} at reasoning "
               f"{reasoning.label()}; the operator's rule '{rule.rule}' names {', '.join(rule.names)}")
        return Rule(names, reasoning, label, why), explored

    def _routed(self, route: RouteSpec, features: Features) -> Rule:
        fallback = route.fallback if route.fallback is not None else self.config.fallback
        reasoning = route.reasoning if route.reasoning.requested else features.reasoning
        origin = "the route" if route.reasoning.requested else "the request"
        return Rule((route.model, *fallback), reasoning, route.id,
                    f"route '{route.id}' matched; reasoning {reasoning.label()} from {origin}")

    def _decide(self, rule: Rule, explored: bool, features: Features, use_host: bool) -> RouteDecision:
        chain, dropped = [], []
        why = rule.why
        for name in dict.fromkeys(rule.names):
            reason = self._unusable(name, features, use_host)
            if reason:
                dropped.append(f"{name} ({reason})")
            else:
                chain.append(name)
        if dropped:
            why += "; left out: " + ", ".join(dropped)
        if not chain:
            raise RoutingError(f"no backend can serve this request: {why}")
        return RouteDecision(chain[0], tuple(chain), rule.reasoning, rule.rule, why, explored)

    def _unusable(self, name: str, features: Features, use_host: bool) -> str | None:
        spec = self.config.backends[name]
        if spec.kind == "host" and not use_host:
            return "no host sampling here"
        if not _fits(spec, features):
            return f"context window {spec.context_window} too small"
        return None

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
        "explored": decision.explored if decision else False,
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
