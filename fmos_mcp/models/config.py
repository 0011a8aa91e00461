"""The `models` policy section: which physical models exist, who serves what, at which reasoning level.

```yaml
models:
  backends:                     # order matters: ties in preference scoring go to the earlier one
    - name: local
      kind: openai              # any OpenAI-compatible endpoint: vLLM, llama.cpp, Ollama, hosted APIs
      base_url: http://127.0.0.1:8766/v1   # POST {base_url}/chat/completions
      model: SmolLM2-135M-Instruct
      api_key_env: null         # the NAME of the environment variable holding the key, never the key
      timeout: 60               # seconds per attempt
      retries: 2                # extra attempts on connect errors, 429 and 5xx
      knob: none                # reasoning knob: effort | budget_tokens | thinking_switch | prompted | none
      price_in: 0               # USD per 1M input tokens (for cost accounting)
      price_out: 0              # USD per 1M output tokens
      cost: 0.0                 # 0..1 scores for MCP modelPreferences (cost: 1 is the most expensive)
      speed: 0.9
      intelligence: 0.1
      context_window: 2048
      hints: [smollm]           # more names a modelPreferences hint may match (name and model always do)
    - {name: host, kind: host}  # MCP sampling to the connected host; implicit when not declared
  default: local                # serves what no route matches
  fallback: [host]              # tried in order after a route's or the default's model fails
  sampling:                     # who answers a downstream server's sampling request, per server
    "*": fallback               # host (always relay) | model (never the host) | fallback (host when it
    infra: model                #   has sampling, else a model) | preferences (by its modelPreferences)
  routes:                       # first match wins; an empty or absent list in `match` matches anything
    - id: summaries-local
      match: {tenants: ["*"], servers: ["*"], tasks: [summarize]}
      model: local
      reasoning: off            # off | low | medium | high | a token budget; wins over what was asked
      fallback: [host]          # instead of the section's fallback
```

Across policy files `backends`, `fallback` and `routes` add up and `sampling` merges server by server;
`check()` sees one file, so it checks names against that file's backends only when it declares some.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field
from typing import Any

from fmos_mcp.models.reasoning import KNOBS, LEVELS, ReasoningSetting

KINDS = ("openai", "host")
MODES = ("host", "model", "fallback", "preferences")
HOST = "host"  # the implicit host backend's name

_NAME = {"type": "string", "pattern": r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"}
_SCORE = {"type": "number", "minimum": 0, "maximum": 1}
_NAMES = {"type": "array", "items": {"type": "string", "minLength": 1}}
_REASONING = {
    "description": "off | low | medium | high, or an explicit thinking budget in tokens.",
    "anyOf": [{"enum": [*LEVELS, False]}, {"type": "integer", "minimum": 0}],
}

SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "The model plane: backends, routing rules, sampling policy per server, reasoning levels.",
    "additionalProperties": False,
    "properties": {
        "backends": {
            "type": "array",
            "description": "Physical models. kind openai: any OpenAI-compatible endpoint; kind host: MCP sampling.",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["name", "kind"],
                "properties": {
                    "name": {**_NAME, "description": "How routes and fallbacks refer to this backend."},
                    "kind": {"enum": list(KINDS)},
                    "base_url": {"type": "string", "pattern": "^https?://",
                                 "description": "The API root, e.g. http://127.0.0.1:8766/v1 (openai only)."},
                    "model": {"type": "string", "minLength": 1, "description": "The model id sent to the endpoint."},
                    "api_key_env": {"type": ["string", "null"], "minLength": 1,
                                    "description": "Name of the environment variable that holds the API key."},
                    "timeout": {"type": "number", "exclusiveMinimum": 0, "description": "Seconds per attempt."},
                    "retries": {"type": "integer", "minimum": 0, "maximum": 10,
                                "description": "Extra attempts on connect errors, HTTP 429 and 5xx."},
                    "knob": {"enum": list(KNOBS), "description": "How reasoning levels reach this model."},
                    "price_in": {"type": "number", "minimum": 0, "description": "USD per 1M input tokens."},
                    "price_out": {"type": "number", "minimum": 0, "description": "USD per 1M output tokens."},
                    "cost": {**_SCORE, "description": "Relative cost for modelPreferences, 1 the most expensive."},
                    "speed": {**_SCORE, "description": "Relative speed for modelPreferences, 1 the fastest."},
                    "intelligence": {**_SCORE, "description": "Relative capability for modelPreferences."},
                    "context_window": {"type": "integer", "minimum": 1},
                    "hints": {**_NAMES, "description": "Extra names a modelPreferences hint matches by substring."},
                },
            },
        },
        "default": {**_NAME, "description": "The backend that serves what no route matches."},
        "fallback": {**_NAMES, "description": "Backends tried in order when the chosen one fails."},
        "sampling": {
            "type": "object",
            "description": "Per downstream server (\"*\" for the rest): who answers its sampling requests.",
            "additionalProperties": {"enum": list(MODES)},
        },
        "routes": {
            "type": "array",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["id", "model"],
                "properties": {
                    "id": {"type": "string", "minLength": 1},
                    "description": {"type": "string"},
                    "match": {
                        "type": "object",
                        "additionalProperties": False,
                        "description": "Globs; every key given must match, an absent or empty one matches all.",
                        "properties": {"tenants": _NAMES, "servers": _NAMES, "tasks": _NAMES},
                    },
                    "model": {**_NAME, "description": "The backend that serves a matching request."},
                    "reasoning": _REASONING,
                    "fallback": {**_NAMES, "description": "Instead of the section's fallback list."},
                },
            },
        },
    },
}


@dataclass(frozen=True)
class BackendSpec:
    name: str
    kind: str
    base_url: str | None = None
    model: str | None = None
    api_key_env: str | None = None
    timeout: float = 60.0
    retries: int = 2
    knob: str = "none"
    price_in: float = 0.0
    price_out: float = 0.0
    cost: float = 0.5
    speed: float = 0.5
    intelligence: float = 0.5
    context_window: int | None = None
    hints: tuple[str, ...] = ()

    @classmethod
    def of(cls, item: dict[str, Any]) -> BackendSpec:
        values = {k: v for k, v in item.items() if v is not None}
        values["hints"] = tuple(values.get("hints", ()))
        return cls(**values)

    def names(self) -> tuple[str, ...]:
        """What a modelPreferences hint may match: the name, the model id and the declared hints."""
        return tuple(n.lower() for n in (self.name, self.model or "", *self.hints) if n)


@dataclass(frozen=True)
class RouteSpec:
    id: str
    model: str
    tenants: tuple[str, ...] = ()
    servers: tuple[str, ...] = ()
    tasks: tuple[str, ...] = ()
    reasoning: ReasoningSetting = field(default_factory=ReasoningSetting)
    fallback: tuple[str, ...] | None = None

    @classmethod
    def of(cls, item: dict[str, Any]) -> RouteSpec:
        match = item.get("match") or {}
        fallback = item.get("fallback")
        return cls(item["id"], item["model"], tuple(match.get("tenants", ())), tuple(match.get("servers", ())),
                   tuple(match.get("tasks", ())), ReasoningSetting.parse(item.get("reasoning")),
                   tuple(fallback) if fallback is not None else None)

    def matches(self, tenant: str, server: str | None, task: str | None) -> bool:
        # A route that names servers never matches the gateway's own requests (server None); same for tasks.
        return _any(self.tenants, tenant) and _any(self.servers, server) and _any(self.tasks, task)


def _any(globs: tuple[str, ...], value: str | None) -> bool:
    if not globs:
        return True
    return value is not None and any(fnmatch.fnmatchcase(value, glob) for glob in globs)


@dataclass(frozen=True)
class ModelsConfig:
    backends: dict[str, BackendSpec]
    default: str
    fallback: tuple[str, ...] = ()
    sampling: dict[str, str] = field(default_factory=dict)
    routes: tuple[RouteSpec, ...] = ()

    @classmethod
    def from_section(cls, section: dict[str, Any] | None) -> ModelsConfig:
        """Typed configuration from the merged section; ValueError names the key if a name doesn't resolve."""
        section = section or {}
        backends: dict[str, BackendSpec] = {}
        for item in section.get("backends", ()):
            if item["name"] in backends:
                raise ValueError(f"models: backends: '{item['name']}' is defined twice")
            backends[item["name"]] = BackendSpec.of(item)
        if not any(b.kind == "host" for b in backends.values()):
            backends.setdefault(HOST, BackendSpec(HOST, "host"))
        config = cls(backends, section.get("default") or next(iter(backends)),
                     tuple(dict.fromkeys(section.get("fallback", ()))), dict(section.get("sampling") or {}),
                     tuple(RouteSpec.of(r) for r in section.get("routes", ())))
        for where, key, message in _unknown_names(config.default, config.fallback, config.routes, set(backends)):
            raise ValueError(f"{where}: {key}: {message}")
        return config

    @property
    def host(self) -> str:
        return next(name for name, spec in self.backends.items() if spec.kind == "host")

    def sampling_mode(self, server: str | None) -> str:
        if server is not None and server in self.sampling:
            return self.sampling[server]
        return self.sampling.get("*", "fallback")


def check(section: dict[str, Any]) -> list[tuple[str, str, str]]:
    """What the schema can't say: duplicate names, names that resolve to nothing, keys in the wrong place."""
    errors: list[tuple[str, str, str]] = []
    names: list[str] = []
    for item in section.get("backends", ()):
        where = f"models backend '{item['name']}'"
        if item["name"] in names:
            errors.append((where, "name", "defined twice in this file"))
        names.append(item["name"])
        errors += [(where, key, message) for key, message in _backend_errors(item)]
    ids: set[str] = set()
    for route in section.get("routes", ()):
        if route["id"] in ids:
            errors.append((f"models route '{route['id']}'", "id", "defined twice in this file"))
        ids.add(route["id"])
    if names:  # a file without backends names those of another file: from_section checks the merged whole
        known = {*names, *([HOST] if "host" not in {b["kind"] for b in section["backends"]} else [])}
        routes = [RouteSpec.of(r) for r in section.get("routes", ())]
        errors += _unknown_names(section.get("default"), section.get("fallback", ()), routes, known)
    return errors


def _backend_errors(item: dict[str, Any]) -> list[tuple[str, str]]:
    errors = []
    if item["kind"] == "openai":
        for key in ("base_url", "model"):
            if not item.get(key):
                errors.append((key, f"an openai backend needs {key}"))
    else:
        for key in ("base_url", "model", "api_key_env"):
            if item.get(key):
                errors.append((key, "a host backend takes none: the host picks its own model"))
    env = item.get("api_key_env")
    if env and looks_like_key(env):
        # Never echo it: it is probably a real key pasted into a policy file.
        errors.append(("api_key_env", "looks like an API key itself; give the NAME of the environment variable "
                                      "that holds the key (e.g. OPENAI_API_KEY), and rotate the key"))
    return errors


_KEY_PREFIX = re.compile(r"^(sk|pk|rk)[-_]|^gh[pousr]_|^AKIA|^xox[abp]-|^AIza", re.IGNORECASE)


def looks_like_key(value: str) -> bool:
    """Environment variable names are identifiers, usually upper case; keys are long mixed-case strings."""
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", value) or _KEY_PREFIX.search(value):
        return True
    return len(value) >= 24 and bool(re.search(r"[a-z]", value)) and bool(re.search(r"[0-9]", value))


def _unknown_names(default: str | None, fallback: Any, routes: Any, known: set[str]) -> list[tuple[str, str, str]]:
    def unknown(name: str) -> str:
        return f"no backend named '{name}' (known: {', '.join(sorted(known)) or 'none'})"

    errors = []
    if default is not None and default not in known:
        errors.append(("models", "default", unknown(default)))
    errors += [("models", f"fallback.{i}", unknown(n)) for i, n in enumerate(fallback) if n not in known]
    for route in routes:
        if route.model not in known:
            errors.append((f"models route '{route.id}'", "model", unknown(route.model)))
        errors += [(f"models route '{route.id}'", f"fallback.{i}", unknown(n))
                   for i, n in enumerate(route.fallback or ()) if n not in known]
    return errors
