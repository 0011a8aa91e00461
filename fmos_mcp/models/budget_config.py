"""The `budgets` policy section: what a tenant, a server or a model may spend, per window.

```yaml
budgets:
  limits:                      # a list: later policy files add to it (a later id replaces an earlier one)
    - id: tenant-daily-tokens
      resource: tokens         # tokens_in | tokens_out | tokens | requests | tool_calls | bytes | judge_calls
      limit: 200000
      window: 1d               # s, m (minutes), h, d, or a number of seconds; fixed windows aligned to UTC
      per: tenant              # tenant | server | model | tenant_server | tenant_model | shared
      scope: {models: ["!local"]}   # tenants, servers, models: globs, !glob excludes; absent: everything
      on_exceed: degrade       # deny (default) | degrade
      degrade: {model: local, reasoning: "off"}
  pricing:                     # shared budgets only (per: shared): dual ascent (paper, appendix B.3)
    step: 0.5                  # eta, the step size of the price update
    interval: 1s               # how often prices move; default: the window / 60, between 1 s and 60 s
  weights: {"team-a": 2}       # what one request of a tenant is worth when prices bite (glob -> weight, default 1)
```

`limits` add up across policy files; `pricing` and `weights` merge key by key (a later file wins).
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from typing import Any

from fmos_mcp.durations import duration, duration_text as window_text

RESOURCES = ("tokens_in", "tokens_out", "tokens", "requests", "tool_calls", "bytes", "judge_calls")
# Resources a model call spends: only these can be degraded to a cheaper model or a lower reasoning level.
DEGRADABLE = frozenset({"tokens_in", "tokens_out", "tokens", "requests", "judge_calls"})
PERS = ("tenant", "server", "model", "tenant_server", "tenant_model", "shared")
# Which fields of a charge key a budget's counter; `shared` is one counter for the whole scope, priced.
PER_FIELDS: dict[str, tuple[str, ...]] = {
    "tenant": ("tenant",), "server": ("server",), "model": ("model",), "tenant_server": ("tenant", "server"),
    "tenant_model": ("tenant", "model"), "shared": (),
}
REASONING = ("off", "low", "medium")
_GLOBS = {"oneOf": [{"type": "string", "minLength": 1},
                    {"type": "array", "minItems": 1, "items": {"type": "string", "minLength": 1}}]}
_DURATION_SCHEMA = {"type": ["string", "number"],
                    "description": "seconds, or a number with a unit: s, m (minutes), h, d; e.g. 1m, 1h, 1d, 30d"}

_BUDGET: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["id", "resource", "limit", "window"],
    "properties": {
        "id": {"type": "string", "pattern": "^[A-Za-z0-9._-]{1,64}$", "description": "unique name of the budget"},
        "description": {"type": "string"},
        "resource": {"enum": list(RESOURCES), "description": "what is counted; tokens is tokens_in + tokens_out"},
        "limit": {"type": "number", "exclusiveMinimum": 0, "description": "the most that may be spent per window"},
        "window": {**_DURATION_SCHEMA, "description": "fixed window, aligned to the UTC epoch: "
                   + _DURATION_SCHEMA["description"]},
        "per": {"enum": list(PERS), "description": "one counter per tenant, server, model or pair of them; "
                "shared: one counter for the whole scope, admitted by price (default tenant)"},
        "scope": {
            "type": "object",
            "additionalProperties": False,
            "description": "which requests the budget counts: globs, `!glob` excludes; an absent key matches "
                           "everything, a present one needs the request to have that field (tool calls have no model)",
            "properties": {"tenants": _GLOBS, "servers": _GLOBS, "models": _GLOBS},
        },
        "on_exceed": {"enum": ["deny", "degrade"], "description": "what a request that would cross it gets"},
        "degrade": {
            "type": "object",
            "additionalProperties": False,
            "description": "the cheaper call a model request is turned into (on_exceed: degrade)",
            "properties": {
                "model": {"type": "string", "minLength": 1, "description": "a model name from the models section"},
                "reasoning": {"enum": [*REASONING, False],
                              "description": "a lower reasoning level (YAML reads a bare off as false: same thing)"},
            },
        },
    },
}

SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "Budgets per tenant, server and model, and shared budgets priced by dual ascent.",
    "additionalProperties": False,
    "properties": {
        "limits": {"type": "array", "items": _BUDGET},
        "pricing": {
            "type": "object",
            "additionalProperties": False,
            "description": "prices of shared budgets (per: shared), moved by demand (paper, appendix B.3)",
            "properties": {
                "step": {"type": "number", "exclusiveMinimum": 0, "maximum": 100,
                         "description": "eta: how far a price moves per interval for a given excess of demand"},
                "interval": {**_DURATION_SCHEMA, "description": "how often prices move: " + _DURATION_SCHEMA["description"]},
            },
        },
        "weights": {"type": "object", "additionalProperties": {"type": "number", "exclusiveMinimum": 0},
                    "description": "tenant glob -> what one request is worth (default 1): a request to a shared "
                                   "budget runs while weight >= price x cost, its cost in units of the even pace"},
    },
}


@dataclass(frozen=True)
class Degrade:
    model: str | None = None
    reasoning: str | None = None

    def as_json(self) -> dict[str, str]:
        return {k: v for k, v in (("model", self.model), ("reasoning", self.reasoning)) if v}


@dataclass(frozen=True)
class Budget:
    id: str
    resource: str
    limit: float
    window: float  # seconds
    per: str = "tenant"
    tenants: tuple[str, ...] = ()
    servers: tuple[str, ...] = ()
    models: tuple[str, ...] = ()
    on_exceed: str = "deny"
    degrade: Degrade | None = None
    description: str = ""

    @property
    def shared(self) -> bool:
        return self.per == "shared"

    def scopes(self, tenant: str, server: str | None, model: str | None) -> bool:
        """Whether a request from `tenant` to `server` (or `model`) counts against this budget."""
        for globs, value in ((self.tenants, tenant), (self.servers, server), (self.models, model)):
            if globs and (value is None or not _globbed(value, globs)):
                return False
        # A counter keyed by the server (or model) needs one: a tool call has no model, a model call no server.
        return all(value is not None for value in _fields(self.per, tenant, server, model))

    def subject(self, tenant: str, server: str | None, model: str | None) -> tuple[str, ...]:
        return tuple(v or "" for v in _fields(self.per, tenant, server, model))


def _globbed(value: str, globs: tuple[str, ...]) -> bool:
    """Matches a glob and no `!glob`; a list of only `!globs` takes everything else."""
    if any(fnmatch.fnmatchcase(value, g[1:]) for g in globs if g.startswith("!")):
        return False
    wanted = [g for g in globs if not g.startswith("!")]
    return not wanted or any(fnmatch.fnmatchcase(value, g) for g in wanted)


def _fields(per: str, tenant: str, server: str | None, model: str | None) -> tuple[str | None, ...]:
    values = {"tenant": tenant, "server": server, "model": model}
    return tuple(values[f] for f in PER_FIELDS[per])


@dataclass(frozen=True)
class Pricing:
    step: float = 0.5
    interval: float | None = None  # None: window / 60, clamped to [1 s, 60 s]
    weights: tuple[tuple[str, float], ...] = ()

    def weight(self, tenant: str) -> float:
        """An exact name wins over globs; among globs, the first listed."""
        for glob, weight in self.weights:
            if glob == tenant:
                return weight
        for glob, weight in self.weights:
            if fnmatch.fnmatchcase(tenant, glob):
                return weight
        return 1.0

    def interval_for(self, window: float) -> float:
        return self.interval if self.interval else min(60.0, max(1.0, window / 60))


@dataclass(frozen=True)
class BudgetConfig:
    budgets: tuple[Budget, ...] = ()
    pricing: Pricing = field(default_factory=Pricing)

    @classmethod
    def from_section(cls, section: dict[str, Any] | None) -> BudgetConfig:
        """Compile a section that passed the schema and `check` (the merged section of all policy files)."""
        section = section or {}
        by_id: dict[str, Budget] = {}
        for item in section.get("limits") or ():
            by_id.pop(item["id"], None)  # a later file's budget of the same id replaces the earlier one
            by_id[item["id"]] = _budget(item)
        pricing = section.get("pricing") or {}
        return cls(tuple(by_id.values()), Pricing(
            step=float(pricing.get("step", 0.5)),
            interval=duration(pricing["interval"]) if "interval" in pricing else None,
            weights=tuple((str(k), float(v)) for k, v in (section.get("weights") or {}).items()),
        ))


def _budget(item: dict[str, Any]) -> Budget:
    scope = item.get("scope") or {}
    degrade = item.get("degrade")
    return Budget(
        id=item["id"], resource=item["resource"], limit=float(item["limit"]), window=duration(item["window"]),
        per=item.get("per", "tenant"), tenants=_globs(scope.get("tenants")), servers=_globs(scope.get("servers")),
        models=_globs(scope.get("models")), on_exceed=item.get("on_exceed", "deny"),
        degrade=Degrade(degrade.get("model"), _level(degrade.get("reasoning"))) if degrade else None,
        description=item.get("description", ""),
    )


def _level(value: str | bool | None) -> str | None:
    return "off" if value is False else value or None


def _globs(value: str | list[str] | None) -> tuple[str, ...]:
    if value is None:
        return ()
    return (value,) if isinstance(value, str) else tuple(value)


def check(section: dict[str, Any]) -> list[tuple[str, str, str]]:
    """What the schema cannot say: duplicate ids, windows, degrade targets, pricing intervals."""
    errors: list[tuple[str, str, str]] = []
    seen: set[str] = set()
    windows: list[float] = []
    for index, item in enumerate(section.get("limits") or ()):
        where = f"budget '{item['id']}'" if item.get("id") else f"budgets.limits[{index}]"
        if item.get("id") in seen:
            errors.append((where, "id", "defined twice in this file"))
        seen.add(item.get("id"))
        errors += [(where, key, message) for key, message in _check_budget(item)]
        if item.get("per") == "shared":
            try:
                windows.append(duration(item["window"]))
            except (ValueError, KeyError):
                pass
    pricing = section.get("pricing") or {}
    if "interval" in pricing:
        try:
            interval = duration(pricing["interval"])
            if windows and interval >= min(windows):
                errors.append(("budgets", "pricing.interval",
                               f"must be shorter than the shortest shared window ({window_text(min(windows))})"))
        except ValueError as exc:
            errors.append(("budgets", "pricing.interval", str(exc)))
    return errors


def _check_budget(item: dict[str, Any]) -> list[tuple[str, str]]:
    errors: list[tuple[str, str]] = []
    try:
        duration(item.get("window", ""))
    except ValueError as exc:
        errors.append(("window", str(exc)))
    degrade, on_exceed, resource = item.get("degrade"), item.get("on_exceed", "deny"), item.get("resource")
    if on_exceed == "degrade":
        if not degrade or not (degrade.get("model") or _level(degrade.get("reasoning"))):
            errors.append(("degrade", "on_exceed: degrade needs a target: degrade.model and/or degrade.reasoning"))
        if resource not in DEGRADABLE:
            errors.append(("on_exceed", f"a {resource} budget can only deny: degrading picks a cheaper model call, "
                                        f"which only {', '.join(sorted(DEGRADABLE))} budgets count"))
    elif degrade:
        errors.append(("degrade", "is set but on_exceed is deny: add on_exceed: degrade or remove it"))
    return errors
