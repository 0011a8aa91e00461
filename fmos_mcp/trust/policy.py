"""Policy files: YAML or TOML, validated against the shipped JSON Schema, merged into one `PolicySet`.

Every error names the file, the rule (its id, or its section and position) and the key. A broken file is
reported and skipped; the other files still apply (and `fmos-mcp policy check` exits non-zero).
"""

from __future__ import annotations

import importlib
import json
import re
import tomllib
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from fmos_mcp.trust.match import Match, compile_match
from fmos_mcp.trust.privilege import SENSITIVE, Privilege

SUFFIXES = (".yaml", ".yml", ".toml")
SCHEMA_FILE = Path(__file__).with_name("policy.schema.json")
# Sections other planes own: each module has `SCHEMA` (the section's JSON Schema) and
# `check(section) -> [(where, key, message)]` for what a schema cannot say. Imported when first needed.
PLANE_SECTIONS = {
    "context": "fmos_mcp.context.config",
    "models": "fmos_mcp.models.config",
    "budgets": "fmos_mcp.models.budget_config",
    "evolve": "fmos_mcp.evolve.config",
}
DEFAULT_EFFECTS = {
    "read": "allow", "write": "allow", "network": "allow", "exec": "log", "credential": "log", "destructive": "log",
}
DEFAULT_DETECTORS = {
    "poisoning": "quarantine", "shadowing": "quarantine", "rug_pull": "quarantine",
    "command_injection": "deny", "path_traversal": "deny", "secrets_in_arguments": "deny",
    "output_injection": "neutralize", "output_credentials": "redact", "sampling_injection": "deny",
}


@dataclass(frozen=True)
class PolicyError:
    file: str
    where: str  # "rule 'no-prod-exec'", "judges[2]", "file"
    key: str
    message: str

    def __str__(self) -> str:
        key = f", key '{self.key}'" if self.key else ""
        return f"{self.file}: {self.where}{key}: {self.message}"


@dataclass(frozen=True)
class Rule:
    id: str
    effect: str
    match: Match
    reason: str = ""
    source: str = ""
    approval_ttl: float | None = None
    approval_scope: str = "call"
    redact_arguments: tuple[str, ...] = ()
    redact_output: tuple[re.Pattern[str], ...] = ()
    waive: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Judge:
    id: str
    policy: str
    match: Match
    on_error: str = "deny"
    min_confidence: float = 0.6
    cache_ttl: float = 600.0
    source: str = ""


@dataclass(frozen=True)
class Limit:
    id: str
    match: Match
    calls: int | None = None
    per: float | None = None
    concurrency: int | None = None
    max_argument_bytes: int | None = None
    max_result_bytes: int | None = None


@dataclass(frozen=True)
class ClassOverride:
    server: str
    tool: str
    classes: tuple[str, ...]
    justification: str | None
    source: str


@dataclass(frozen=True)
class TokenEntry:
    sha256: str
    tenant: str
    roles: tuple[str, ...]
    name: str | None


@dataclass
class PolicySet:
    rules: list[Rule] = field(default_factory=list)
    judges: list[Judge] = field(default_factory=list)
    limits: list[Limit] = field(default_factory=list)
    overrides: list[ClassOverride] = field(default_factory=list)
    tokens: list[TokenEntry] = field(default_factory=list)
    effects: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_EFFECTS))
    detectors: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_DETECTORS))
    approval_ttl: float = 900.0
    max_argument_bytes: int = 1 << 20
    max_result_bytes: int | None = None
    tenant: str | None = None
    roles: tuple[str, ...] = ()
    files: list[str] = field(default_factory=list)
    errors: list[PolicyError] = field(default_factory=list)
    # The other planes' sections, merged across files (see `_merge_section`); each plane compiles its own.
    sections: dict[str, dict[str, Any]] = field(default_factory=dict)


@cache
def schema() -> dict[str, Any]:
    full = json.loads(SCHEMA_FILE.read_text())
    for section, module in PLANE_SECTIONS.items():
        full["properties"][section] = _plane(module).SCHEMA
    return full


@cache
def _plane(module: str) -> Any:
    return importlib.import_module(module)


def load_policies(directory: Path | None) -> PolicySet:
    return load_bundle(read_bundle(directory))


def read_bundle(directory: Path | None) -> dict[str, str]:
    """The policy files of a directory as {file name: text} (unreadable files as an error marker)."""
    if directory is None or not directory.is_dir():
        return {}
    out: dict[str, str] = {}
    for path in sorted(p for p in directory.iterdir() if p.suffix in SUFFIXES and p.is_file()):
        try:
            out[path.name] = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            out[path.name] = _UNREADABLE + str(exc)
    return out


def load_bundle(files: dict[str, str]) -> PolicySet:
    """Policies from {file name: text}: a directory's files, or a version from the state database."""
    policies = PolicySet()
    for name in sorted(files):
        errors = _load_text(name, files[name], policies)
        policies.errors += errors
        if not errors:
            policies.files.append(name)
    return policies


_UNREADABLE = "\x00unreadable: "


def _load_text(name: str, text: str, into: PolicySet) -> list[PolicyError]:
    if text.startswith(_UNREADABLE):
        return [PolicyError(name, "file", "", f"cannot read: {text[len(_UNREADABLE):]}")]
    toml = name.endswith(".toml")
    try:
        data = tomllib.loads(text) if toml else yaml.safe_load(text)
    except (yaml.YAMLError, tomllib.TOMLDecodeError) as exc:
        return [PolicyError(name, "file", "", f"not valid {'TOML' if toml else 'YAML'}: {exc}")]
    if data is None:
        return []  # an empty file (all comments) is fine
    if not isinstance(data, dict):
        return [PolicyError(name, "file", "", f"the top level must be a mapping, not {type(data).__name__}")]
    errors = _schema_errors(name, data)
    if errors:
        return errors
    staged = PolicySet()
    errors = _build(name, data, staged)
    taken = {r.id for r in (*into.rules, *into.judges, *into.limits)}
    errors += [PolicyError(name, f"'{r.id}'", "id", "already defined in an earlier file")
               for r in (*staged.rules, *staged.judges, *staged.limits) if r.id in taken]
    if not errors:
        _merge(into, staged, data)
    return errors


def _schema_errors(name: str, data: dict[str, Any]) -> list[PolicyError]:
    validator = jsonschema.Draft202012Validator(schema(), format_checker=jsonschema.FormatChecker())
    out = []
    for error in sorted(validator.iter_errors(data), key=lambda e: list(map(str, e.absolute_path))):
        where, key = _locate(data, list(error.absolute_path))
        message = error.message
        if error.validator == "additionalProperties":
            message = message.replace("Additional properties are not allowed", "unknown key")
        out.append(PolicyError(name, where, key, message))
    return out


def _locate(data: dict[str, Any], path: list[Any]) -> tuple[str, str]:
    """('rule \\'x\\'', 'match.servers') from a schema error's path ['rules', 3, 'match', 'servers']."""
    if len(path) >= 2 and isinstance(path[1], int):
        section, index = path[0], path[1]
        item = data.get(section, [])[index] if isinstance(data.get(section), list) else None
        label = {"rules": "rule", "judges": "judge", "limits": "limit", "classes": "class override",
                 "tokens": "token"}.get(section, section)
        ident = item.get("id") or item.get("name") if isinstance(item, dict) else None
        where = f"{label} '{ident}'" if ident else f"{section}[{index}]"
        return where, ".".join(map(str, path[2:]))
    if path:
        return str(path[0]), ".".join(map(str, path[1:]))
    return "file", ""


def _build(name: str, data: dict[str, Any], out: PolicySet) -> list[PolicyError]:
    """Compile what the schema cannot check: regexes, time zones, JSON Schema fragments, duplicate ids,
    and sensitive classes dropped without a justification."""
    errors: list[PolicyError] = []

    def match_of(section: str, item: dict[str, Any]) -> Match | None:
        try:
            return compile_match(item.get("match") or {})
        except ValueError as exc:
            label = {"rules": "rule", "judges": "judge", "limits": "limit"}[section]
            key, _, message = str(exc).partition(": ")
            errors.append(PolicyError(name, f"{label} '{item['id']}'", f"match.{key}", message))
            return None

    seen: set[str] = set()
    for section in ("rules", "judges", "limits"):
        for item in data.get(section, []):
            if item["id"] in seen:
                errors.append(PolicyError(name, f"{section[:-1]} '{item['id']}'", "id", "defined twice in this file"))
            seen.add(item["id"])
    for item in data.get("rules", []):
        match = match_of("rules", item)
        if match is None:
            continue
        redact = item.get("redact") or {}
        approval = item.get("approval") or {}
        out.rules.append(Rule(
            id=item["id"], effect=item["effect"], match=match, reason=item.get("reason", item.get("description", "")),
            source=name, approval_ttl=approval.get("ttl"), approval_scope=approval.get("scope", "call"),
            redact_arguments=tuple(redact.get("arguments", ())),
            redact_output=tuple(re.compile(p) for p in redact.get("output", ())),
            waive=frozenset(item.get("waive", ())),
        ))
    for item in data.get("judges", []):
        match = match_of("judges", item)
        if match is not None:
            out.judges.append(Judge(item["id"], item["policy"], match, item.get("on_error", "deny"),
                                    item.get("min_confidence", 0.6), item.get("cache_ttl", 600.0), name))
    for item in data.get("limits", []):
        match = match_of("limits", item)
        if match is not None:
            rate = item.get("rate") or {}
            out.limits.append(Limit(item["id"], match, rate.get("calls"), rate.get("per"), item.get("concurrency"),
                                    item.get("max_argument_bytes"), item.get("max_result_bytes")))
    for index, item in enumerate(data.get("classes", [])):
        classes = tuple(item["set"])
        if not SENSITIVE & {Privilege(c) for c in classes} and not item.get("justification"):
            # Such an override may drop a sensitive class the tool was inferred to have: never silently.
            errors.append(PolicyError(name, f"classes[{index}]", "justification",
                                      "an override to non-sensitive classes only needs a justification (10+ characters)"))
            continue
        out.overrides.append(ClassOverride(item.get("server", "*"), item.get("tool", "*"), classes,
                                           item.get("justification"), name))
    for item in data.get("tokens", []):
        out.tokens.append(TokenEntry(item["sha256"], item["tenant"], tuple(item.get("roles", ())), item.get("name")))
    for section, module in PLANE_SECTIONS.items():
        if section in data:
            errors += [PolicyError(name, where, key, message) for where, key, message in _plane(module).check(data[section])]
    return errors


def _merge(into: PolicySet, staged: PolicySet, data: dict[str, Any]) -> None:
    into.rules += staged.rules
    into.judges += staged.judges
    into.limits += staged.limits
    into.overrides += staged.overrides
    into.tokens += staged.tokens
    defaults = data.get("defaults") or {}
    into.effects.update(defaults.get("effects") or {})
    into.approval_ttl = defaults.get("approval_ttl", into.approval_ttl)
    into.max_argument_bytes = defaults.get("max_argument_bytes", into.max_argument_bytes)
    into.max_result_bytes = defaults.get("max_result_bytes", into.max_result_bytes)
    into.detectors.update(data.get("detectors") or {})
    identity = data.get("identity") or {}
    into.tenant = identity.get("tenant", into.tenant)
    into.roles = tuple(identity.get("roles", into.roles))
    for section in PLANE_SECTIONS:
        if section in data:
            _merge_section(into.sections.setdefault(section, {}), data[section])


def _merge_section(into: dict[str, Any], data: dict[str, Any]) -> None:
    """A later file adds to lists (models, routes, budgets), updates mappings key by key, replaces the rest."""
    for key, value in data.items():
        old = into.get(key)
        if isinstance(old, list) and isinstance(value, list):
            into[key] = old + value
        elif isinstance(old, dict) and isinstance(value, dict):
            into[key] = {**old, **value}
        else:
            into[key] = value
